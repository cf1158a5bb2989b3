package balancer

import (
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// genCluster draws a random cluster: up to 8 members with weights 0..4 (or, with
// huge, weights up to 2^59 that need the 128-bit arithmetic) in any state, up to 60
// shards, and a partial assignment: some shards unassigned, some on members, some on
// an unknown node, some Revoking. The rates vary from cluster to cluster, and one
// node may hoard shards, so that plans need rebalancing as often as placing.
//
// rapid draws integers near the bottom of their range most often, so the knobs that
// make a case busy (members, weight, shards, MaxMoves) are drawn as max − x: most
// cases are large, and failures shrink toward the large end.
func genCluster(t *rapid.T, huge bool) Input {
	n := 8 - rapid.IntRange(0, 8).Draw(t, "members")
	weight := rapid.Map(rapid.IntRange(0, 4), func(x int) int { return 4 - x })
	if huge {
		weight = rapid.OneOf(weight, rapid.IntRange(1<<58, 1<<59))
	}
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{
			ID:     fmt.Sprintf("n%d", i),
			Weight: weight.Draw(t, "weight"),
			State:  rapid.SampledFrom([]MemberState{Alive, Alive, Alive, Failed, Draining, Left}).Draw(t, "state"),
		}
	}
	nodes := []string{"ghost"}
	for _, m := range ms {
		nodes = append(nodes, m.ID, m.ID) // members twice as likely as the ghost
	}
	if n > 0 {
		hoarder := ms[rapid.IntRange(0, n-1).Draw(t, "hoarder")].ID
		for range 4*n - rapid.IntRange(0, 4*n).Draw(t, "hoarding") {
			nodes = append(nodes, hoarder)
		}
	}
	unassigned := rapid.IntRange(0, 5).Draw(t, "unassigned") // in tenths
	revoking := rapid.IntRange(0, 3).Draw(t, "revoking")     // in fortieths: they use up MaxMoves
	total := 60 - rapid.IntRange(0, 60).Draw(t, "shards")
	var as []Assignment
	for s := range total {
		if 9-rapid.IntRange(0, 9).Draw(t, "unassigned?") < unassigned {
			continue
		}
		a := Assignment{Shard: s, Node: rapid.SampledFrom(nodes).Draw(t, "node"), Epoch: rapid.Uint64Range(1, 1<<40).Draw(t, "epoch")}
		if 39-rapid.IntRange(0, 39).Draw(t, "revoking?") < revoking {
			a.Phase = Revoking
		}
		as = append(as, a)
	}
	return Input{TotalShards: total, Members: ms, Assignments: as, MaxMoves: 12 - rapid.IntRange(0, 13).Draw(t, "maxMoves")}
}

// band is a member's share computed with rationals, independently of share().
type band struct {
	share     *big.Rat
	floor, ce int64
}

// bands returns the share of every member that may hold shards.
func bands(in Input) map[string]band {
	sum := new(big.Int)
	for _, m := range in.Members {
		if m.State == Alive && m.Weight > 0 {
			sum.Add(sum, big.NewInt(int64(m.Weight)))
		}
	}
	out := map[string]band{}
	for _, m := range in.Members {
		if m.State != Alive || m.Weight <= 0 {
			continue
		}
		num := new(big.Int).Mul(big.NewInt(int64(in.TotalShards)), big.NewInt(int64(m.Weight)))
		s := new(big.Rat).SetFrac(num, sum)
		fl := new(big.Int).Quo(num, sum).Int64()
		c := fl
		if !s.IsInt() {
			c++
		}
		out[m.ID] = band{share: s, floor: fl, ce: c}
	}
	return out
}

