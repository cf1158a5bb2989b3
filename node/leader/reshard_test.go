package leader

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/node/membership"
	"github.com/discluster/discluster/node/rpc"
	"github.com/discluster/discluster/shard"
)

// A reshard's generation, as Plan sees it: gen 2 of total shards, started at t0.

func (w *world) reshard(total int) {
	w.in.Reshard = &fsm.Reshard{Gen: 2, Total: total, StartedAt: t0.UnixNano()}
}

// placed gives the reshard's table its shards round-robin over nodes, at epoch 20.
func (w *world) placed(nodes ...string) {
	w.in.ReshardAssignments = nil
	for s := range w.in.Reshard.Total {
		w.in.ReshardAssignments = append(w.in.ReshardAssignments,
			fsm.Assignment{Shard: s, Node: nodes[s%len(nodes)], Epoch: 20, Phase: fsm.Assigned, Gen: 2})
	}
}

func (w *world) setMember(id string, f func(*fsm.Member)) {
	for i := range w.in.Members {
		if w.in.Members[i].ID == id {
			f(&w.in.Members[i])
		}
	}
}

// assignsOf and revokesOf are a decision's moves in generation gen (0 and 1 both name
// the first).
func assignsOf(d Decision, gen uint64) []fsm.AssignMove {
	var out []fsm.AssignMove
	for _, c := range commands[fsm.Assign](d) {
		if genOf(c.Gen) == genOf(gen) {
			out = append(out, c.Moves...)
		}
	}
	return out
}

func revokesOf(d Decision, gen uint64) []fsm.RevokeMove {
	var out []fsm.RevokeMove
	for _, c := range commands[fsm.Revoke](d) {
		if genOf(c.Gen) == genOf(gen) {
			out = append(out, c.Moves...)
		}
	}
	return out
}

func perNode(moves []fsm.AssignMove) map[string]int {
	out := map[string]int{}
	for _, m := range moves {
		out[m.To]++
	}
	return out
}

// The new generation is placed beside the current one, over the same nodes, each
// within ±1 of its weighted share of the new count; the current generation is left
// as it is, and nothing goes to a draining, weight-0 or failed node.
func TestReshardPlacedBesideTheCurrentGeneration(t *testing.T) {
	w := newWorld()
	w.reshard(9)
	d := w.plan(t, t0.Add(lease/2))
	moves := assignsOf(d, 2)
	if len(moves) != 9 || len(assignsOf(d, 1)) != 0 || len(commands[fsm.Revoke](d)) != 0 {
		t.Fatalf("want the 9 shards of generation 2 placed and nothing else: %+v", d.Writes)
	}
	if got := perNode(moves); !maps.Equal(got, map[string]int{"a": 3, "b": 3, "c": 3}) {
		t.Fatalf("placed %v, want 3 each", got)
	}
	for _, m := range moves {
		if m.ExpectNode != "" || m.ExpectEpoch != 0 {
			t.Fatalf("a placement of an unassigned shard expects an owner: %+v", m)
		}
	}

	// Weights: a counts twice.
	w = newWorld()
	w.setMember("a", func(m *fsm.Member) { m.Weight = 2 })
	w.reshard(10)
	got := perNode(assignsOf(w.plan(t, t0.Add(lease/2)), 2))
	for id, weight := range map[string]float64{"a": 2, "b": 1, "c": 1} {
		if share := 10 * weight / 4; math.Abs(float64(got[id])-share) > 1 {
			t.Errorf("%s holds %d of the new generation, its weighted share is %.1f", id, got[id], share)
		}
	}

	// c draining, b weight 0: all on a.
	w = newWorld()
	w.setMember("c", func(m *fsm.Member) { m.State = fsm.Draining })
	w.setMember("b", func(m *fsm.Member) { m.Weight = 0 })
	w.gossip("b", membership.StatusAlive)
	for i := range w.in.Gossip {
		if w.in.Gossip[i].Name == "b" {
			w.in.Gossip[i].Weight = 0
		}
	}
	w.reshard(5)
	if got := perNode(assignsOf(w.plan(t, t0.Add(lease/2)), 2)); !maps.Equal(got, map[string]int{"a": 5}) {
		t.Fatalf("with c draining and b of weight 0, placed %v, want all 5 on a", got)
	}
}

