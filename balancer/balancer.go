package balancer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// MemberState is a member's standing in the cluster. Only Alive members hold shards.
type MemberState uint8

const (
	Alive MemberState = iota
	Failed
	Draining
	Left
)

var memberStateNames = [...]string{"alive", "failed", "draining", "left"}

func (s MemberState) String() string {
	if int(s) < len(memberStateNames) {
		return memberStateNames[s]
	}
	return fmt.Sprintf("MemberState(%d)", uint8(s))
}

// Member is one node as the balancer sees it. Weight 0 means "holds nothing".
type Member struct {
	ID     string
	Weight int
	State  MemberState
}

// Phase is where an assignment is in its life.
type Phase uint8

const (
	// Assigned: the owner runs the shard.
	Assigned Phase = iota
	// Revoking: the shard is leaving its owner (a move in flight). It is neither moved
	// again nor placed until the owner releases it.
	Revoking
)

// Assignment is one shard's owner. Shards without an assignment are unassigned.
type Assignment struct {
	Shard int
	Node  string
	Epoch uint64 // the Raft index that wrote the assignment; moves carry it for fencing
	Phase Phase
}

// Input is the cluster as the replicated state describes it.
type Input struct {
	TotalShards int
	Members     []Member
	Assignments []Assignment
	// MaxMoves bounds the rebalancing moves in flight: those this plan starts plus
	// the shards still Revoking. Zero or less means no rebalancing at all.
	MaxMoves int
}

// Reason says why a shard moves.
type Reason uint8

const (
	Evacuate  Reason = iota // the owner may not hold it (failed, left, draining, weight 0, unknown)
	Place                   // it was unassigned
	Rebalance               // its owner holds more than its share
)

var reasonNames = [...]string{"evacuate", "place", "rebalance"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("Reason(%d)", uint8(r))
}

// Move takes Shard from From (at FromEpoch) to To. From is "" for an unassigned shard.
type Move struct {
	Shard     int
	From      string
	FromEpoch uint64
	To        string
	Reason    Reason
}

// Plan is Compute's answer. Note explains a plan that could not do its job (no member
// may hold shards); it is empty otherwise.
type Plan struct {
	Moves []Move
	Note  string
}

// ErrInvalidInput wraps every input error.
var ErrInvalidInput = errors.New("invalid balancer input")

// member is the working state of one eligible member.
type member struct {
	id     string
	rank   int // position by ID: ties broken without comparing strings
	weight int64
	load   int64 // shards it holds or will hold once this plan is applied
	lo, hi int64 // floor and ceil of its weighted share
	// fair is total*weight: the member's share multiplied by the sum of weights, so
	// that surplus compares members in integers.
	fair  int64
	sumW  int64
	owned []int // shards it held Assigned at the start, ascending: rebalancing donates these
}

// Compute returns the moves that bring the cluster towards balance.
func Compute(in Input) (Plan, error) {
	if err := validate(in); err != nil {
		return Plan{}, err
	}
	ms := eligible(in)
	owner := make([]*Assignment, in.TotalShards)
	for i := range in.Assignments {
		owner[in.Assignments[i].Shard] = &in.Assignments[i]
	}
	if len(ms) == 0 {
		var note string // before any allocation for moves: nothing can move
		if in.TotalShards > 0 {
			note = "no alive member with weight > 0: nothing can be placed"
		}
		return Plan{Note: note}, nil
	}
	byID := make(map[string]*member, len(ms))
	for _, m := range ms {
		byID[m.id] = m
	}

	plan := Plan{Moves: make([]Move, 0, len(owner)-len(in.Assignments))}
	inFlight := 0
	var revoking []int
	var homeless []int // Assigned to a member that may not hold it
	var unassigned []int
	for shard, a := range owner {
		switch {
		case a == nil:
			unassigned = append(unassigned, shard)
		case a.Phase == Revoking:
			inFlight++
			revoking = append(revoking, shard)
		case byID[a.Node] == nil:
			homeless = append(homeless, shard)
		default:
			m := byID[a.Node]
			m.load++
			m.owned = append(m.owned, shard)
		}
	}
	// Shards in flight will be placed once released; count them now where they will
	// land (the least loaded), so that this plan neither sends those members more nor
	// takes more from their donors than balance needs.
	for range revoking {
		leastLoaded(ms).load++
	}
	for _, shard := range homeless {
		a := owner[shard]
		to := leastLoaded(ms)
		to.load++
		plan.Moves = append(plan.Moves, Move{Shard: shard, From: a.Node, FromEpoch: a.Epoch, To: to.id, Reason: Evacuate})
	}
	for _, shard := range unassigned {
		to := leastLoaded(ms)
		to.load++
		plan.Moves = append(plan.Moves, Move{Shard: shard, To: to.id, Reason: Place})
	}
	for budget := in.MaxMoves - inFlight; budget > 0; budget-- {
		from, to := rebalancePair(ms)
		if from == nil {
			break
		}
		shard := from.owned[len(from.owned)-1] // the highest shard id: a choice any replica repeats
		from.owned = from.owned[:len(from.owned)-1]
		from.load--
		to.load++
		plan.Moves = append(plan.Moves, Move{Shard: shard, From: from.id, FromEpoch: owner[shard].Epoch, To: to.id, Reason: Rebalance})
	}
	return plan, nil
}