// apply plays a plan as the leader and the state machine would (converge has checked
// it first). Shards Revoking before the plan are released: they become unassigned. Without phases every move sets the new owner; with
// phases a Rebalance move only revokes, and the shard is placed by a later plan.
func apply(in Input, plan Plan, phases bool, epoch *uint64) Input {
	cur := map[int]Assignment{}
	for _, a := range in.Assignments {
		if a.Phase == Assigned {
			cur[a.Shard] = a
		}
	}
	for _, m := range plan.Moves {
		*epoch++
		if phases && m.Reason == Rebalance {
			cur[m.Shard] = Assignment{Shard: m.Shard, Node: m.From, Epoch: m.FromEpoch, Phase: Revoking}
			continue
		}
		cur[m.Shard] = Assignment{Shard: m.Shard, Node: m.To, Epoch: *epoch}
	}
	out := in
	out.Assignments = nil
	for s := range in.TotalShards {
		if a, ok := cur[s]; ok {
			out.Assignments = append(out.Assignments, a)
		}
	}
	return out
}

// checkPlan asserts what every plan promises, whatever the input.
func checkPlan(t *rapid.T, in Input, plan Plan) {
	t.Helper()
	cur := map[int]Assignment{}
	inFlight := 0
	for _, a := range in.Assignments {
		cur[a.Shard] = a
		if a.Phase == Revoking {
			inFlight++
		}
	}
	ok := bands(in)
	if plan.Reason == "" {
		t.Fatalf("empty Reason")
	}
	if in.TotalShards == 0 || len(ok) == 0 {
		if len(plan.Moves) != 0 {
			t.Fatalf("moves with nowhere to go: %v", plan.Moves)
		}
		return
	}
	moved := map[int]bool{}
	gives, takes := map[string]bool{}, map[string]bool{}
	rebalances := 0
	for i, m := range plan.Moves {
		if moved[m.Shard] {
			t.Fatalf("shard %d moves twice in one plan", m.Shard)
		}
		moved[m.Shard] = true
		a, has := cur[m.Shard]
		_, ownerHolds := ok[a.Node]
		switch {
		case has && a.Phase == Revoking:
			t.Fatalf("revoking shard %d moved: %+v", m.Shard, m)
		case has && (m.From != a.Node || m.FromEpoch != a.Epoch):
			t.Fatalf("move %+v does not name the owner %+v", m, a)
		case !has && (m.From != "" || m.FromEpoch != 0 || m.Reason != Place):
			t.Fatalf("unassigned shard moved as %+v", m)
		case has && ownerHolds && m.Reason != Rebalance:
			t.Fatalf("shard of %q, which may hold it, moved as %+v", a.Node, m)
		case has && !ownerHolds && m.Reason != Evacuate:
			t.Fatalf("shard of %q, which may not hold it, moved as %+v", a.Node, m)
		}
		if _, can := ok[m.To]; !can || m.To == m.From {
			t.Fatalf("move %+v goes to a member that may not take it", m)
		}
		if i > 0 {
			p := plan.Moves[i-1]
			if p.Reason > m.Reason || (p.Reason == m.Reason && m.Reason != Rebalance && p.Shard > m.Shard) {
				t.Fatalf("move %+v after %+v: want Evacuate, Place, Rebalance, each in shard order", m, p)
			}
		}
		if m.Reason == Rebalance {
			rebalances++
			gives[m.From], takes[m.To] = true, true
		}
	}
	for s := range in.TotalShards {
		a, has := cur[s]
		_, ownerHolds := ok[a.Node]
		if (!has || (a.Phase == Assigned && !ownerHolds)) && !moved[s] {
			t.Fatalf("shard %d (%+v) should move and does not", s, a)
		}
	}
	for id := range gives {
		if takes[id] {
			t.Fatalf("%s both gives and takes in one plan: %v", id, plan.Moves)
		}
	}
	budget := max(0, in.MaxMoves-inFlight)
	if rebalances > budget || rebalances > max(in.MaxMoves, 0) {
		t.Fatalf("%d rebalancing moves with %d in flight, MaxMoves %d", rebalances, inFlight, in.MaxMoves)
	}
	if !strings.HasPrefix(plan.Reason, "balanced") && rebalances != budget {
		t.Fatalf("plan stops at %d of %d rebalancing moves: %q", rebalances, budget, plan.Reason)
	}
}

func compute(t *rapid.T, in Input) Plan {
	t.Helper()
	plan, err := Compute(in)
	if err != nil {
		t.Fatalf("Compute(%+v): %v", in, err)
	}
	return plan
}

