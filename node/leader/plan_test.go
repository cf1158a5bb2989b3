package leader

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/node/membership"
)

// The leader's rules, on the real code path, with the clock in the test's hands: no
// cluster, no waiting.

var t0 = time.Unix(1_000_000, 0)

const lease = 5 * time.Second

// world is a cluster as Plan sees it: three alive nodes, a-b-c, a the leader, six
// shards, two each.
type world struct{ in Input }

func newWorld() *world {
	w := &world{in: Input{Now: t0, Self: "a", Lease: lease, Established: t0.Add(-time.Hour), MaxMoves: 16,
		TotalShards: 6, Grants: newGrants(), InRaft: map[string]bool{}}}
	for i, id := range []string{"a", "b", "c"} {
		w.in.Members = append(w.in.Members, fsm.Member{ID: id, State: fsm.Alive, Weight: 1, RaftAddr: id + ":1", GossipAddr: id + ":2", HTTPAddr: id + ":3"})
		w.in.Gossip = append(w.in.Gossip, membership.Member{Name: id, Status: membership.StatusAlive, Weight: 1, RPCAddr: id + ":1", GossipAddr: id + ":2", HTTPAddr: id + ":3"})
		w.in.Grants.LastRenew[id] = t0
		w.in.InRaft[id] = true
		for k := range 2 {
			w.in.Assignments = append(w.in.Assignments, fsm.Assignment{Shard: 2*i + k, Node: id, Epoch: 10, Phase: fsm.Assigned})
		}
	}
	return w
}

func (w *world) gossip(id string, s membership.Status) {
	for i := range w.in.Gossip {
		if w.in.Gossip[i].Name == id {
			w.in.Gossip[i].Status = s
		}
	}
}

func (w *world) member(id string, s fsm.MemberState, since time.Time) {
	for i := range w.in.Members {
		if w.in.Members[i].ID == id {
			w.in.Members[i].State, w.in.Members[i].Since = s, since.UnixNano()
		}
	}
}

func (w *world) revoked(id string) {
	for i := range w.in.Assignments {
		if w.in.Assignments[i].Node == id {
			w.in.Assignments[i].Phase = fsm.Revoking
		}
	}
}

func (w *world) plan(t *testing.T, at time.Time) Decision {
	t.Helper()
	w.in.Now = at
	d, err := Plan(w.in)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func commands[C fsm.Command](d Decision) []C {
	var out []C
	for _, w := range d.Writes {
		if c, ok := w.Cmd.(C); ok {
			out = append(out, c)
		}
	}
	return out
}

func kinds(d Decision) []event.Kind {
	var out []event.Kind
	for _, w := range d.Writes {
		for _, e := range w.Events {
			out = append(out, e.Kind)
		}
	}
	return out
}

func TestSteadyClusterPlansNothing(t *testing.T) {
	w := newWorld()
	if d := w.plan(t, t0.Add(lease/2)); len(d.Writes) != 0 {
		t.Fatalf("a balanced cluster with fresh leases got writes: %+v", d.Writes)
	}
}

// A node that gossip still sees but that renews no lease (paused, or cut off from
// the leader alone) is failed once it has been silent for a lease, and its shards
// are revoked in the same plan, never placed on it.
func TestSilentNodeFailsAfterOneLease(t *testing.T) {
	w := newWorld()
	if d := w.plan(t, t0.Add(lease)); len(failed(d)) != 0 {
		t.Fatalf("failed at exactly one lease of silence: %v", failed(d))
	}
	w.in.Grants.LastRenew["a"], w.in.Grants.LastRenew["c"] = t0.Add(lease), t0.Add(lease)
	d := w.plan(t, t0.Add(lease+time.Millisecond))
	if got := failed(d); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("failed %v, want [b]", got)
	}
	rv := commands[fsm.Revoke](d)
	if len(rv) != 1 || len(rv[0].Moves) != 2 || rv[0].Moves[0].ExpectNode != "b" {
		t.Fatalf("revocations %+v, want b's two shards", rv)
	}
	if as := commands[fsm.Assign](d); len(as) != 0 {
		t.Fatalf("b's shards were placed before its lease ran out: %+v", as)
	}
	if w := d.Writes[0]; w.Failed != "b" || !strings.Contains(w.Events[0].Cause, "no lease renewal") {
		t.Fatalf("the failure is not recorded as b's, with its cause: %+v", w)
	}
}

