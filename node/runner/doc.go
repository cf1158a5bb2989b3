// Package runner runs this node's shards as the replicated state assigns them: it
// starts assigned shards in local clusters while the node's lease holds (RESUME when
// a position exists), stops and releases revoked ones at their exact seq, suspends
// all of them when the lease is lost, checkpoints their handled positions, delivers
// their events to the sink, and asks the leader for every IDENTIFY.
//
// It must never let a shard log in without a lease and a current assignment (a shard
// may never run twice), never checkpoint an event the sink has not accepted, and
// never decide placement: that is the leader's.
package runner
