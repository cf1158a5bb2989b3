// Package balancer decides where shards run. Compute is a pure function from the
// cluster as the replicated state describes it (members with weights and states, the
// current assignments) to a plan of moves; the Raft leader applies the plan, and the
// state machine re-checks every move against the owner and epoch it names.
//
// What it promises:
//   - Determinism: the same input gives the same plan, whatever the order of its
//     slices, so a plan can be recomputed and compared.
//   - Safety first: shards whose owner may not hold them (failed, left, draining,
//     weight 0, or unknown) are moved first, then unassigned shards are placed; neither
//     is bounded, because such a shard is not running anywhere useful.
//   - Balance: once the cluster is quiet every alive member with weight w holds
//     between floor and ceil of TotalShards*w/sum(w): within ±1 of its weighted share.
//   - Minimal movement: an assignment already within those bounds gives no move, and
//     rebalancing moves at most MaxMoves shards at a time (counting those still in
//     flight), so a join never causes a storm.
//
// What it must never do: I/O, reading the clock, randomness, goroutines or logging.
// It imports only the standard library.
package balancer
