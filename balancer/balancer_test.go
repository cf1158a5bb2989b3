package balancer

import (
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

func alive(ids ...string) []Member {
	var ms []Member
	for _, id := range ids {
		ms = append(ms, Member{ID: id, Weight: 1})
	}
	return ms
}

func assigned(node string, shards ...int) []Assignment {
	var as []Assignment
	for _, s := range shards {
		as = append(as, Assignment{Shard: s, Node: node, Epoch: uint64(100 + s)})
	}
	return as
}

func TestComputeTable(t *testing.T) {
	tests := []struct {
		name string
		in   Input
		want []Move
		note bool
	}{
		{
			name: "fresh cluster places round robin by load then ID",
			in:   Input{TotalShards: 5, Members: alive("b", "a"), MaxMoves: 2},
			want: []Move{
				{Shard: 0, To: "a", Reason: Place}, {Shard: 1, To: "b", Reason: Place},
				{Shard: 2, To: "a", Reason: Place}, {Shard: 3, To: "b", Reason: Place},
				{Shard: 4, To: "a", Reason: Place},
			},
		},
		{
			name: "balanced within ±1 gives no move",
			in: Input{TotalShards: 5, Members: alive("a", "b"), MaxMoves: 5,
				Assignments: append(assigned("a", 0, 1), assigned("b", 2, 3, 4)...)},
		},
		{
			name: "failed member's shards go to the least loaded, unbounded by MaxMoves",
			in: Input{TotalShards: 4, MaxMoves: 0,
				Members:     []Member{{ID: "a", Weight: 1}, {ID: "b", Weight: 1}, {ID: "c", Weight: 1, State: Failed}},
				Assignments: append(append(assigned("a", 0), assigned("b", 1)...), assigned("c", 2, 3)...)},
			want: []Move{
				{Shard: 2, From: "c", FromEpoch: 102, To: "a", Reason: Evacuate},
				{Shard: 3, From: "c", FromEpoch: 103, To: "b", Reason: Evacuate},
			},
		},
		{
			// a and b tie; the donor is the maximum under the order the receiver is the
			// minimum of, so ties give from the larger ID.
			name: "a join takes at most MaxMoves, the highest shard id of the most loaded",
			in: Input{TotalShards: 6, Members: alive("a", "b", "c"), MaxMoves: 1,
				Assignments: append(assigned("a", 0, 1, 2), assigned("b", 3, 4, 5)...)},
			want: []Move{{Shard: 5, From: "b", FromEpoch: 105, To: "c", Reason: Rebalance}},
		},
		{
			name: "moves in flight count against MaxMoves",
			in: Input{TotalShards: 6, Members: alive("a", "b", "c"), MaxMoves: 1,
				Assignments: append(assigned("a", 0, 1), append(assigned("b", 3, 4, 5),
					Assignment{Shard: 2, Node: "a", Epoch: 7, Phase: Revoking})...)},
		},
		{
			name: "a revoking shard is neither moved nor placed, and its landing is counted",
			in: Input{TotalShards: 4, Members: alive("a", "b"), MaxMoves: 4,
				Assignments: append(assigned("a", 0, 1, 2), Assignment{Shard: 3, Node: "a", Epoch: 9, Phase: Revoking})},
			want: []Move{{Shard: 2, From: "a", FromEpoch: 102, To: "b", Reason: Rebalance}},
		},
		{
			// Surplus (load*4 - 8*weight) starts at -24 for big and -8 for small; each
			// shard adds 4 to its member's. Ties go to the smaller ID. Big ends with 6.
			name: "weights: 3 to 1 over 8 shards",
			in:   Input{TotalShards: 8, Members: []Member{{ID: "big", Weight: 3}, {ID: "small", Weight: 1}}},
			want: []Move{
				{Shard: 0, To: "big", Reason: Place}, {Shard: 1, To: "big", Reason: Place},
				{Shard: 2, To: "big", Reason: Place}, {Shard: 3, To: "big", Reason: Place},
				{Shard: 4, To: "big", Reason: Place}, {Shard: 5, To: "small", Reason: Place},
				{Shard: 6, To: "big", Reason: Place}, {Shard: 7, To: "small", Reason: Place},
			},
		},
		{
			name: "weight 0 holds nothing",
			in: Input{TotalShards: 2, Members: []Member{{ID: "a", Weight: 1}, {ID: "z", Weight: 0}},
				Assignments: assigned("z", 0)},
			want: []Move{
				{Shard: 0, From: "z", FromEpoch: 100, To: "a", Reason: Evacuate},
				{Shard: 1, To: "a", Reason: Place},
			},
		},
		{
			name: "draining and unknown owners are evacuated",
			in: Input{TotalShards: 2, Members: []Member{{ID: "a", Weight: 1}, {ID: "d", Weight: 1, State: Draining}},
				Assignments: append(assigned("d", 0), assigned("ghost", 1)...)},
			want: []Move{
				{Shard: 0, From: "d", FromEpoch: 100, To: "a", Reason: Evacuate},
				{Shard: 1, From: "ghost", FromEpoch: 101, To: "a", Reason: Evacuate},
			},
		},
		{
			name: "more members than shards",
			in:   Input{TotalShards: 2, Members: alive("a", "b", "c", "d"), MaxMoves: 4},
			want: []Move{{Shard: 0, To: "a", Reason: Place}, {Shard: 1, To: "b", Reason: Place}},
		},
		{
			name: "no alive member: no moves, and the plan says why",
			in:   Input{TotalShards: 3, Members: []Member{{ID: "a", Weight: 1, State: Failed}}, Assignments: assigned("a", 0)},
			note: true,
		},
		{
			name: "no shards",
			in:   Input{TotalShards: 0, Members: alive("a")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan, err := Compute(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if len(plan.Moves)+len(tt.want) > 0 && !reflect.DeepEqual(plan.Moves, tt.want) {
				t.Fatalf("moves\n got %+v\nwant %+v", plan.Moves, tt.want)
			}
			if (plan.Note != "") != tt.note {
				t.Fatalf("note %q, want a note: %v", plan.Note, tt.note)
			}
		})
	}
}

func TestComputeRejectsBadInput(t *testing.T) {
	tests := []struct {
		in   Input
		name string // a word the error must contain
	}{
		{Input{TotalShards: -1}, "TotalShards"},
		{Input{TotalShards: 1, Members: []Member{{ID: ""}}}, "empty ID"},
		{Input{TotalShards: 1, Members: []Member{{ID: "a"}, {ID: "a"}}}, `"a" appears twice`},
		{Input{TotalShards: 1, Members: []Member{{ID: "a", Weight: -1}}}, "negative weight"},
		{Input{TotalShards: 1, Members: []Member{{ID: "a", State: 9}}}, "unknown state"},
		{Input{TotalShards: 1, Assignments: []Assignment{{Shard: 1, Node: "a"}}}, "outside"},
		{Input{TotalShards: 2, Assignments: []Assignment{{Shard: 1, Node: "a"}, {Shard: 1, Node: "b"}}}, "twice"},
		{Input{TotalShards: 1, Assignments: []Assignment{{Shard: 0}}}, "empty node"},
		{Input{TotalShards: 1, Assignments: []Assignment{{Shard: 0, Node: "a", Phase: 5}}}, "unknown phase"},
	}
	for _, tt := range tests {
		_, err := Compute(tt.in)
		if !errors.Is(err, ErrInvalidInput) || !contains(err.Error(), tt.name) {
			t.Errorf("%+v: err %v, want ErrInvalidInput mentioning %q", tt.in, err, tt.name)
		}
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// cluster draws a random cluster: members with weights 0..4 in any state, and a
// partial assignment (some to unknown nodes, some revoking).
func cluster(t *rapid.T) Input {
	n := rapid.IntRange(0, 8).Draw(t, "members")
	var ms []Member
	for i := range n {
		ms = append(ms, Member{
			ID:     fmt.Sprintf("n%d", i),
			Weight: rapid.IntRange(0, 4).Draw(t, "weight"),
			State:  MemberState(rapid.SampledFrom([]int{0, 0, 0, 1, 2, 3}).Draw(t, "state")),
		})
	}
	total := rapid.IntRange(0, 60).Draw(t, "shards")
	var as []Assignment
	for s := range total {
		switch rapid.IntRange(0, 9).Draw(t, "kind") {
		case 0, 1: // unassigned
		case 2:
			as = append(as, Assignment{Shard: s, Node: "ghost", Epoch: uint64(s + 1)})
		case 3:
			if n > 0 {
				as = append(as, Assignment{Shard: s, Node: ms[rapid.IntRange(0, n-1).Draw(t, "owner")].ID, Epoch: uint64(s + 1), Phase: Revoking})
			}
		default:
			if n > 0 {
				as = append(as, Assignment{Shard: s, Node: ms[rapid.IntRange(0, n-1).Draw(t, "owner")].ID, Epoch: uint64(s + 1)})
			}
		}
	}
	return Input{TotalShards: total, Members: ms, Assignments: as, MaxMoves: rapid.IntRange(0, 5).Draw(t, "maxMoves")}
}

// apply plays a plan the way the leader does. With phases, a rebalance first revokes
// (the shard stays in flight for one round) and comes back unassigned, to be placed.
func apply(in Input, plan Plan, withPhases bool, epoch *uint64) Input {
	byShard := map[int]Assignment{}
	for _, a := range in.Assignments {
		if a.Phase == Revoking {
			continue // released since the last round: unassigned now
		}
		byShard[a.Shard] = a
	}
	for _, a := range in.Assignments {
		if a.Phase == Revoking && !withPhases {
			byShard[a.Shard] = Assignment{Shard: a.Shard, Node: a.Node, Epoch: a.Epoch}
		}
	}
	for _, m := range plan.Moves {
		*epoch++
		if withPhases && m.Reason == Rebalance {
			byShard[m.Shard] = Assignment{Shard: m.Shard, Node: m.From, Epoch: m.FromEpoch, Phase: Revoking}
			continue
		}
		byShard[m.Shard] = Assignment{Shard: m.Shard, Node: m.To, Epoch: *epoch}
	}
	out := in
	out.Assignments = nil
	for s := range in.TotalShards {
		if a, ok := byShard[s]; ok {
			out.Assignments = append(out.Assignments, a)
		}
	}
	return out
}

// bounds is the reference: floor and ceil of each eligible member's exact share,
// computed with rationals, independently of the implementation.
func bounds(in Input) map[string][2]int64 {
	sum := 0
	for _, m := range in.Members {
		if m.State == Alive && m.Weight > 0 {
			sum += m.Weight
		}
	}
	out := map[string][2]int64{}
	for _, m := range in.Members {
		if m.State != Alive || m.Weight == 0 {
			continue
		}
		share := big.NewRat(int64(in.TotalShards*m.Weight), int64(sum))
		lo := new(big.Int).Quo(share.Num(), share.Denom()).Int64()
		hi := lo
		if !share.IsInt() {
			hi++
		}
		out[m.ID] = [2]int64{lo, hi}
	}
	return out
}

func TestPropertyConverges(t *testing.T) {
	for _, withPhases := range []bool{false, true} {
		t.Run(fmt.Sprintf("phases=%v", withPhases), func(t *testing.T) {
			rapid.Check(t, func(t *rapid.T) {
				in := cluster(t)
				in.MaxMoves = max(in.MaxMoves, 1)
				ref := bounds(in)
				epoch := uint64(1000)
				rounds := in.TotalShards*2/in.MaxMoves + 4
				quiet := false
				for range rounds {
					plan, err := Compute(in)
					if err != nil {
						t.Fatal(err)
					}
					checkPlan(t, in, plan)
					if len(plan.Moves) == 0 && !hasRevoking(in) {
						quiet = true
						break
					}
					in = apply(in, plan, withPhases, &epoch)
				}
				if !quiet {
					t.Fatalf("still moving after %d rounds", rounds)
				}
				if len(ref) == 0 {
					return
				}
				load := map[string]int64{}
				for _, a := range in.Assignments {
					if _, ok := ref[a.Node]; !ok {
						t.Fatalf("shard %d rests on %q, which may not hold shards", a.Shard, a.Node)
					}
					load[a.Node]++
				}
				if len(in.Assignments) != in.TotalShards {
					t.Fatalf("%d of %d shards assigned", len(in.Assignments), in.TotalShards)
				}
				for id, b := range ref {
					if load[id] < b[0] || load[id] > b[1] {
						t.Fatalf("member %s holds %d, share bounds [%d, %d]", id, load[id], b[0], b[1])
					}
				}
			})
		})
	}
}

func hasRevoking(in Input) bool {
	return slices.ContainsFunc(in.Assignments, func(a Assignment) bool { return a.Phase == Revoking })
}

// checkPlan holds for every plan: each shard moves at most once, moves name the
// current owner and epoch, never touch a revoking shard, go to a member that may hold
// shards, and rebalancing stays within MaxMoves.
func checkPlan(t *rapid.T, in Input, plan Plan) {
	cur := map[int]Assignment{}
	revoking := 0
	for _, a := range in.Assignments {
		cur[a.Shard] = a
		if a.Phase == Revoking {
			revoking++
		}
	}
	ok := bounds(in)
	seen := map[int]bool{}
	rebalances := 0
	for _, m := range plan.Moves {
		if seen[m.Shard] {
			t.Fatalf("shard %d moves twice in one plan", m.Shard)
		}
		seen[m.Shard] = true
		a, has := cur[m.Shard]
		switch {
		case has && a.Phase == Revoking:
			t.Fatalf("revoking shard %d moved", m.Shard)
		case has && (m.From != a.Node || m.FromEpoch != a.Epoch):
			t.Fatalf("move %+v does not name the owner %+v", m, a)
		case !has && (m.From != "" || m.Reason != Place):
			t.Fatalf("unassigned shard moved as %+v", m)
		}
		if _, can := ok[m.To]; !can {
			t.Fatalf("move %+v goes to a member that may not hold shards", m)
		}
		if m.Reason == Rebalance {
			rebalances++
		}
	}
	if rebalances > 0 && rebalances+revoking > in.MaxMoves {
		t.Fatalf("%d rebalancing moves with %d in flight, MaxMoves %d", rebalances, revoking, in.MaxMoves)
	}
}

func TestPropertyDeterministic(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := cluster(t)
		a, err := Compute(in)
		if err != nil {
			t.Fatal(err)
		}
		shuffled := in
		shuffled.Members = rapid.Permutation(in.Members).Draw(t, "members")
		shuffled.Assignments = rapid.Permutation(in.Assignments).Draw(t, "assignments")
		b, err := Compute(shuffled)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("plans differ with input order:\n%+v\n%+v", a, b)
		}
	})
}

func TestPropertyBalancedGivesNoMoves(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := cluster(t)
		in.MaxMoves = max(in.MaxMoves, 1)
		epoch := uint64(1)
		for range in.TotalShards*2 + 4 { // converge first
			plan, _ := Compute(in)
			if len(plan.Moves) == 0 && !hasRevoking(in) {
				break
			}
			in = apply(in, plan, false, &epoch)
		}
		// Any permutation of who holds what, with the same loads, is balanced too.
		nodes := make([]string, len(in.Assignments))
		for i, a := range in.Assignments {
			nodes[i] = a.Node
		}
		nodes = rapid.Permutation(nodes).Draw(t, "owners")
		for i := range in.Assignments {
			in.Assignments[i].Node = nodes[i]
		}
		plan, err := Compute(in)
		if err != nil {
			t.Fatal(err)
		}
		if len(plan.Moves) != 0 {
			t.Fatalf("a balanced assignment gave moves %+v", plan.Moves)
		}
	})
}

func benchInput(members int, assign func(shard int) string) Input {
	const shards = 20000
	in := Input{TotalShards: shards, MaxMoves: 16}
	for i := range members {
		in.Members = append(in.Members, Member{ID: fmt.Sprintf("node-%02d", i), Weight: 1})
	}
	for s := range shards {
		if n := assign(s); n != "" {
			in.Assignments = append(in.Assignments, Assignment{Shard: s, Node: n, Epoch: uint64(s + 1)})
		}
	}
	return in
}

// BenchmarkCompute20kShards50Members: one balancer call for 20,000 shards over 50
// members, for a fresh cluster (everything placed) and for a join (a balanced cluster
// of 49 plus one empty member).
func BenchmarkCompute20kShards50Members(b *testing.B) {
	cases := map[string]Input{
		"fresh": benchInput(50, func(int) string { return "" }),
		"join":  benchInput(50, func(s int) string { return fmt.Sprintf("node-%02d", s%49) }),
	}
	for _, name := range []string{"fresh", "join"} {
		in := cases[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Compute(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
