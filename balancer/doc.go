// Package balancer decides where shards run. Compute is a pure function from the
// cluster as the replicated state describes it (members with weights and states, the
// current assignments, a bound on moves) to a plan of moves; the Raft leader applies
// the plan, and the state machine re-checks every move against the owner and epoch it
// names, so a stale or repeated plan is harmless.
//
// # What it promises
//
//   - Determinism: the same input gives the same plan, whatever the order of
//     Input.Members and Input.Assignments. Members are taken in ID order and shards in
//     id order, every tie is broken by ID, and no map is ever iterated; so any replica,
//     or a test, can recompute a plan and compare.
//   - Order of work: a member may hold shards only while it is Alive with weight > 0.
//     Assigned shards of any other owner (failed, left, draining, weight 0, or not a
//     member at all) move first (Evacuate), then unassigned shards are placed (Place).
//     Neither kind is limited by MaxMoves: such a shard runs nowhere useful, or must
//     leave. Then come Rebalance moves, limited by MaxMoves, so a join never causes a
//     storm of handoffs.
//   - Balance: a member with weight w has the share s = TotalShards·w/Σw (Σ over the
//     members that may hold shards). Once the cluster is quiet, every such member holds
//     floor(s) or ceil(s) shards, within ±1 of its share, and no other member holds any.
//   - Minimal movement: an assignment already within those bounds gets no move. Each
//     Rebalance move goes from the member furthest above its share to the member
//     furthest below it, and only when it brings one of them back within bounds without
//     taking the other out of them; so the number of moves is the least that reaches
//     balance. A shard moves at most once per plan, and no member both gives and takes.
//   - Bad input gets an *InputError (errors.Is(err, ErrInvalidInput)) naming the field
//     and its value, and no plan.
//
// # Choices the placement rules leave open
//
//   - The share is a band [floor(s), ceil(s)], not one number. The largest-remainder
//     target (Share.Target: floors, then one more to the largest remainders, ties to the
//     smaller ID) is what a fresh cluster gets, but a member at the other end of its band
//     is left alone: with three equal members and ten shards, 3/3/4 is as balanced as
//     4/3/3, and insisting on one of them would move a healthy session for nothing.
//   - "Furthest below its share" compares load − s exactly, in integers (the share's
//     floor and its remainder over Σw, computed in 128 bits), so any weights work
//     whose sum fits in an int64.
//   - Revoking shards are in flight: they are never moved again and are counted once,
//     at the member where they will land. The state machine ends a revocation by making
//     the shard unassigned, and the next plan places it on the member furthest below
//     its share; Compute counts it there in advance. Counting it at its old owner
//     instead would make every plan computed before the release start the same
//     rebalance again, and counting it nowhere would do the same on the receiving side.
//   - MaxMoves bounds rebalancing in flight, not per call: a plan starts at most
//     MaxMoves minus the shards still Revoking. The leader reconciles on a tick that may
//     be shorter than a handoff, and a per-call bound would let handoffs pile up.
//   - A weight-0 member holds nothing, like a draining one: its shards are evacuated at
//     once, unbounded, which keeps one rule for who may hold shards (Alive and weight
//     > 0). To move shards off a healthy member gradually, lower its weight instead:
//     what that frees moves as bounded Rebalance moves.
//   - Of an overloaded member's shards, the one with the highest id moves first. Discord
//     sends direct messages to shard 0 only, so the low shards are the last disturbed.
//   - Evacuated and unassigned shards are dealt in shard order, each to the member then
//     furthest below its share; equal members get them round-robin.
//   - Ties between donors go to the larger ID and ties between receivers to the
//     smaller: they are the two ends of one total order, so no member is ever both, and
//     unless loads change meanwhile a revoked shard is counted, and later placed, on
//     the member the plan chose for it.
//   - The numbers of MemberState and Phase are those of the fsm package, so that the
//     leader converts with a plain type conversion; they are never renumbered.
//
// # What it must never do
//
// No I/O, no clock, no randomness, no goroutines, no logging, and no imports beyond the
// standard library (a test enforces it). It never modifies the slices it is given.
package balancer