func TestPropertyPlansKeepTheirPromises(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genCluster(t, rapid.Bool().Draw(t, "huge"))
		checkPlan(t, in, compute(t, in))
	})
}

// (1) Same input, same plan, whatever the order of members and assignments; and
// Compute leaves its input alone.
func TestPropertyDeterministic(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genCluster(t, false)
		members, assignments := slices.Clone(in.Members), slices.Clone(in.Assignments)
		a := compute(t, in)
		if !slices.Equal(in.Members, members) || !slices.Equal(in.Assignments, assignments) {
			t.Fatalf("Compute modified its input")
		}
		if b := compute(t, in); !reflect.DeepEqual(a, b) {
			t.Fatalf("two calls differ:\n%+v\n%+v", a, b)
		}
		shuffled := in
		shuffled.Members = rapid.Permutation(in.Members).Draw(t, "members")
		shuffled.Assignments = rapid.Permutation(in.Assignments).Draw(t, "assignments")
		if b := compute(t, shuffled); !reflect.DeepEqual(a, b) {
			t.Fatalf("plans differ with input order:\n%+v\n%+v", a, b)
		}
	})
}

// converge applies plans round after round until one has no moves and nothing is in
// flight, and fails if that takes more than rounds plans.
func converge(t *rapid.T, in Input, rounds int, phases bool, planner func(*rapid.T, Input) Plan) Input {
	epoch := uint64(1) << 41
	for range rounds {
		plan := planner(t, in)
		checkPlan(t, in, plan)
		if len(plan.Moves) == 0 && !slices.ContainsFunc(in.Assignments, func(a Assignment) bool { return a.Phase == Revoking }) {
			return in
		}
		in = apply(in, plan, phases, &epoch)
	}
	t.Fatalf("still moving after %d plans", rounds)
	return in
}

// (2) Applying plans converges, within the bound, to every shard assigned once, on a
// member that may hold it, and every such member within ±1 of its weighted share.
func TestPropertyConverges(t *testing.T) {
	for _, phases := range []bool{false, true} {
		t.Run(fmt.Sprintf("phases=%v", phases), func(t *testing.T) {
			rapid.Check(t, func(t *rapid.T) {
				in := genCluster(t, rapid.Bool().Draw(t, "huge"))
				in.MaxMoves = max(in.MaxMoves, 1)
				// Round 1 evacuates and places; the shards in flight are released
				// after it and placed in round 2; then each round makes MaxMoves
				// rebalancing moves until fewer are needed (with phases, every other
				// round: a revoked shard is in flight for a round and counts against
				// MaxMoves); the last round finds nothing to do. No more than
				// TotalShards rebalancing moves are ever needed.
				rounds := in.TotalShards/in.MaxMoves + 3
				if phases {
					rounds = 2*(in.TotalShards/in.MaxMoves) + 5
				}
				checkQuiet(t, converge(t, in, rounds, phases, compute))
			})
		})
	}
}

// checkQuiet asserts the balance invariant on a cluster whose plan is empty.
func checkQuiet(t *rapid.T, in Input) {
	t.Helper()
	ref := bands(in)
	plan := compute(t, in)
	if len(ref) == 0 || in.TotalShards == 0 {
		if !strings.HasPrefix(plan.Reason, "no ") {
			t.Fatalf("reason %q with no member to hold shards", plan.Reason)
		}
		return
	}
	if plan.Reason != "balanced" {
		t.Fatalf("reason %q for a quiet cluster", plan.Reason)
	}
	if len(in.Assignments) != in.TotalShards {
		t.Fatalf("%d of %d shards assigned", len(in.Assignments), in.TotalShards)
	}
	load := map[string]int64{}
	for _, a := range in.Assignments {
		if _, ok := ref[a.Node]; !ok || a.Phase != Assigned {
			t.Fatalf("shard %d rests on %q (%v), which may not hold it", a.Shard, a.Node, a.Phase)
		}
		load[a.Node]++
	}
	shares, err := Shares(in.TotalShards, in.Members)
	if err != nil || len(shares) != len(ref) {
		t.Fatalf("Shares: %v, %v", shares, err)
	}
	for _, sh := range shares {
		b, l := ref[sh.ID], load[sh.ID]
		if l < b.floor || l > b.ce || int64(sh.Min) != b.floor || int64(sh.Max) != b.ce {
			t.Fatalf("%s holds %d, share %v, bounds [%d, %d], Shares says %+v", sh.ID, l, b.share, b.floor, b.ce, sh)
		}
		if d := new(big.Rat).Sub(new(big.Rat).SetInt64(l), b.share); d.Cmp(big.NewRat(1, 1)) > 0 || d.Cmp(big.NewRat(-1, 1)) < 0 {
			t.Fatalf("%s holds %d, more than 1 from its share %v", sh.ID, l, b.share)
		}
		if l < int64(sh.Target)-1 || l > int64(sh.Target)+1 {
			t.Fatalf("%s holds %d, more than 1 from its target %d", sh.ID, l, sh.Target)
		}
	}
}

