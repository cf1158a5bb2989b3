package balancer

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// alive returns members of weight 1.
func alive(ids ...string) []Member {
	var ms []Member
	for _, id := range ids {
		ms = append(ms, Member{ID: id, Weight: 1})
	}
	return ms
}

// assigned gives shards to node, each at epoch 100+shard so a test can tell them apart.
func assigned(node string, shards ...int) []Assignment {
	var as []Assignment
	for _, s := range shards {
		as = append(as, Assignment{Shard: s, Node: node, Epoch: uint64(100 + s)})
	}
	return as
}

func revoking(node string, shards ...int) []Assignment {
	as := assigned(node, shards...)
	for i := range as {
		as[i].Phase = Revoking
	}
	return as
}

func all(groups ...[]Assignment) []Assignment { return slices.Concat(groups...) }

func place(shard int, to string) Move { return Move{Shard: shard, To: to, Reason: Place} }

func evacuate(shard int, from, to string) Move {
	return Move{Shard: shard, From: from, FromEpoch: uint64(100 + shard), To: to, Reason: Evacuate}
}

func rebalance(shard int, from, to string) Move {
	return Move{Shard: shard, From: from, FromEpoch: uint64(100 + shard), To: to, Reason: Rebalance}
}

// dealt is the Place moves of shards, dealt round robin to the members in cycle.
func dealt(shards []int, cycle ...string) []Move {
	var ms []Move
	for i, s := range shards {
		ms = append(ms, place(s, cycle[i%len(cycle)]))
	}
	return ms
}

// span returns the shards from lo to hi, both included.
func span(lo, hi int) []int {
	var ss []int
	for s := lo; s <= hi; s++ {
		ss = append(ss, s)
	}
	return ss
}

