// Package metrics is the node's Prometheus exposition: one registry per node (never
// the global one: tests run several nodes in one process), with the Go and process
// collectors, a collector that reads the node's state when it is scraped (shards,
// lease, sink, Raft, session budget), and the few counters and histograms that must
// catch an observation as it happens (heartbeat round trips, identify waits, events
// by type, sink calls, failovers, commands, the events a reshard held and released).
// It also serves pprof for the API.
//
// It reads the other rooms through the small interfaces below, which the node adapts
// them to; it never holds the node.
//
// Labels stay bounded: no shard id, no node name (the scrape target is the node),
// event types capped at MaxEventTypes, causes and codes from fixed lists. Nothing the
// bot's token touches reaches a metric.
package metrics
