// Package fsm is discluster's replicated state: a hashicorp/raft FSM holding the
// cluster config, the members, the shard assignments and the shards' resume states.
//
// Shards come in generations, one per shard count the cluster ran. A reshard starts
// the next generation beside the current one, with its own table of assignments and
// resume states; one command (SwitchReshard) makes it current, and the old table is
// gone in the same step, so no state ever has two generations delivering. Commands
// on a table name their generation; one for a generation that no longer runs is
// stale, never applied to another's table.
//
// What it promises:
//   - Determinism. Apply uses no clock, randomness, network or map order in anything
//     that reaches the state or the response; times come inside commands, stamped by
//     the proposer. Every replica applying the same log holds byte-identical state.
//   - Validation before mutation. A command that is malformed, of an unknown type or
//     version, or invalid for the state (an unknown member, a shard out of range, a
//     duplicate in a batch) returns an error as its Apply response and changes nothing.
//   - Fencing. An assignment's epoch is the Raft index that wrote it. A checkpoint,
//     release or clear from a node that does not own the shard at that epoch changes
//     nothing for that shard and is reported as stale, and so is an assign or revoke
//     whose expected owner and epoch no longer hold: a stale or retried plan is refused
//     rather than applied twice.
//   - Snapshots that round-trip exactly, and a Restore that validates everything before
//     it replaces anything.
//
// What it must never do: hold a bot token (no command has a field for one), log, or
// read the clock inside Apply.
package fsm