func TestCompute(t *testing.T) {
	tests := []struct {
		name   string
		in     Input
		want   []Move
		reason string
	}{
		{
			name:   "fresh cluster deals round robin, ties to the smaller ID",
			in:     Input{TotalShards: 5, Members: alive("b", "a"), MaxMoves: 2},
			want:   []Move{place(0, "a"), place(1, "b"), place(2, "a"), place(3, "b"), place(4, "a")},
			reason: "balanced",
		},
		{
			name: "three equal members, ten shards: the extra shard goes to the smallest ID",
			in:   Input{TotalShards: 10, Members: alive("c", "a", "b")},
			want: []Move{place(0, "a"), place(1, "b"), place(2, "c"), place(3, "a"), place(4, "b"),
				place(5, "c"), place(6, "a"), place(7, "b"), place(8, "c"), place(9, "a")},
			reason: "balanced",
		},
		{
			name: "within the band is balanced: 3/4/3 stays although the target is 4/3/3",
			in: Input{TotalShards: 10, Members: alive("a", "b", "c"), MaxMoves: 10,
				Assignments: all(assigned("a", 0, 1, 2), assigned("b", 3, 4, 5, 6), assigned("c", 7, 8, 9))},
			reason: "balanced",
		},
		{
			// After placement two members are one above their share and two one
			// below. The plan's second move needs a heap that stayed in order through
			// the first, which changes two members' loads (found by the property test
			// against the naive reference).
			name: "two moves in a row after placement",
			in: Input{TotalShards: 56, Members: alive("n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7"), MaxMoves: 12,
				Assignments: all(assigned("n0", 36, 37, 38, 39, 40, 41, 42, 43),
					assigned("n1", 44, 45, 48, 49, 50, 51, 52, 53), assigned("n2", 54))},
			// n3..n7 hold nothing and n2 one shard: the 39 unassigned shards go
			// round robin from n3, which leaves n6 and n7 one short.
			want: append(dealt(append(span(0, 35), 46, 47, 55), "n3", "n4", "n5", "n6", "n7", "n2"),
				rebalance(53, "n1", "n6"), rebalance(43, "n0", "n7")),
			reason: "balanced",
		},
		{
			// Shares 6 and 2. Big starts 6 below, small 2 below; each shard lifts its
			// member by one, and equal distances go to the smaller ID.
			name: "weights 3:1 over 8 shards",
			in:   Input{TotalShards: 8, Members: []Member{{ID: "big", Weight: 3}, {ID: "small", Weight: 1}}},
			want: []Move{place(0, "big"), place(1, "big"), place(2, "big"), place(3, "big"),
				place(4, "big"), place(5, "small"), place(6, "big"), place(7, "small")},
			reason: "balanced",
		},
		{
			// Shares 8/3 and 4/3: floors 2 and 1, and the extra shard to the larger
			// remainder (2/3 over 1/3).
			name:   "weights 2:1 over 4 shards do not divide evenly",
			in:     Input{TotalShards: 4, Members: []Member{{ID: "a", Weight: 2}, {ID: "b", Weight: 1}}},
			want:   []Move{place(0, "a"), place(1, "a"), place(2, "b"), place(3, "a")},
			reason: "balanced",
		},
		{
			name:   "a single member takes everything",
			in:     Input{TotalShards: 3, Members: alive("solo")},
			want:   []Move{place(0, "solo"), place(1, "solo"), place(2, "solo")},
			reason: "balanced",
		},
		{
			name:   "more members than shards",
			in:     Input{TotalShards: 2, Members: alive("d", "c", "b", "a"), MaxMoves: 4},
			want:   []Move{place(0, "a"), place(1, "b")},
			reason: "balanced",
		},
		{
			name: "more members than shards, already one each: no move",
			in: Input{TotalShards: 2, Members: alive("a", "b", "c", "d"), MaxMoves: 4,
				Assignments: all(assigned("c", 0), assigned("d", 1))},
			reason: "balanced",
		},
		{
			name: "a failed member's shards go to the least loaded, unbounded by MaxMoves",
			in: Input{TotalShards: 4, MaxMoves: 0,
				Members:     []Member{{ID: "a", Weight: 1}, {ID: "b", Weight: 1}, {ID: "c", Weight: 1, State: Failed}},
				Assignments: all(assigned("a", 0), assigned("b", 1), assigned("c", 2, 3))},
			want:   []Move{evacuate(2, "c", "a"), evacuate(3, "c", "b")},
			reason: "balanced",
		},
		{
			name: "draining, left, weight 0 and unknown owners are all evacuated",
			in: Input{TotalShards: 4, MaxMoves: 0,
				Members: []Member{{ID: "a", Weight: 1}, {ID: "d", Weight: 1, State: Draining},
					{ID: "l", Weight: 1, State: Left}, {ID: "z", Weight: 0}},
				Assignments: all(assigned("d", 0), assigned("l", 1), assigned("z", 2), assigned("ghost", 3))},
			want:   []Move{evacuate(0, "d", "a"), evacuate(1, "l", "a"), evacuate(2, "z", "a"), evacuate(3, "ghost", "a")},
			reason: "balanced",
		},
		{
			// Shares 2 each. Evacuation first, then placement, then a (holding 4) gives
			// its highest shards to whoever is then furthest below.
			name: "evacuate, then place, then rebalance",
			in: Input{TotalShards: 6, MaxMoves: 5,
				Members:     []Member{{ID: "a", Weight: 1}, {ID: "b", Weight: 1}, {ID: "c", Weight: 1}, {ID: "f", Weight: 1, State: Failed}},
				Assignments: all(assigned("a", 0, 1, 2, 3), assigned("f", 5))},
			want:   []Move{evacuate(5, "f", "b"), place(4, "c"), rebalance(3, "a", "b"), rebalance(2, "a", "c")},
			reason: "balanced",
		},
		{
			// a and b are equally far above; donors tie to the larger ID.
			name: "a join takes at most MaxMoves, the highest shard id of the most loaded",
			in: Input{TotalShards: 6, Members: alive("a", "b", "c"), MaxMoves: 1,
				Assignments: all(assigned("a", 0, 1, 2), assigned("b", 3, 4, 5))},
			want:   []Move{rebalance(5, "b", "c")},
			reason: "MaxMoves 1 reached (0 revoking, 1 planned): 1 more rebalance moves to go",
		},
		{
			name: "the join's next call finishes it",
			in: Input{TotalShards: 6, Members: alive("a", "b", "c"), MaxMoves: 1,
				Assignments: all(assigned("a", 0, 1, 2), assigned("b", 3, 4), assigned("c", 5))},
			want:   []Move{rebalance(2, "a", "c")},
			reason: "balanced",
		},
		{
			name: "a join moves only what the new member needs",
			in: Input{TotalShards: 12, Members: alive("a", "b", "c"), MaxMoves: 100,
				Assignments: all(assigned("a", 0, 1, 2, 3, 4, 5), assigned("b", 6, 7, 8, 9, 10, 11))},
			want:   []Move{rebalance(11, "b", "c"), rebalance(5, "a", "c"), rebalance(10, "b", "c"), rebalance(4, "a", "c")},
			reason: "balanced",
		},
		{
			name: "the most overloaded gives first",
			in: Input{TotalShards: 9, Members: alive("a", "b", "c"), MaxMoves: 1,
				Assignments: all(assigned("a", 0, 1, 2, 3, 4), assigned("b", 5, 6, 7, 8))},
			want:   []Move{rebalance(4, "a", "c")},
			reason: "MaxMoves 1 reached (0 revoking, 1 planned): 2 more rebalance moves to go",
		},
		{
			name: "a weight change rebalances toward the heavier member",
			in: Input{TotalShards: 8, MaxMoves: 10,
				Members:     []Member{{ID: "a", Weight: 3}, {ID: "b", Weight: 1}},
				Assignments: assigned("b", 0, 1, 2, 3, 4, 5, 6, 7)},
			want: []Move{rebalance(7, "b", "a"), rebalance(6, "b", "a"), rebalance(5, "b", "a"),
				rebalance(4, "b", "a"), rebalance(3, "b", "a"), rebalance(2, "b", "a")},
			reason: "balanced",
		},
		{
			// c's share is 2; the revoking shard will be placed on c, so only one more
			// is needed, and it would be a second move in flight.
			name: "moves in flight count against MaxMoves",
			in: Input{TotalShards: 6, Members: alive("a", "b", "c"), MaxMoves: 1,
				Assignments: all(assigned("a", 0, 1), revoking("a", 2), assigned("b", 3, 4, 5))},
			reason: "MaxMoves 1 reached (1 revoking, 0 planned): 1 more rebalance moves to go",
		},
		{
			// Counted at its owner a, the revoking shard would make a look 2 above its
			// share and a second shard would leave it; counted where it will land (b),
			// one move is enough.
			name: "a revoking shard is not moved, and is counted where it will land",
			in: Input{TotalShards: 4, Members: alive("a", "b"), MaxMoves: 4,
				Assignments: all(assigned("a", 0, 1, 2), revoking("a", 3))},
			want:   []Move{rebalance(2, "a", "b")},
			reason: "balanced once the shards in flight are placed (1 revoking)",
		},
		{
			name: "a revoking shard of a failed member is left to the leader",
			in: Input{TotalShards: 3, Members: []Member{{ID: "a", Weight: 1}, {ID: "f", Weight: 1, State: Failed}},
				Assignments: all(revoking("f", 0), assigned("f", 1))},
			want:   []Move{evacuate(1, "f", "a"), place(2, "a")},
			reason: "balanced once the shards in flight are placed (1 revoking)",
		},
		{
			name: "rebalancing disabled",
			in: Input{TotalShards: 4, Members: alive("a", "b"), MaxMoves: 0,
				Assignments: assigned("a", 0, 1, 2, 3)},
			reason: "unbalanced by 2 moves, but MaxMoves 0 allows no rebalancing",
		},
		{
			name: "negative MaxMoves is no rebalancing, but evacuation still happens",
			in: Input{TotalShards: 4, MaxMoves: -3,
				Members:     []Member{{ID: "a", Weight: 1}, {ID: "b", Weight: 1}, {ID: "c", Weight: 1, State: Left}},
				Assignments: all(assigned("a", 0, 1, 2), assigned("c", 3))},
			want:   []Move{evacuate(3, "c", "b")},
			reason: "unbalanced by 1 moves, but MaxMoves -3 allows no rebalancing",
		},
		{
			name:   "no alive member: no moves, and the plan says why",
			in:     Input{TotalShards: 3, Members: []Member{{ID: "a", Weight: 1, State: Failed}}, Assignments: assigned("a", 0)},
			reason: "no alive member with weight > 0: none of the 3 shards can be placed",
		},
		{
			name: "all alive members have weight 0",
			in: Input{TotalShards: 2, MaxMoves: 5,
				Members: []Member{{ID: "a"}, {ID: "b"}}, Assignments: assigned("a", 0, 1)},
			reason: "no alive member with weight > 0: none of the 2 shards can be placed",
		},
		{
			name:   "no members at all",
			in:     Input{TotalShards: 2},
			reason: "no alive member with weight > 0: none of the 2 shards can be placed",
		},
		{
			name:   "no shards",
			in:     Input{TotalShards: 0, Members: alive("a")},
			reason: "no shards: TotalShards is 0",
		},
		{
			name:   "no shards and no members",
			in:     Input{},
			reason: "no shards: TotalShards is 0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan, err := Compute(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(plan.Moves, tt.want) {
				t.Errorf("moves\n got %v\nwant %v", plan.Moves, tt.want)
			}
			if plan.Reason != tt.reason {
				t.Errorf("reason %q, want %q", plan.Reason, tt.reason)
			}
		})
	}
}