// (3) Any assignment with every member within its bounds gets no move at all.
func TestPropertyBalancedGivesNoMoves(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 8).Draw(t, "holders")
		var ms []Member
		for i := range n {
			ms = append(ms, Member{ID: fmt.Sprintf("h%d", i), Weight: rapid.IntRange(1, 4).Draw(t, "weight")})
		}
		for i := range rapid.IntRange(0, 3).Draw(t, "others") { // members that hold nothing
			st := rapid.SampledFrom([]MemberState{Alive, Failed, Draining, Left}).Draw(t, "state")
			w := 0
			if st != Alive {
				w = rapid.IntRange(0, 4).Draw(t, "weight")
			}
			ms = append(ms, Member{ID: fmt.Sprintf("o%d", i), Weight: w, State: st})
		}
		in := Input{TotalShards: rapid.IntRange(0, 60).Draw(t, "shards"), Members: ms, MaxMoves: rapid.IntRange(-1, 10).Draw(t, "maxMoves")}
		ref := bands(in)
		// Everyone gets the floor; the shards left over go one each to members whose
		// share is not whole, chosen at random: each such choice is balanced.
		loads := map[string]int64{}
		left := int64(in.TotalShards)
		var fractional []string
		for _, m := range ms[:n] {
			loads[m.ID] = ref[m.ID].floor
			left -= ref[m.ID].floor
			if ref[m.ID].ce > ref[m.ID].floor {
				fractional = append(fractional, m.ID)
			}
		}
		for _, id := range rapid.Permutation(fractional).Draw(t, "extra")[:left] {
			loads[id]++
		}
		shards := make([]int, in.TotalShards)
		for i := range shards {
			shards[i] = i
		}
		shards = rapid.Permutation(shards).Draw(t, "order")
		for _, m := range ms[:n] {
			for range loads[m.ID] {
				in.Assignments = append(in.Assignments, Assignment{Shard: shards[0], Node: m.ID, Epoch: uint64(shards[0]) + 1})
				shards = shards[1:]
			}
		}
		plan := compute(t, in)
		if len(plan.Moves) != 0 {
			t.Fatalf("a balanced assignment gave moves %v", plan.Moves)
		}
		if want := "balanced"; in.TotalShards > 0 && plan.Reason != want {
			t.Fatalf("reason %q, want %q", plan.Reason, want)
		}
	})
}

// (5) A naive reference — maps, rationals, a linear scan for every choice, the rules
// as the package documentation states them — makes the same plans, and so reaches
// the same loads.
func TestPropertyMatchesNaive(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genCluster(t, rapid.Bool().Draw(t, "huge"))
		if got, want := compute(t, in), naivePlan(in); !reflect.DeepEqual(got.Moves, want.Moves) {
			t.Fatalf("plans differ\n  fast %v\n naive %v", got.Moves, want.Moves)
		}
		in.MaxMoves = max(in.MaxMoves, 1)
		rounds := in.TotalShards/in.MaxMoves + 3
		naive := func(_ *rapid.T, in Input) Plan { return naivePlan(in) }
		fast, slow := converge(t, in, rounds, false, compute), converge(t, in, rounds, false, naive)
		if lf, ls := loads(fast), loads(slow); !reflect.DeepEqual(lf, ls) {
			t.Fatalf("converged loads differ: fast %v, naive %v", lf, ls)
		}
	})
}