// A new leader waits one lease from its election before failing anyone for
// silence: it cannot know when the previous leader last renewed them.
func TestNewLeaderGivesOneLeaseOfGrace(t *testing.T) {
	w := newWorld()
	w.in.Established = t0
	w.in.Grants = newGrants() // a new leader remembers no grants
	if d := w.plan(t, t0.Add(lease-time.Millisecond)); len(d.Writes) != 0 {
		t.Fatalf("inside its grace the new leader wrote %+v", d.Writes)
	}
	w.gossip("c", membership.StatusFailed)
	if d := w.plan(t, t0.Add(lease/2)); len(failed(d)) != 0 {
		t.Fatalf("inside its grace the new leader believed gossip's verdict: %v", failed(d))
	}
	w.in.Grants.LastRenew["a"], w.in.Grants.LastRenew["b"] = t0.Add(lease), t0.Add(lease)
	if d := w.plan(t, t0.Add(lease+time.Millisecond)); !slices.Equal(failed(d), []string{"c"}) {
		t.Fatalf("after its grace: failed %v, want [c] (gossip's verdict)", failed(d))
	}
}

// A crash verdict (heartbeat failed, port refused) needs no grace and no lease wait.
func TestCrashVerdictFailsAtOnce(t *testing.T) {
	w := newWorld()
	w.in.Established = t0
	w.in.Grants.Crashed["b"] = t0.Add(time.Millisecond)
	d := w.plan(t, t0.Add(2*time.Millisecond))
	if got := failed(d); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("failed %v, want [b]", got)
	}
	if !slices.Equal(d.TakenCrashed, []string{"b"}) {
		t.Fatalf("the verdict was not used up: %v", d.TakenCrashed)
	}
}

// The shards of a failed node are reassigned only once its last lease must have run
// out (the lease and a tenth from the last grant), or at once when its process is
// known gone; each move names the old owner, so a stale plan cannot steal a shard.
func TestFailedNodesShardsWaitForTheFence(t *testing.T) {
	w := newWorld()
	w.member("b", fsm.Failed, t0)
	w.revoked("b")
	w.gossip("b", membership.StatusFailed)
	w.in.Grants.FailedAt["b"] = t0
	w.in.Grants.LastRenew["b"] = t0
	for _, at := range []time.Duration{0, lease, lease + lease/10} {
		w.in.Grants.LastRenew["a"], w.in.Grants.LastRenew["c"] = t0.Add(at), t0.Add(at)
		if as := commands[fsm.Assign](w.plan(t, t0.Add(at))); len(as) != 0 {
			t.Fatalf("%v after the last grant, b's shards were reassigned: %+v", at, as)
		}
	}
	at := lease + lease/10 + time.Millisecond
	w.in.Grants.LastRenew["a"], w.in.Grants.LastRenew["c"] = t0.Add(at), t0.Add(at)
	d := w.plan(t, t0.Add(at))
	as := commands[fsm.Assign](d)
	if len(as) != 1 || len(as[0].Moves) != 2 {
		t.Fatalf("after the fence: %+v, want b's two shards assigned", as)
	}
	for _, m := range as[0].Moves {
		if m.ExpectNode != "b" || m.ExpectEpoch != 10 || m.To == "b" {
			t.Fatalf("move %+v does not name its old owner, or goes back to it", m)
		}
	}
	if fo := failoverEvents(d); len(fo) != 1 || fo[0].Subject != "b" || fo[0].Duration != at.Round(time.Millisecond) || fo[0].Reason != event.ReasonLeaseExpired {
		t.Fatalf("failover events %+v", fo)
	}

	// Known gone: no wait at all.
	w.in.Grants.Refused["b"] = true
	d = w.plan(t, t0.Add(time.Millisecond))
	if as := commands[fsm.Assign](d); len(as) != 1 {
		t.Fatalf("a node whose port refused still fenced its shards: %+v", d.Writes)
	}
	if fo := failoverEvents(d); len(fo) != 1 || fo[0].Reason != event.ReasonProcessGone {
		t.Fatalf("failover events of a node whose port refused: %+v", fo)
	}
}

func failoverEvents(d Decision) []event.Event {
	var fo []event.Event
	for _, wr := range d.Writes {
		for _, e := range wr.Events {
			if e.Kind == event.Failover {
				fo = append(fo, e)
			}
		}
	}
	return fo
}