// A node that fails during a reshard loses its shards of both generations by the
// same rule: revoked at once, assigned elsewhere only once its lease must have run
// out, each move naming its old owner; the new generation's failover event says which
// generation.
func TestReshardShardsFailOverLikeTheCurrentOnes(t *testing.T) {
	w := newWorld()
	w.reshard(9)
	w.placed("a", "b", "c")
	w.in.Grants.LastRenew["a"], w.in.Grants.LastRenew["c"] = t0.Add(lease), t0.Add(lease)
	d := w.plan(t, t0.Add(lease+time.Millisecond))
	if !slices.Equal(failed(d), []string{"b"}) {
		t.Fatalf("failed %v, want [b]", failed(d))
	}
	cur, next := revokesOf(d, 1), revokesOf(d, 2)
	if len(cur) != 2 || len(next) != 3 {
		t.Fatalf("revoked %d of the current and %d of the new generation, want b's 2 and 3: %+v", len(cur), len(next), d.Writes)
	}
	for _, m := range next {
		if m.ExpectNode != "b" || m.ExpectEpoch != 20 {
			t.Fatalf("a revocation of the new generation does not name b at epoch 20: %+v", m)
		}
	}
	if len(commands[fsm.Assign](d)) != 0 {
		t.Fatalf("b's shards were placed before its lease ran out: %+v", commands[fsm.Assign](d))
	}
	if commands[fsm.SwitchReshard](d) != nil {
		t.Fatal("switched while shards were being revoked")
	}

	// The state after those writes: b failed, its shards of both generations revoking.
	w.member("b", fsm.Failed, t0.Add(lease))
	w.gossip("b", membership.StatusFailed)
	w.revoked("b")
	for i := range w.in.ReshardAssignments {
		if w.in.ReshardAssignments[i].Node == "b" {
			w.in.ReshardAssignments[i].Phase = fsm.Revoking
		}
	}
	w.in.Grants.FailedAt["b"] = t0.Add(lease)
	if d := w.plan(t, fenceAt(w.in, "b")); len(commands[fsm.Assign](d)) != 0 {
		t.Fatalf("assigned at the fence, not after it: %+v", d.Writes)
	}
	d = w.plan(t, fenceAt(w.in, "b").Add(time.Millisecond))
	next2 := assignsOf(d, 2)
	if len(next2) != 3 || len(assignsOf(d, 1)) != 2 {
		t.Fatalf("after the fence: %d of the new generation and %d of the current reassigned, want 3 and 2: %+v", len(next2), len(assignsOf(d, 1)), d.Writes)
	}
	for _, m := range next2 {
		if m.ExpectNode != "b" || m.ExpectEpoch != 20 || (m.To != "a" && m.To != "c") {
			t.Fatalf("a failover move of the new generation: %+v", m)
		}
	}
	var gens []uint64
	for _, w := range d.Writes {
		for _, e := range w.Events {
			if e.Kind == event.Failover {
				gens = append(gens, e.Gen)
			}
		}
	}
	if slices.Sort(gens); !slices.Equal(gens, []uint64{0, 2}) {
		t.Fatalf("failover events name generations %v, want the current (0) and the new (2)", gens)
	}
}

