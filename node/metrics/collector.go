package metrics

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discluster/discluster/shard"
)

// shardStates are the values of discluster_shards' state label: every state, so
// that each series exists (at 0) from the start.
var shardStates = []shard.State{shard.StateIdle, shard.StateConnecting, shard.StateIdentifying, shard.StateResuming,
	shard.StateReady, shard.StateReconnecting, shard.StateStopped, shard.StateFailed}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
}

var (
	descShards    = desc("shards", "Shards this node runs, by state.", "state")
	descBacklog   = desc("sink_backlog_events", "Events this node's shards received that are waiting for the sink (its clusters' queues).")
	descFailing   = desc("sink_failing", "1 while the sink fails (deliveries are retried, the shards' positions hold).")
	descLeaseHeld = desc("lease_held", "1 while this node holds its lease (it may run shards).")
	descLeaseLeft = desc("lease_remaining_seconds", "Seconds until this node's lease runs out unless renewed; 0 without one.")
	descBudget    = desc("session_starts_remaining",
		"Session starts (identifies) left in Discord's daily budget, less those granted since it was fetched; only the leader reports it.")
	descBudgetTotal = desc("session_starts_limit", "Discord's daily session start limit; only the leader reports it.")

	descLeader      = desc("raft_is_leader", "1 while this node is the Raft leader.")
	descTerm        = desc("raft_term", "The current Raft term.")
	descCommit      = desc("raft_commit_index", "The Raft log's commit index as this node knows it.")
	descApplied     = desc("raft_applied_index", "The last Raft log index this node applied to its state.")
	descLastContact = desc("raft_last_contact_seconds",
		"Seconds since this follower last heard from the leader (0 on the leader; absent before any contact).")
)

// shardCounter is one of shard.Counters as a discluster_gateway_ counter.
type shardCounter struct {
	desc *prometheus.Desc
	get  func(*shard.Counters) uint64
}

var shardCounters = []shardCounter{
	{desc("gateway_events_total", "Dispatches this node's shards received from the gateway."),
		func(c *shard.Counters) uint64 { return c.Events }},
	{desc("gateway_connects_total", "Gateway connections this node's shards opened."),
		func(c *shard.Counters) uint64 { return c.Connects }},
	{desc("gateway_identifies_total", "IDENTIFYs this node's shards sent: new sessions, each from the daily budget."),
		func(c *shard.Counters) uint64 { return c.Identifies }},
	{desc("gateway_resumes_total", "RESUMEs this node's shards sent: sessions continued, at no budget cost."),
		func(c *shard.Counters) uint64 { return c.Resumes }},
	{desc("gateway_invalid_sessions_total", "INVALID_SESSIONs the gateway sent this node's shards."),
		func(c *shard.Counters) uint64 { return c.InvalidSessions }},
	{desc("gateway_reconnects_total", "Times a shard of this node reconnected after its connection ended."),
		func(c *shard.Counters) uint64 { return c.Reconnects }},
	{desc("gateway_zombie_connections_total", "Connections dropped because a heartbeat went unacknowledged."),
		func(c *shard.Counters) uint64 { return c.Zombies }},
	{desc("gateway_heartbeats_total", "Heartbeats this node's shards sent."),
		func(c *shard.Counters) uint64 { return c.HeartbeatsSent }},
	{desc("gateway_heartbeat_acks_total", "Heartbeat ACKs this node's shards received."),
		func(c *shard.Counters) uint64 { return c.HeartbeatACKs }},
	{desc("gateway_wire_bytes_total", "Bytes of the gateway's messages as this node's shards received them: compressed when the connection is (websocket framing aside)."),
		func(c *shard.Counters) uint64 { return c.WireBytes }},
	{desc("gateway_payload_bytes_total", "Bytes of the JSON payloads this node's shards read, decompressed; against gateway_wire_bytes_total, what compression saves."),
		func(c *shard.Counters) uint64 { return c.PayloadBytes }},
}

// stateCollector reads the node's state on each scrape.
type stateCollector struct {
	d Deps

	// A shard's counters start at zero each time it starts here and vanish when it
	// moves away, so the node's counters are kept as totals: what shards that left
	// had counted, plus the growth seen since the last scrape of those still here.
	mu     sync.Mutex
	last   map[int]shard.Counters
	totals []uint64 // by shardCounters' index
}

func newStateCollector(d Deps) *stateCollector {
	return &stateCollector{d: d, last: make(map[int]shard.Counters), totals: make([]uint64, len(shardCounters))}
}

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descShards, descBacklog, descFailing, descLeaseHeld, descLeaseLeft,
		descBudget, descBudgetTotal, descLeader, descTerm, descCommit, descApplied, descLastContact} {
		ch <- d
	}
	for _, sc := range shardCounters {
		ch <- sc.desc
	}
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if r := c.d.Runner; r != nil {
		infos := r.Shards()
		by := make(map[shard.State]int, len(shardStates))
		for _, in := range infos {
			by[in.State]++
		}
		for _, st := range shardStates {
			gauge(descShards, float64(by[st]), st.String())
		}
		for i, v := range c.count(infos) {
			ch <- prometheus.MustNewConstMetric(shardCounters[i].desc, prometheus.CounterValue, float64(v))
		}
		gauge(descBacklog, float64(r.Backlog()))
		gauge(descFailing, boolValue(r.Sink().Failing))
		l := r.Lease()
		gauge(descLeaseHeld, boolValue(l.Held))
		left := 0.0
		if l.Held {
			left = max(l.Until.Sub(c.d.Now()).Seconds(), 0)
		}
		gauge(descLeaseLeft, left)
	}
	if ld := c.d.Leader; ld != nil {
		if b := ld.Budget(); b != nil && b.Known {
			gauge(descBudget, float64(b.Remaining))
			gauge(descBudgetTotal, float64(b.Total))
		}
	}
	if rf := c.d.Raft; rf != nil {
		c.collectRaft(rf.Stats(), gauge)
	}
}

// count folds the shards' counters into the node's totals and returns them.
func (c *stateCollector) count(infos []shard.Info) []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := make(map[int]bool, len(infos))
	for i := range infos {
		in := &infos[i]
		seen[in.ShardID] = true
		prev := c.last[in.ShardID]
		for k, sc := range shardCounters {
			now, was := sc.get(&in.Counters), sc.get(&prev)
			if now < was {
				was = 0 // a new run of the shard since the last scrape: its count started over
			}
			c.totals[k] += now - was
		}
		c.last[in.ShardID] = in.Counters
	}
	for id := range c.last {
		if !seen[id] {
			delete(c.last, id)
		}
	}
	return append([]uint64(nil), c.totals...)
}

// collectRaft reads Raft's Stats strings; a value that does not parse is left out.
func (c *stateCollector) collectRaft(st map[string]string, gauge func(*prometheus.Desc, float64, ...string)) {
	leader := st["state"] == "Leader"
	gauge(descLeader, boolValue(leader))
	for _, f := range []struct {
		key  string
		desc *prometheus.Desc
	}{{"term", descTerm}, {"commit_index", descCommit}, {"applied_index", descApplied}} {
		if v, err := strconv.ParseUint(st[f.key], 10, 64); err == nil {
			gauge(f.desc, float64(v))
		}
	}
	switch lc := st["last_contact"]; {
	case leader || lc == "0":
		gauge(descLastContact, 0)
	case lc == "never" || lc == "":
	default:
		if d, err := time.ParseDuration(lc); err == nil {
			gauge(descLastContact, d.Seconds())
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
