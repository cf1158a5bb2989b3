// Package node is the discluster agent: it joins the gossip pool (hashicorp/serf on
// memberlist), runs Raft (hashicorp/raft on raft-boltdb) over the transport's shared
// port, and, on every node, supervises the shards the replicated state assigns to it.
//
// The leader reconciles: gossip membership into the Raft configuration and the
// state machine's member table, failures into revocations, and the balancer's plan into
// assignments. It also grants identifies for the whole cluster and renews the lease of
// every node. A node runs shards only while its lease holds, so a paused or cut-off
// node stops its shards by itself before the leader hands them to anyone else.
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
package node
