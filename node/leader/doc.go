// Package leader is what the Raft leader does for the cluster: it follows Raft's
// leadership signal, reconciles the Raft voters with gossip, decides (as a function,
// Plan, of the replicated state, the gossip view, its grants and the time) which
// members to record or fail and where each shard goes, and grants the cluster-wide
// rights: leases, identifies, and the daily session start budget.
//
// It must never run a shard or talk to Discord's gateway, and it must never extend
// a lease or grant an identify without a quorum's fresh confirmation that it still
// leads: a paused or cut-off leader believes it leads until Raft tells it otherwise.
package leader