func loads(in Input) map[string]int {
	out := map[string]int{}
	for _, a := range in.Assignments {
		out[a.Node]++
	}
	return out
}

// naivePlan is the reference: slow, simple, and exact. It assumes valid input.
func naivePlan(in Input) Plan {
	ref := bands(in)
	var holders []string // may hold shards, in ID order
	for _, m := range in.Members {
		if _, ok := ref[m.ID]; ok {
			holders = append(holders, m.ID)
		}
	}
	slices.Sort(holders)
	if in.TotalShards == 0 || len(holders) == 0 {
		return Plan{Reason: "no"}
	}
	owner := map[int]Assignment{}
	load := map[string]int64{}
	owned := map[string][]int{}
	inFlight := 0
	for _, a := range in.Assignments {
		owner[a.Shard] = a
		if a.Phase == Revoking {
			inFlight++
			continue
		}
		if _, ok := ref[a.Node]; ok {
			load[a.Node]++
			owned[a.Node] = append(owned[a.Node], a.Shard)
		}
	}
	for _, id := range holders {
		slices.Sort(owned[id])
	}
	excess := func(id string) *big.Rat { return new(big.Rat).Sub(new(big.Rat).SetInt64(load[id]), ref[id].share) }
	leastLoaded := func() string { // the first in ID order of those furthest below
		best := holders[0]
		for _, id := range holders[1:] {
			if excess(id).Cmp(excess(best)) < 0 {
				best = id
			}
		}
		return best
	}
	// Shards in flight land where the next plan will place them.
	for range inFlight {
		load[leastLoaded()]++
	}
	var moves []Move
	for _, evac := range []bool{true, false} {
		for s := range in.TotalShards {
			a, has := owner[s]
			_, holds := ref[a.Node]
			if (evac && has && a.Phase == Assigned && !holds) || (!evac && !has) {
				to := leastLoaded()
				load[to]++
				m := Move{Shard: s, From: a.Node, FromEpoch: a.Epoch, To: to, Reason: Evacuate}
				if !evac {
					m.Reason = Place
				}
				moves = append(moves, m)
			}
		}
	}
	for budget := in.MaxMoves - inFlight; budget > 0; budget-- {
		from := "" // the last in ID order of those furthest above, with a shard to give
		for _, id := range holders {
			if len(owned[id]) > 0 && (from == "" || excess(id).Cmp(excess(from)) >= 0) {
				from = id
			}
		}
		to := leastLoaded()
		if from == "" || from == to {
			break
		}
		f, r := ref[from], ref[to]
		if !(load[from] > f.ce && load[to] < r.ce) && !(load[to] < r.floor && load[from] > f.floor) {
			break
		}
		s := owned[from][len(owned[from])-1]
		owned[from] = owned[from][:len(owned[from])-1]
		load[from]--
		load[to]++
		moves = append(moves, Move{Shard: s, From: from, FromEpoch: owner[s].Epoch, To: to, Reason: Rebalance})
	}
	reason := "balanced"
	for _, id := range holders {
		if load[id] < ref[id].floor || load[id] > ref[id].ce {
			reason = "stopped short"
		}
	}
	return Plan{Moves: moves, Reason: reason}
}

// Weights near the limit of int64 still give exact shares.
func TestPropertySharesExact(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 6).Draw(t, "members")
		var ms []Member
		for i := range n {
			ms = append(ms, Member{ID: fmt.Sprintf("m%d", i), Weight: rapid.IntRange(0, math.MaxInt64/6).Draw(t, "weight")})
		}
		total := rapid.IntRange(0, MaxShards).Draw(t, "shards")
		shares, err := Shares(total, ms)
		if err != nil {
			t.Fatal(err)
		}
		ref := bands(Input{TotalShards: total, Members: ms})
		sum := 0
		for _, sh := range shares {
			b := ref[sh.ID]
			if int64(sh.Min) != b.floor || int64(sh.Max) != b.ce || sh.Target < sh.Min || sh.Target > sh.Max {
				t.Fatalf("%+v, want [%d, %d] (share %v)", sh, b.floor, b.ce, b.share)
			}
			sum += sh.Target
		}
		if len(shares) > 0 && sum != total {
			t.Fatalf("targets sum to %d, want %d", sum, total)
		}
	})
}

