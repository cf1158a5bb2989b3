package balancer

import "fmt"

// MaxShards bounds Input.TotalShards, as fsm.MaxShards bounds the replicated
// configuration: Compute allocates a few words per shard, and a corrupt count must be
// refused rather than allocated.
const MaxShards = 1 << 20

// MemberState is a member's standing in the cluster. Only Alive members hold shards.
type MemberState uint8

// The numbers are fsm.MemberState's; never renumber them.
const (
	Alive    MemberState = 0
	Failed   MemberState = 1
	Draining MemberState = 2
	Left     MemberState = 3
)

var memberStateNames = [...]string{"alive", "failed", "draining", "left"}

func (s MemberState) String() string {
	if int(s) < len(memberStateNames) {
		return memberStateNames[s]
	}
	return fmt.Sprintf("MemberState(%d)", uint8(s))
}

// Member is one node as the balancer sees it. Weight is relative capacity; 0 means
// "holds nothing".
type Member struct {
	ID     string
	Weight int
	State  MemberState
}

// Phase is where an assignment is in its life.
type Phase uint8

// The numbers are fsm.Phase's; never renumber them.
const (
	// Assigned: the owner runs the shard.
	Assigned Phase = 0
	// Revoking: the shard is leaving its owner, a move in flight. It is never moved
	// again; the state machine makes it unassigned once the owner releases it.
	Revoking Phase = 1
)

func (p Phase) String() string {
	switch p {
	case Assigned:
		return "assigned"
	case Revoking:
		return "revoking"
	}
	return fmt.Sprintf("Phase(%d)", uint8(p))
}

// Assignment is one shard's owner. A shard with no assignment is unassigned.
type Assignment struct {
	Shard int
	Node  string
	Epoch uint64 // the Raft index that wrote it; a move carries it for fencing
	Phase Phase
}

// Input is the cluster as the replicated state describes it.
type Input struct {
	TotalShards int // shards are 0 .. TotalShards-1; at most MaxShards
	Members     []Member
	Assignments []Assignment // at most one per shard
	// MaxMoves bounds rebalancing in flight: a plan starts at most MaxMoves minus the
	// shards still Revoking. Zero or less means no rebalancing at all. Evacuate and
	// Place moves are never bounded.
	MaxMoves int
}

// Reason says why a shard moves.
type Reason uint8

const (
	Evacuate  Reason = 0 // its owner may not hold it: failed, left, draining, weight 0, or unknown
	Place     Reason = 1 // it was unassigned
	Rebalance Reason = 2 // its owner holds more than its share, and another member less
)

var reasonNames = [...]string{"evacuate", "place", "rebalance"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("Reason(%d)", uint8(r))
}

// Move takes Shard from From, which owns it at FromEpoch, to To. From is "" and
// FromEpoch 0 for an unassigned shard: exactly what the state machine expects to find.
type Move struct {
	Shard     int
	From      string
	FromEpoch uint64
	To        string
	Reason    Reason
}

// Plan is Compute's answer: Evacuate moves, then Place moves, each in shard order,
// then Rebalance moves in the order they were chosen.
type Plan struct {
	Moves []Move
	// Reason says, in a line for a log or a status page, where this plan leaves the
	// cluster: "balanced", or why it stops short (no member may hold shards, MaxMoves
	// reached, rebalancing disabled). It is never empty.
	Reason string
}