// The new generation's planned moves wait for its switch: an operator's drain moves
// the current generation's shards off the node, not the new one's, and a node that
// joins gets no share of the new generation by rebalancing until then. Placement
// still avoids the draining node. A node that leaves moves both at once.
func TestReshardPlannedMovesWaitForTheSwitch(t *testing.T) {
	w := newWorld()
	w.reshard(9)
	w.placed("a", "b", "c")
	w.setMember("c", func(m *fsm.Member) { m.State = fsm.Draining })
	w.in.Drained = map[string]int64{"c": t0.UnixNano()} // an operator's drain
	w.in.Members = append(w.in.Members, fsm.Member{ID: "d", State: fsm.Alive, Weight: 1, RaftAddr: "d:1", GossipAddr: "d:2", HTTPAddr: "d:3"})
	w.in.Gossip = append(w.in.Gossip, membership.Member{Name: "d", Status: membership.StatusAlive, Weight: 1, RPCAddr: "d:1", GossipAddr: "d:2", HTTPAddr: "d:3"})
	w.in.Grants.LastRenew["d"] = t0
	d := w.plan(t, t0.Add(lease/2))
	if got := revokesOf(d, 1); len(got) == 0 {
		t.Fatalf("the drain of c moves none of the current generation: %+v", d.Writes)
	}
	if got := revokesOf(d, 2); len(got) != 0 {
		t.Fatalf("planned moves of the new generation before its switch: %+v", got)
	}

	// A node that leaves (its own drain, no operator's) cannot wait for the switch:
	// its new shards move at once, with its current ones.
	delete(w.in.Drained, "c")
	d = w.plan(t, t0.Add(lease/2))
	if got := revokesOf(d, 2); len(got) != 3 || got[0].ExpectNode != "c" {
		t.Fatalf("the new generation's shards of a leaving node: revoked %+v, want c's 3", got)
	}
	if got := revokesOf(d, 1); len(got) == 0 || got[0].ExpectNode != "c" {
		t.Fatalf("the current generation's shards of a leaving node: revoked %+v", got)
	}
	w.in.Drained["c"] = t0.UnixNano()

	// A node whose token Discord rejects cannot warm its shards: they move.
	w.in.Grants.Unfit["b"] = "Discord rejected the bot token"
	if got := revokesOf(w.plan(t, t0.Add(lease/2)), 2); len(got) != 3 || got[0].ExpectNode != "b" {
		t.Fatalf("the new generation's shards of an unfit node: revoked %+v, want b's 3", got)
	}
	delete(w.in.Grants.Unfit, "b")

	// A shard of the new generation unassigned meanwhile (released): placed, not on c.
	w.in.ReshardAssignments = slices.DeleteFunc(w.in.ReshardAssignments, func(a fsm.Assignment) bool { return a.Shard == 2 })
	d = w.plan(t, t0.Add(lease/2))
	if got := assignsOf(d, 2); len(got) != 1 || got[0].Shard != 2 || got[0].To == "c" {
		t.Fatalf("the unassigned shard of the new generation: %+v", got)
	}
}

// The switch is written only once every shard of the new generation is assigned,
// its owner active, and warm under that very assignment; then with its duration.
func TestReshardSwitchesOnlyWhenEveryShardIsWarm(t *testing.T) {
	w := newWorld()
	w.reshard(6)
	w.placed("a", "b", "c")
	warm := func(except int, epoch uint64) map[int]uint64 {
		m := map[int]uint64{}
		for s := range 6 {
			if s != except {
				m[s] = epoch
			}
		}
		return m
	}
	at := t0.Add(lease / 2)
	for _, tc := range []struct {
		name string
		warm map[int]uint64
	}{
		{"none warm", nil},
		{"all but shard 4", warm(4, 20)},
		{"all, under another assignment", warm(-1, 19)},
	} {
		w.in.Warm = tc.warm
		if d := w.plan(t, at); len(commands[fsm.SwitchReshard](d)) != 0 {
			t.Fatalf("%s: switched", tc.name)
		}
	}
	w.in.Warm = warm(-1, 20)
	w.in.ReshardAssignments[3].Phase = fsm.Revoking
	if d := w.plan(t, at); len(commands[fsm.SwitchReshard](d)) != 0 {
		t.Fatal("switched with a shard being revoked")
	}
	w.in.ReshardAssignments[3].Phase = fsm.Assigned
	w.in.ReshardAssignments = w.in.ReshardAssignments[:5]
	if d := w.plan(t, at); len(commands[fsm.SwitchReshard](d)) != 0 {
		t.Fatal("switched with a shard unassigned")
	}
	w.placed("a", "b", "c")

	// b fails in this very pass: its warm shards are revoked, no switch.
	w.in.Grants.LastRenew["a"], w.in.Grants.LastRenew["c"] = t0.Add(lease), t0.Add(lease)
	if d := w.plan(t, t0.Add(lease+time.Millisecond)); len(failed(d)) != 1 || len(commands[fsm.SwitchReshard](d)) != 0 {
		t.Fatalf("a failing owner: failed %v, switch %v", failed(d), commands[fsm.SwitchReshard](d))
	}

	w.in.Grants.LastRenew["b"] = t0.Add(lease)
	d := w.plan(t, t0.Add(lease+time.Millisecond))
	sw := commands[fsm.SwitchReshard](d)
	if len(sw) != 1 || sw[0].Gen != 2 {
		t.Fatalf("every shard warm: switch %+v, writes %+v", sw, d.Writes)
	}
	if k := kinds(d); !slices.Equal(k, []event.Kind{event.ReshardSwitched}) {
		t.Fatalf("events %v", k)
	}
	if e := d.Writes[len(d.Writes)-1].Events[0]; e.Gen != 2 || e.Duration != lease+time.Millisecond || !strings.Contains(e.Cause, "from 6 to 6") {
		t.Fatalf("the switch's event: %+v", e)
	}
}

