// Package membership is the node's place in the gossip pool: hashicorp/serf on
// memberlist, the node's tags, joining, bootstrap-expect and its vote promises, the
// guard that keeps two clusters from merging, and the data dir's identity (the
// node's name, nonce and cluster ID).
//
// It reports who is there and in what state; it must never decide what that means
// for shards or Raft voters, which is the leader's job.
package membership