// A join at scale: 49 balanced members and one new one. The plan takes exactly the
// new member's share, one shard from each of the others (the most overloaded first),
// and nothing else.
func TestJoinMovesOnlyWhatTheNewMemberNeeds(t *testing.T) {
	const shards, old = 20000, 49
	in := benchInput(old+1, shards, 1<<20, func(s int) string { return nodeID(s % old) })
	plan, err := Compute(in)
	if err != nil {
		t.Fatal(err)
	}
	newID := nodeID(old)
	if want := shards / (old + 1); len(plan.Moves) != want {
		t.Fatalf("%d moves, want %d", len(plan.Moves), want)
	}
	from := map[string]int{}
	for _, m := range plan.Moves {
		if m.To != newID || m.Reason != Rebalance {
			t.Fatalf("move %+v: want a Rebalance to %s", m, newID)
		}
		from[m.From]++
	}
	for id, n := range from {
		if n > 9 { // 20000/49 is 408.2, the share now is 400: at most 9 leave each
			t.Errorf("%s gives %d shards", id, n)
		}
	}
	if plan.Reason != "balanced" {
		t.Errorf("reason %q", plan.Reason)
	}
}

func TestComputeRejectsBadInput(t *testing.T) {
	tests := []struct {
		in           Input
		field, value string
		problem      string // a part of the problem
	}{
		{Input{TotalShards: -1}, "TotalShards", "-1", "[0, 1048576]"},
		{Input{TotalShards: MaxShards + 1}, "TotalShards", "1048577", "[0, 1048576]"},
		{Input{TotalShards: 1, Members: []Member{{ID: "a"}, {ID: ""}}}, "Members[1].ID", `""`, "empty"},
		{Input{TotalShards: 1, Members: []Member{{ID: "a"}, {ID: "b"}, {ID: "a"}}}, "Members[2].ID", `"a"`, "duplicates Members[0].ID"},
		{Input{TotalShards: 1, Members: []Member{{ID: "a", Weight: -1}}}, "Members[0].Weight", "-1", "negative"},
		{Input{TotalShards: 1, Members: []Member{{ID: "a", State: 9}}}, "Members[0].State", "MemberState(9)", "unknown"},
		{Input{TotalShards: 1, Members: []Member{{ID: "a", Weight: math.MaxInt64}, {ID: "b", Weight: 1}}},
			"Members[1].Weight", "1", "add up to more than"},
		{Input{TotalShards: 1, Assignments: []Assignment{{Shard: 1, Node: "a"}}}, "Assignments[0].Shard", "1", "out of range [0, 1)"},
		{Input{TotalShards: 1, Assignments: []Assignment{{Shard: -1, Node: "a"}}}, "Assignments[0].Shard", "-1", "out of range"},
		{Input{TotalShards: 0, Assignments: []Assignment{{Shard: 0, Node: "a"}}}, "Assignments[0].Shard", "0", "out of range [0, 0)"},
		{Input{TotalShards: 2, Assignments: []Assignment{{Shard: 1, Node: "a"}, {Shard: 1, Node: "b"}}}, "Assignments[1].Shard", "1", "duplicates Assignments[0].Shard"},
		{Input{TotalShards: 1, Assignments: []Assignment{{Shard: 0}}}, "Assignments[0].Node", `""`, "owner"},
		{Input{TotalShards: 1, Assignments: []Assignment{{Shard: 0, Node: "a", Phase: 5}}}, "Assignments[0].Phase", "Phase(5)", "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			plan, err := Compute(tt.in)
			var ie *InputError
			if !errors.As(err, &ie) || !errors.Is(err, ErrInvalidInput) {
				t.Fatalf("err %v, want an *InputError that is ErrInvalidInput", err)
			}
			if ie.Field != tt.field || ie.Value != tt.value || !strings.Contains(ie.Problem, tt.problem) {
				t.Errorf("got %q = %q: %q, want %q = %q: …%s…", ie.Field, ie.Value, ie.Problem, tt.field, tt.value, tt.problem)
			}
			if want := fmt.Sprintf("invalid balancer input: %s = %s: ", tt.field, tt.value); !strings.HasPrefix(err.Error(), want) {
				t.Errorf("message %q does not start with %q", err, want)
			}
			if plan.Moves != nil || plan.Reason != "" {
				t.Errorf("a plan came with the error: %+v", plan)
			}
		})
	}
}

