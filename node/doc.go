// Package node is the discluster agent: it wires the rooms together and owns their
// lifecycle (start, leave, kill). Each room is a package with one job:
//
//   - membership: gossip (serf), bootstrap-expect, the merge guard, the data dir's identity
//   - leader: what the Raft leader decides (Plan) and grants (leases, identifies, budget)
//   - runner: the shards this node runs, its lease, checkpoints and releases
//   - rpc: node-to-node messages on the cluster port, and the way to the leader
//   - api: the HTTP API over a backend, its JSON types, and a Go client
//   - sink: where events leave the node
//   - event: the typed record of what happened
//
// The rooms never import each other's internals or this package: they talk through
// small interfaces each consumer owns (a proposer, a notifier, a clock), and this
// package implements them with the others.
//
// The flows, from the design:
//
//   - Planned move: the leader revokes; the owner stops the shard with a resumable
//     close after its last event was delivered, and releases it with the final seq;
//     the leader assigns it; the new owner RESUMEs at exactly that seq.
//   - Failure: gossip or a missed lease marks the node failed; the leader refuses it
//     further leases, revokes its shards, waits until its lease must have run out
//     (not at all when its cluster port refuses connections: the process is gone),
//     then assigns them; the new owners RESUME from the last checkpoint.
//
// # Embedding
//
// A Go program can be an agent itself, and the bot's code its handler: Start a
// Config (from DefaultConfig) whose Handler receives the node's events, and answer
// through the node with Send or SendGuild, which reach the shard's owner wherever it
// runs, as the HTTP API does. The Handler's contract is the Sink's: an event is
// delivered, and its shard's position moves, only once the handler accepted it; an
// error has it delivered again. Send's refusals are node/api's errors (ErrNotReady,
// ErrRateLimited, ...), tested with errors.Is; those worth retrying are an
// *api.RetryError with the wait. See the example of Handler, and examples/embed for
// a whole bot. Such a program is a member like any other: it joins or bootstraps a
// cluster, holds shards, and Leave hands them off.
package node
