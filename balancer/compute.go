package balancer

import (
	"fmt"
	"slices"
)

// slot is what the balancer knows of one shard.
type slot struct {
	asg   int32 // index into Input.Assignments, or -1: unassigned
	owner int32 // index into solver.ms of an owner that holds it Assigned and may hold it, or -1
}

// solver is the working state of one Compute call.
type solver struct {
	in    Input
	ms    []member // the members that may hold shards, in ID order
	slots []slot   // one per shard
	// Counts of shards by what happens to them: in flight, to evacuate, to place.
	revoking, evacuate, place int
}

// Compute returns the moves that bring the cluster toward balance, as the package
// documentation describes. It fails only on invalid input, with an *InputError.
func Compute(in Input) (Plan, error) {
	if err := checkTotal(in.TotalShards); err != nil {
		return Plan{}, err
	}
	ms, index, err := readMembers(in.TotalShards, in.Members)
	if err != nil {
		return Plan{}, err
	}
	s := solver{in: in, ms: ms}
	if err := s.readAssignments(index); err != nil {
		return Plan{}, err
	}
	switch {
	case in.TotalShards == 0:
		return Plan{Reason: "no shards: TotalShards is 0"}, nil
	case len(ms) == 0:
		return Plan{Reason: fmt.Sprintf("no alive member with weight > 0: none of the %d shards can be placed", in.TotalShards)}, nil
	}
	return s.plan(), nil
}

// readAssignments validates the assignments, sorts every shard into in flight, to
// evacuate, to place or held, and counts each held shard toward its owner.
func (s *solver) readAssignments(index map[string]int32) error {
	total := s.in.TotalShards
	s.slots = make([]slot, total)
	for i := range s.slots {
		s.slots[i] = slot{asg: -1, owner: -1}
	}
	for i, a := range s.in.Assignments {
		switch {
		case a.Shard < 0 || a.Shard >= total:
			return badField("Assignments", i, "Shard", a.Shard, "out of range [0, %d)", total)
		case s.slots[a.Shard].asg >= 0:
			return badField("Assignments", i, "Shard", a.Shard, "duplicates Assignments[%d].Shard", s.slots[a.Shard].asg)
		case a.Node == "":
			return badField("Assignments", i, "Node", a.Node, "must name the owner")
		case a.Phase > Revoking:
			return badField("Assignments", i, "Phase", a.Phase, "unknown phase")
		}
		sl := &s.slots[a.Shard]
		sl.asg = int32(i)
		switch owner, known := index[a.Node]; {
		case a.Phase == Revoking:
			s.revoking++ // counted where it will land, in plan
		case known && owner >= 0:
			sl.owner = owner
			s.ms[owner].load++
		default:
			s.evacuate++
		}
	}
	s.place = total - len(s.in.Assignments)
	// One array holds every member's shards, each member's part filled in shard
	// order, so that giving the highest shard first is taking from the end.
	flat := make([]int32, total-s.place-s.revoking-s.evacuate)
	off := 0
	for j := range s.ms {
		n := s.ms[j].load
		s.ms[j].owned = flat[off : off : off+n]
		off += n
	}
	for shard, sl := range s.slots {
		if sl.owner >= 0 {
			m := &s.ms[sl.owner]
			m.owned = append(m.owned, int32(shard))
		}
	}
	return nil
}

// plan computes the moves; s.ms must not be empty.
func (s *solver) plan() Plan {
	// Revoking shards first: a revoking shard becomes unassigned when its owner
	// releases it, and the next plan places it on the member then furthest below its
	// share, so it is counted there now. Then the shards to evacuate, then the
	// unassigned ones, each in shard order.
	to := s.deal(s.revoking + s.evacuate + s.place)[s.revoking:]
	var moves []Move
	if len(to) > 0 {
		moves = make([]Move, 0, len(to))
	}
	if s.evacuate > 0 {
		for shard, sl := range s.slots {
			if sl.asg < 0 || sl.owner >= 0 {
				continue
			}
			if a := &s.in.Assignments[sl.asg]; a.Phase == Assigned {
				moves = append(moves, Move{Shard: shard, From: a.Node, FromEpoch: a.Epoch, To: s.ms[to[0]].id, Reason: Evacuate})
				to = to[1:]
			}
		}
	}
	if s.place > 0 {
		for shard, sl := range s.slots {
			if sl.asg < 0 {
				moves = append(moves, Move{Shard: shard, To: s.ms[to[0]].id, Reason: Place})
				to = to[1:]
			}
		}
	}

	// Rebalancing: from the member furthest above its share to the one furthest
	// below, while that helps and the budget lasts.
	budget := s.in.MaxMoves - s.revoking
	planned := 0
	if need := s.need(); budget > 0 && need > 0 {
		moves = slices.Grow(moves, min(budget, need))
		n := len(s.ms)
		buf := make([]int32, 4*n)
		all := buf[:n:n]
		for j := range all {
			all[j] = int32(j)
		}
		receivers := newHeap(s, false, all, buf[n:2*n:2*n])
		givers := buf[2*n : 2*n : 3*n]
		for j := range s.ms {
			if len(s.ms[j].owned) > 0 {
				givers = append(givers, int32(j))
			}
		}
		donors := newHeap(s, true, givers, buf[3*n:])
		for ; planned < budget && donors.len() > 0; planned++ {
			d, r := donors.top(), receivers.top()
			if !s.worth(d, r) {
				break
			}
			from, to := &s.ms[d], &s.ms[r]
			shard := from.owned[len(from.owned)-1]
			from.owned = from.owned[:len(from.owned)-1]
			moves = append(moves, Move{Shard: int(shard), From: from.id, FromEpoch: s.in.Assignments[s.slots[shard].asg].Epoch, To: to.id, Reason: Rebalance})
			// One load at a time, each re-sifted in both heaps before the next
			// changes: sifting one member past another whose key is stale breaks the
			// heap order (the property test against the naive reference found it).
			from.load--
			if len(from.owned) == 0 {
				donors.remove(d)
			} else {
				donors.fix(d)
			}
			receivers.fix(d)
			to.load++
			donors.fix(r)
			receivers.fix(r)
		}
	}
	return Plan{Moves: moves, Reason: s.reason(planned)}
}