// A failed member's weight does not count, so it cannot overflow the sum.
func TestHugeWeightOfFailedMemberIsFine(t *testing.T) {
	_, err := Compute(Input{TotalShards: 1, Members: []Member{
		{ID: "a", Weight: math.MaxInt64}, {ID: "b", Weight: math.MaxInt64, State: Failed}}})
	if err != nil {
		t.Fatal(err)
	}
}

func TestShares(t *testing.T) {
	tests := []struct {
		name    string
		total   int
		members []Member
		want    []Share
	}{
		{
			name: "equal weights, remainder to the smallest IDs", total: 10, members: alive("c", "b", "a"),
			want: []Share{{"a", 1, 3, 4, 4}, {"b", 1, 3, 4, 3}, {"c", 1, 3, 4, 3}},
		},
		{
			name: "weights 2:1 over 4", total: 4, members: []Member{{ID: "a", Weight: 2}, {ID: "b", Weight: 1}},
			want: []Share{{"a", 2, 2, 3, 3}, {"b", 1, 1, 2, 1}},
		},
		{
			name: "whole shares", total: 8,
			members: []Member{{ID: "big", Weight: 3}, {ID: "small", Weight: 1}, {ID: "gone", Weight: 5, State: Left}, {ID: "idle"}},
			want:    []Share{{"big", 3, 6, 6, 6}, {"small", 1, 2, 2, 2}},
		},
		{
			// 10·2^61/(2^61+2^61+2) needs 128 bits on the way.
			name: "huge weights", total: 10,
			members: []Member{{ID: "a", Weight: 1 << 61}, {ID: "b", Weight: 1 << 61}, {ID: "c", Weight: 2}},
			want:    []Share{{"a", 1 << 61, 4, 5, 5}, {"b", 1 << 61, 4, 5, 5}, {"c", 2, 0, 1, 0}},
		},
		{name: "no member may hold shards", total: 3, members: []Member{{ID: "a", State: Failed, Weight: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Shares(tt.total, tt.members)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %v\nwant %v", got, tt.want)
			}
		})
	}
	if _, err := Shares(1, []Member{{ID: "a", Weight: -2}}); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("negative weight: err %v", err)
	}
}

func TestStrings(t *testing.T) {
	for _, tt := range []struct {
		v    fmt.Stringer
		want string
	}{
		{Alive, "alive"}, {Failed, "failed"}, {Draining, "draining"}, {Left, "left"}, {MemberState(7), "MemberState(7)"},
		{Assigned, "assigned"}, {Revoking, "revoking"}, {Phase(3), "Phase(3)"},
		{Evacuate, "evacuate"}, {Place, "place"}, {Rebalance, "rebalance"}, {Reason(9), "Reason(9)"},
	} {
		if got := tt.v.String(); got != tt.want {
			t.Errorf("%#v: %q, want %q", tt.v, got, tt.want)
		}
	}
}