// A failed node comes back only on proof that a process runs there again (it asked
// for a lease), and only once its shards are gone; gossip alone is not enough.
func TestFailedNodeComesBackOnlyWhenItAsks(t *testing.T) {
	w := newWorld()
	w.member("b", fsm.Failed, t0)
	var rest []fsm.Assignment
	for _, a := range w.in.Assignments {
		if a.Node != "b" {
			rest = append(rest, a)
		}
	}
	w.in.Assignments = rest
	if d := w.plan(t, t0.Add(time.Millisecond)); slices.Contains(kinds(d), event.NodeBack) {
		t.Fatal("gossip alone brought a failed node back")
	}
	w.in.Grants.AskedWhileFailed["b"] = true
	d := w.plan(t, t0.Add(time.Millisecond))
	if !slices.Contains(kinds(d), event.NodeBack) || d.Writes[0].Back != "b" {
		t.Fatalf("a failed node that asked for a lease did not come back: %+v", d.Writes)
	}
}

// A node that left is removed once it holds nothing; one that left holding shards
// (its drain did not finish) is failed, after the grace, so its shards move.
func TestLeftNodeRemovedOrFailed(t *testing.T) {
	w := newWorld()
	w.gossip("c", membership.StatusLeft)
	w.in.Grants.LastRenew["a"], w.in.Grants.LastRenew["b"] = t0, t0
	d := w.plan(t, t0.Add(time.Millisecond))
	if got := failed(d); !slices.Equal(got, []string{"c"}) || !strings.Contains(d.Writes[0].Events[0].Cause, "left while holding shards") {
		t.Fatalf("c left holding shards: failed %v (%+v)", got, d.Writes)
	}
	w = newWorld()
	w.in.Assignments = w.in.Assignments[:4]
	w.in.TotalShards = 4
	w.gossip("c", membership.StatusLeft)
	d = w.plan(t, t0.Add(time.Millisecond))
	if rm := commands[fsm.RemoveMember](d); len(rm) != 1 || rm[0].ID != "c" {
		t.Fatalf("c left holding nothing: %+v, want it removed", d.Writes)
	}
}

// A new member is recorded once it is in Raft and, in the same plan, given its
// share: the plan sees its own writes. Before it is in Raft (a stranger in the gossip
// pool whose cluster port the leader cannot reach), it is not recorded at all.
func TestJoinedNodeIsRecordedThenGivenShards(t *testing.T) {
	w := newWorld()
	w.in.Gossip = append(w.in.Gossip, membership.Member{Name: "d", Status: membership.StatusAlive, Weight: 1, RPCAddr: "d:1"})
	if d := w.plan(t, t0.Add(time.Millisecond)); len(d.Writes) != 0 {
		t.Fatalf("a gossip member not in Raft was written: %+v", d.Writes)
	}
	w.in.InRaft["d"] = true
	d := w.plan(t, t0.Add(time.Millisecond))
	if len(d.Writes) == 0 || d.Writes[0].Events[0].Kind != event.NodeJoined {
		t.Fatalf("writes %+v, want d recorded first", d.Writes)
	}
	if rv := commands[fsm.Revoke](d); len(rv) != 1 {
		t.Fatalf("no rebalance toward d in the same plan: %+v", d.Writes)
	}
}

// A node that renews its lease but says it is unfit (Discord rejects its token) is
// placed as if its weight were 0: its shards are moved off, none are given to it.
func TestUnfitNodeGetsNoShards(t *testing.T) {
	w := newWorld()
	w.in.Grants.Unfit["b"] = "Discord rejected the bot token"
	d := w.plan(t, t0.Add(time.Millisecond))
	if len(failed(d)) != 0 {
		t.Fatalf("an unfit node was failed: %v", failed(d))
	}
	rv := commands[fsm.Revoke](d)
	if len(rv) != 1 || len(rv[0].Moves) != 2 {
		t.Fatalf("revocations %+v, want b's two shards moved off", rv)
	}
	for _, m := range rv[0].Moves {
		if m.ExpectNode != "b" {
			t.Fatalf("revoked %+v from a fit node", m)
		}
	}
	delete(w.in.Grants.Unfit, "b")
	if d := w.plan(t, t0.Add(time.Millisecond)); len(d.Writes) != 0 {
		t.Fatalf("once fit again nothing moves back by force: %+v", d.Writes)
	}
}