// eligible returns the members that may hold shards, by ID, with their share bounds.
func eligible(in Input) []*member {
	var ms []*member
	var sum int64
	for _, m := range in.Members {
		if m.State == Alive && m.Weight > 0 {
			ms = append(ms, &member{id: m.ID, weight: int64(m.Weight)})
			sum += int64(m.Weight)
		}
	}
	slices.SortFunc(ms, func(a, b *member) int { return strings.Compare(a.id, b.id) })
	total := int64(in.TotalShards)
	for i, m := range ms {
		m.rank = i
		m.fair, m.sumW = total*m.weight, sum
		m.lo = total * m.weight / sum
		m.hi = m.lo
		if total*m.weight%sum != 0 {
			m.hi++
		}
	}
	return ms
}

// surplus is how far the member is above its exact weighted share, scaled by the sum
// of weights to stay in integers: load*sum(w) - total*w.
func (m *member) surplus() int64 { return m.load*m.sumW - m.fair }

// less orders members by surplus, ties to the smaller ID. Placement takes the
// minimum, donors are the maximum: one order for both is what makes a revoked shard,
// once released and placed, land where the rebalance meant it to go (a member below
// its floor has a lower surplus than any member at or above it), so moves never
// ping-pong. Filling the minimum first also never lifts a member above its ceiling:
// that would need every other member at or above its share already, which is more
// shards than exist.
func less(a, b *member) bool {
	if sa, sb := a.surplus(), b.surplus(); sa != sb {
		return sa < sb
	}
	return a.rank < b.rank
}

// leastLoaded is the member furthest below its share.
func leastLoaded(ms []*member) *member {
	best := ms[0]
	for _, m := range ms[1:] {
		if less(m, best) {
			best = m
		}
	}
	return best
}

// rebalancePair returns a donor and a receiver for one rebalancing move, or nils
// when every member is within [lo, hi] or no move would help. A member above hi gives
// to the least loaded member below hi; otherwise a member below lo takes from the
// most loaded member above lo. Each move strictly reduces how far the cluster is from
// the bounds, and the bounds can always all be met (the sum of lo is at most the
// total, the sum of hi at least), so repeated calls converge.
func rebalancePair(ms []*member) (from, to *member) {
	for _, m := range ms {
		if m.load > m.hi && len(m.owned) > 0 && (from == nil || less(from, m)) {
			from = m
		}
	}
	if from != nil {
		for _, m := range ms {
			if m.load < m.hi && (to == nil || less(m, to)) {
				to = m
			}
		}
		if to != nil {
			return from, to
		}
		from = nil
	}
	for _, m := range ms {
		if m.load < m.lo && (to == nil || less(m, to)) {
			to = m
		}
	}
	if to == nil {
		return nil, nil
	}
	for _, m := range ms {
		if m.load > m.lo && len(m.owned) > 0 && m != to && (from == nil || less(from, m)) {
			from = m
		}
	}
	if from == nil {
		return nil, nil
	}
	return from, to
}

func validate(in Input) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidInput, fmt.Sprintf(format, args...))
	}
	if in.TotalShards < 0 {
		return bad("TotalShards %d is negative", in.TotalShards)
	}
	seen := make(map[string]bool, len(in.Members))
	for _, m := range in.Members {
		switch {
		case m.ID == "":
			return bad("a member has an empty ID")
		case seen[m.ID]:
			return bad("member %q appears twice", m.ID)
		case m.Weight < 0:
			return bad("member %q has negative weight %d", m.ID, m.Weight)
		case m.State > Left:
			return bad("member %q has unknown state %d", m.ID, m.State)
		}
		seen[m.ID] = true
	}
	assigned := make([]bool, in.TotalShards)
	for _, a := range in.Assignments {
		switch {
		case a.Shard < 0 || a.Shard >= in.TotalShards:
			return bad("assignment of shard %d is outside [0, %d)", a.Shard, in.TotalShards)
		case assigned[a.Shard]:
			return bad("shard %d is assigned twice", a.Shard)
		case a.Node == "":
			return bad("shard %d is assigned to an empty node ID", a.Shard)
		case a.Phase > Revoking:
			return bad("shard %d has unknown phase %d", a.Shard, a.Phase)
		}
		assigned[a.Shard] = true
	}
	return nil
}
