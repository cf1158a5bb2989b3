// Package shard is discluster's Discord gateway client: one Shard is one gateway
// session ([id, total]) over one websocket at a time, and a Cluster is a node-local
// group of shards that share one bounded event queue and one handler.
//
// What it promises:
//   - The real protocol: HELLO, jittered heartbeats with zombie detection, IDENTIFY
//     behind an injected IdentifyGate, RESUME on resume_gateway_url from any resume
//     state it is given (which is how a session moves between machines), replay up to
//     RESUMED, INVALID_SESSION and RECONNECT, and one table (closeActions) that decides
//     for every close code whether to resume, re-identify or stop.
//   - Dispatches are handed on with only the envelope (op, s, t) decoded; d stays raw.
//   - A shard's resume state only ever names sequence numbers its handler accepted, so
//     a shard stopped with Stop and resumed elsewhere from that state neither loses nor
//     repeats an event.
//   - Its own sends stay inside Discord's limits: 4096 bytes a payload, and 120
//     payloads a 60 s window per connection with room kept for heartbeats.
//
// What it must never do: put the bot token in a log line, an error, a status value or
// anything it hands to its owner (Token redacts itself), or retry a fatal close code.
//
// The fake Discord that the tests, the demo and `discluster fake-discord` run against
// lives in shard/gatewaytest and shares no code with this package, so a protocol
// mistake cannot hide in both.
package shard