// TestMatchesNaiveSweep compares Compute with the reference on 5,000 skewed
// clusters from a fixed seed, on every run. rapid's default 100 cases missed a
// heap-order bug that needs two members above and two below their share after a
// placement; this seed first shows it at case 873, and being fixed it keeps any
// failure reproducible.
func TestMatchesNaiveSweep(t *testing.T) {
	const cases = 5000
	rng := rand.New(rand.NewPCG(3, 2026))
	for c := range cases {
		in := sweepCluster(rng)
		got, err := Compute(in)
		if err != nil {
			t.Fatalf("case %d: %v", c, err)
		}
		if want := naivePlan(in); !reflect.DeepEqual(got.Moves, want.Moves) {
			t.Fatalf("case %d: %#v\nplans differ\n  fast %v\n naive %v", c, in, got.Moves, want.Moves)
		}
	}
}

// sweepCluster is genCluster's shape without rapid: mostly alive members, a hoarder,
// some unassigned, few revoking.
func sweepCluster(rng *rand.Rand) Input {
	n := 1 + rng.IntN(8)
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{ID: fmt.Sprintf("n%d", i), Weight: rng.IntN(5)}
		if rng.IntN(6) == 0 {
			ms[i].State = MemberState(1 + rng.IntN(3))
		}
	}
	hoarder, hoard := ms[rng.IntN(n)].ID, rng.IntN(10)
	unassigned, revoking := rng.IntN(6), rng.IntN(3)
	in := Input{TotalShards: rng.IntN(61), Members: ms, MaxMoves: rng.IntN(14) - 1}
	for s := range in.TotalShards {
		if rng.IntN(10) < unassigned {
			continue
		}
		a := Assignment{Shard: s, Node: ms[rng.IntN(n)].ID, Epoch: 1 + rng.Uint64N(1<<40)}
		switch k := rng.IntN(10 + hoard); {
		case k >= 10:
			a.Node = hoarder
		case k == 0:
			a.Node = "ghost"
		}
		if rng.IntN(40) < revoking {
			a.Phase = Revoking
		}
		in.Assignments = append(in.Assignments, a)
	}
	return in
}

// A fresh cluster gets exactly the largest-remainder targets, as the documentation
// says; at any size, so also for 20,000 shards over 50 members of mixed weights.
func TestPropertyFreshClusterGetsTargets(t *testing.T) {
	check := func(t interface{ Fatalf(string, ...any) }, in Input) {
		plan, err := Compute(in)
		if err != nil {
			t.Fatalf("%v", err)
		}
		got := map[string]int{}
		for _, m := range plan.Moves {
			got[m.To]++
		}
		shares, _ := Shares(in.TotalShards, in.Members)
		for _, sh := range shares {
			if got[sh.ID] != sh.Target {
				t.Fatalf("%s got %d shards, target %d (%+v)", sh.ID, got[sh.ID], sh.Target, sh)
			}
		}
	}
	rapid.Check(t, func(t *rapid.T) {
		in := Input{TotalShards: 60 - rapid.IntRange(0, 60).Draw(t, "shards")}
		for i := range 8 - rapid.IntRange(0, 7).Draw(t, "members") {
			in.Members = append(in.Members, Member{ID: fmt.Sprintf("m%d", i), Weight: rapid.IntRange(0, 4).Draw(t, "weight")})
		}
		check(t, in)
	})
	big := Input{TotalShards: 20000}
	for i := range 50 {
		big.Members = append(big.Members, Member{ID: nodeID(i), Weight: 1 + i%4})
	}
	check(t, big)
}