// deal counts k more shards, one at a time, each on the member then furthest below
// its share (ties as in before), and returns those members in order.
//
// Taking a shard raises a member's load − floor by exactly one and changes nothing
// else, so the sequence is the merge of one ascending stream per member, and it can
// be dealt level by level without a heap: at level L every member whose load − floor
// is at most L takes one shard, larger remainder first, then smaller ID. That is
// O(k + members²) instead of a heap operation per shard, which was most of the time
// of placing a fresh cluster.
//
// Filling the furthest below first never lifts a member above the ceiling of its
// share: that would need every member at or above its share already, which is more
// shards than exist. On an empty cluster it gives every member the floor of its
// share before any member one more, and the extras to the largest remainders:
// exactly the largest-remainder targets.
func (s *solver) deal(k int) []int32 {
	if k == 0 {
		return nil
	}
	n := len(s.ms)
	buf := make([]int32, 4*n)
	order, rise, next, at := buf[:n], buf[n:2*n], buf[2*n:3*n], buf[3*n:]
	for j := range n {
		order[j], rise[j] = int32(j), int32(j)
	}
	// The order within a level: before's order for members at the same distance.
	slices.SortFunc(order, func(a, b int32) int {
		switch ra, rb := s.ms[a].rem, s.ms[b].rem; {
		case ra > rb:
			return -1
		case ra < rb:
			return 1
		}
		return int(a - b)
	})
	for i, j := range order {
		at[j] = int32(i) // position in order
		next[j] = -2     // not yet dealing
	}
	dist := func(j int32) int { return s.ms[j].load - s.ms[j].floor }
	// The order in which members join the deal: smallest load − floor first.
	slices.SortFunc(rise, func(a, b int32) int { return dist(a) - dist(b) })

	// The members dealing, a list linked through next in order's order; -1 ends it.
	head := int32(-1)
	join := func(j int32) {
		prev := int32(-1)
		for p := at[j] - 1; p >= 0; p-- {
			if next[order[p]] != -2 {
				prev = order[p]
				break
			}
		}
		if prev < 0 {
			next[j], head = head, j
		} else {
			next[j], next[prev] = next[prev], j
		}
	}
	out := make([]int32, 0, k)
	joined := 0
	for level := dist(rise[0]); len(out) < k; level++ {
		for joined < n && dist(rise[joined]) <= level {
			join(rise[joined])
			joined++
		}
		for j := head; j >= 0 && len(out) < k; j = next[j] {
			out = append(out, j)
		}
	}
	for _, j := range out {
		s.ms[j].load++
	}
	return out
}

// worth reports whether moving one shard from d to r brings the cluster closer to
// balance: d above its ceiling and r below its ceiling, or r below its floor and d
// above its floor. Either way one of them comes back within its bounds and neither
// leaves them, so need falls with every move; d furthest above and r furthest below
// means both fall while both are positive, so the moves made are the fewest possible.
// A member that takes a shard is never a donor afterwards in the same plan, so no
// shard goes back and forth.
func (s *solver) worth(d, r int32) bool {
	if d == r {
		return false
	}
	from, to := &s.ms[d], &s.ms[r]
	return (from.over() && to.load < to.ceil()) || (to.under() && from.load > from.floor)
}

// need is the number of Rebalance moves that would bring every member within its
// bounds: no move takes more than one shard above the ceilings away, or fills more
// than one below the floors.
func (s *solver) need() int {
	above, below := 0, 0
	for i := range s.ms {
		m := &s.ms[i]
		if c := m.ceil(); m.load > c {
			above += m.load - c
		} else if m.load < m.floor {
			below += m.floor - m.load
		}
	}
	return max(above, below)
}

func (s *solver) reason(planned int) string {
	left := s.need()
	switch {
	case left == 0 && s.revoking > 0:
		return fmt.Sprintf("balanced once the shards in flight are placed (%d revoking)", s.revoking)
	case left == 0:
		return "balanced"
	case s.in.MaxMoves <= 0:
		return fmt.Sprintf("unbalanced by %d moves, but MaxMoves %d allows no rebalancing", left, s.in.MaxMoves)
	}
	return fmt.Sprintf("MaxMoves %d reached (%d revoking, %d planned): %d more rebalance moves to go",
		s.in.MaxMoves, s.revoking, planned, left)
}