// After a switch the current generation is no longer the first: every table
// command of the plan names it, or the state machine would take it for stale.
func TestWritesNameTheCurrentGeneration(t *testing.T) {
	w := newWorld()
	w.in.Gen = 2
	w.in.Assignments = w.in.Assignments[:5]
	d := w.plan(t, t0.Add(lease/2))
	as := commands[fsm.Assign](d)
	if len(as) != 1 || as[0].Gen != 2 || len(as[0].Moves) != 1 || as[0].Moves[0].Shard != 5 {
		t.Fatalf("placing shard 5 of generation 2: %+v", as)
	}
	w.in.Assignments = append(w.in.Assignments, fsm.Assignment{Shard: 5, Node: "c", Epoch: 10})
	w.setMember("c", func(m *fsm.Member) { m.State = fsm.Draining })
	if rv := commands[fsm.Revoke](w.plan(t, t0.Add(lease/2))); len(rv) != 1 || rv[0].Gen != 2 {
		t.Fatalf("a drain's revocations in generation 2: %+v", rv)
	}
}

// discord is a fake GET /gateway/bot for the leader: a recommended count and a
// session start budget that tests change.
type discord struct {
	mu          sync.Mutex
	shards      int
	remaining   int
	unreachable bool
}

func (d *discord) gatewayBot(context.Context) (shard.GatewayBot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.unreachable {
		return shard.GatewayBot{}, errors.New("no Discord here")
	}
	return shard.GatewayBot{URL: "wss://gateway.invalid", Shards: d.shards,
		SessionStartLimit: shard.SessionStartLimit{Total: 1000, Remaining: d.remaining, ResetAfter: 3_600_000, MaxConcurrency: 1}}, nil
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func budgetKnown(l *Leader) func() bool {
	return func() bool { b := l.Budget(); return b != nil && b.Known }
}

func eventsOf(log *event.Log, k event.Kind) []event.Event {
	var out []event.Event
	for _, e := range log.List() {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// A reshard is refused, with the numbers, while one runs, for the count the cluster
// runs, out of range, when the budget cannot cover the new shards' identifies plus
// the reserve, and when the budget is unknown; a start and a cancel are events.
func TestReshardRefusals(t *testing.T) {
	dc := &discord{shards: 6, remaining: 1000}
	log := event.NewLog("a", nil)
	l, f, _ := soloLeaderWith(t, soloOptions{gatewayBot: dc.gatewayBot, notify: log})
	waitUntil(t, "the budget read", budgetKnown(l))
	ctx := context.Background()
	reserve := l.Budget().Reserve // 5% of 1000
	for _, tc := range []struct {
		shards int
		want   string
	}{
		{4, "runs 4 shards already"},
		{0, "out of range"},
		{fsm.MaxShards + 1, "out of range"},
		{1000 - reserve + 1, fmt.Sprintf("needs %d session starts plus the reserve of %d; 1000 of 1000 are left", 1000-reserve+1, reserve)},
	} {
		_, err := l.StartReshard(ctx, tc.shards, false, "test")
		if !errors.Is(err, api.ErrRefused) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%d shards: %v, want a refusal saying %q", tc.shards, err, tc.want)
		}
	}
	if _, ok := f.Reshard(); ok {
		t.Fatal("a refused reshard started")
	}
	if _, err := l.CancelReshard("test"); !errors.Is(err, api.ErrRefused) || !strings.Contains(err.Error(), "no reshard runs") {
		t.Fatalf("cancel with none running: %v", err)
	}

	r, err := l.StartReshard(ctx, 1000-reserve, false, "test")
	if err != nil || r.Gen != 2 || r.Total != 1000-reserve {
		t.Fatalf("a reshard the budget just covers: %+v, %v", r, err)
	}
	if _, err := l.StartReshard(ctx, 8, false, "test"); !errors.Is(err, api.ErrRefused) || !strings.Contains(err.Error(), "runs since") {
		t.Fatalf("a second reshard: %v", err)
	}
	if c, err := l.CancelReshard("test"); err != nil || c.Gen != 2 {
		t.Fatalf("cancel: %+v, %v", c, err)
	}
	if _, ok := f.Reshard(); ok {
		t.Fatal("cancelled, still running")
	}

	// auto: Discord's recommendation.
	r, err = l.StartReshard(ctx, 0, true, "test")
	if err != nil || r.Total != 6 || r.Gen != 2 {
		t.Fatalf("auto: %+v, %v", r, err)
	}
	if _, err := l.CancelReshard("test"); err != nil {
		t.Fatal(err)
	}
	dc.mu.Lock()
	dc.shards = 4
	dc.mu.Unlock()
	if _, err := l.StartReshard(ctx, 0, true, "test"); !errors.Is(err, api.ErrRefused) || !strings.Contains(err.Error(), "Discord recommends 4") {
		t.Fatalf("auto when Discord recommends the current count: %v", err)
	}
	if k := len(eventsOf(log, event.ReshardStarted)); k != 2 {
		t.Fatalf("%d reshard_started events, want 2", k)
	}
	if c := eventsOf(log, event.ReshardCancelled); len(c) != 2 || c[0].Gen != 2 {
		t.Fatalf("reshard_cancelled events: %+v", c)
	}

	// No budget known: refused, saying so.
	dc2 := &discord{unreachable: true}
	l2, _, _ := soloLeaderWith(t, soloOptions{gatewayBot: dc2.gatewayBot})
	waitUntil(t, "the second leader's budget note", func() bool { b := l2.Budget(); return b != nil && b.Note != "" })
	if _, err := l2.StartReshard(ctx, 8, false, "test"); !errors.Is(err, api.ErrRefused) || !strings.Contains(err.Error(), "not known") {
		t.Fatalf("with no budget known: %v", err)
	}
}

// warmOwners answers the leader's poll like the owners would: every shard of the
// reshard's generation warm under its assignment, except those cold says.
type warmOwners struct {
	f     *fsm.FSM
	polls atomic.Int64
	cold  sync.Map // shard → true
}

func (o *warmOwners) localShards(_ context.Context, m fsm.Member) ([]rpc.LocalShard, error) {
	o.polls.Add(1)
	r, ok := o.f.Reshard()
	if !ok {
		return nil, nil
	}
	var out []rpc.LocalShard
	for _, a := range o.f.ShardsOfIn(r.Gen, m.ID) {
		_, cold := o.cold.Load(a.Shard)
		out = append(out, rpc.LocalShard{Info: shard.Info{ShardID: a.Shard}, Epoch: a.Epoch, Gen: r.Gen, Warm: !cold})
	}
	return out, nil
}

// The leader learns which of the reshard's shards are warm by asking their owners,
// and switches once all of them are: not while one is cold.
func TestReshardSwitchesOnceEveryOwnerReportsWarm(t *testing.T) {
	dc := &discord{shards: 4, remaining: 1000}
	log := event.NewLog("a", nil)
	var owners *warmOwners
	l, f, clk := soloLeaderWith(t, soloOptions{gatewayBot: dc.gatewayBot, notify: log,
		localShards: func(ctx context.Context, m fsm.Member) ([]rpc.LocalShard, error) { return owners.localShards(ctx, m) }})
	owners = &warmOwners{f: f}
	owners.cold.Store(7, true)
	waitUntil(t, "the budget read", budgetKnown(l))
	if _, err := l.StartReshard(context.Background(), 8, false, "test"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the new generation placed", func() bool { return len(f.AssignmentsIn(2)) == 8 })
	from := owners.polls.Load()
	waitUntil(t, "five polls of the owners", func() bool { return owners.polls.Load() >= from+5 })
	if f.Generation() != 1 {
		t.Fatal("switched with shard 7 cold")
	}
	clk.Add(42 * time.Second)
	owners.cold.Delete(7)
	waitUntil(t, "the switch", func() bool { return len(eventsOf(log, event.ReshardSwitched)) > 0 })
	if f.Generation() != 2 {
		t.Fatalf("switched, and the state is at generation %d", f.Generation())
	}
	if c := f.Config(); c.TotalShards != 8 {
		t.Fatalf("after the switch the cluster runs %d shards", c.TotalShards)
	}
	if len(f.Assignments()) != 8 {
		t.Fatalf("the current table holds %d assignments, want the new generation's 8", len(f.Assignments()))
	}
	sw := eventsOf(log, event.ReshardSwitched)
	if len(sw) != 1 || sw[0].Gen != 2 || sw[0].Duration != 42*time.Second {
		t.Fatalf("reshard_switched events: %+v", sw)
	}
	// No reshard runs: a poll asks no one.
	polls := owners.polls.Load()
	if w := l.pollWarm(context.Background()); w.gen != 0 || len(w.shards) != 0 || owners.polls.Load() != polls {
		t.Fatalf("with no reshard running, a poll found %+v and asked %d owners", w, owners.polls.Load()-polls)
	}
}

// The leader starts a reshard on its own when Discord's recommendation reaches the
// threshold, and when a node reports a shard closed with 4011 (to Discord's count,
// or twice the current one when Discord recommends no more).
func TestAutomaticReshards(t *testing.T) {
	dc := &discord{shards: 6, remaining: 1000}
	log := event.NewLog("a", nil)
	l, f, _ := soloLeaderWith(t, soloOptions{gatewayBot: dc.gatewayBot, notify: log, threshold: 1.5})
	waitUntil(t, "the threshold's reshard", func() bool { return len(eventsOf(log, event.ReshardStarted)) > 0 })
	if r, _ := f.Reshard(); r.Total != 6 {
		t.Fatalf("the threshold started a reshard to %d, want Discord's 6", r.Total)
	}
	if s := eventsOf(log, event.ReshardStarted); len(s) != 1 || !strings.Contains(s[0].Cause, "--reshard-auto-threshold") {
		t.Fatalf("reshard_started: %+v", s)
	}
	if _, err := l.CancelReshard("test"); err != nil {
		t.Fatal(err)
	}

	// Below the threshold, and a 4011.
	dc2 := &discord{shards: 4, remaining: 1000}
	log2 := event.NewLog("a", nil)
	l2, f2, _ := soloLeaderWith(t, soloOptions{gatewayBot: dc2.gatewayBot, notify: log2, threshold: 1.5})
	waitUntil(t, "the budget read", budgetKnown(l2))
	l2.autoReshard(context.Background(), l2.cur.Load())
	if _, ok := f2.Reshard(); ok {
		t.Fatal("a reshard started below the threshold")
	}
	if _, err := l2.GrantLease(context.Background(), rpc.RenewArgs{Node: "a", ShardingRequired: 1}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the 4011's reshard", func() bool { return len(eventsOf(log2, event.ReshardStarted)) > 0 })
	if r, _ := f2.Reshard(); r.Total != 8 {
		t.Fatalf("a 4011 with Discord recommending the current 4 started a reshard to %d, want 8", r.Total)
	}
	if s := eventsOf(log2, event.ReshardStarted); len(s) != 1 || !strings.Contains(s[0].Cause, "4011") {
		t.Fatalf("reshard_started: %+v", s)
	}
}
