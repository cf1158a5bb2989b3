package runner

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/internal/fakeclock"
	"github.com/discluster/discluster/node/rpc"
)

// apply writes commands into f as Raft would, one log index each.
func apply(t *testing.T, f *fsm.FSM, cmds ...fsm.Command) {
	t.Helper()
	for _, c := range cmds {
		idx := f.AppliedIndex() + 1
		if res := f.Apply(&raft.Log{Index: idx, Data: fsm.Encode(c)}); res != nil {
			if err, ok := res.(error); ok {
				t.Fatalf("%T: %v", c, err)
			}
		}
	}
}

// A shard logs in only while the node holds its lease and the state still gives it
// the shard at the epoch it runs under.
func TestNoLoginWithoutALease(t *testing.T) {
	f := fsm.New()
	apply(t, f,
		fsm.SetConfig{Config: fsm.Config{TotalShards: 2, MaxConcurrency: 1, ShardsPerCluster: 2, IdentifyWindow: time.Second,
			Lease: 5 * time.Second, CheckpointInterval: time.Second}},
		fsm.UpsertMember{Member: fsm.Member{ID: "a", Weight: 1}},
		fsm.Assign{Moves: []fsm.AssignMove{{Shard: 0, To: "a"}}})
	a, ok := f.Assignment(0)
	if !ok {
		t.Fatal("shard 0 not assigned")
	}
	clk := fakeclock.New(time.Unix(1_000_000, 0))
	r := New(Config{Name: "a", ShardsPerCluster: 2, CheckpointInterval: time.Second, Logger: slog.New(slog.DiscardHandler)},
		Deps{FSM: f, Now: clk.Now, Lease: func() time.Duration { return 5 * time.Second }})
	if err := r.MayLogin(0, 0, a.Epoch); err == nil {
		t.Fatal("a shard logs in before the node ever held a lease")
	}
	r.lease.mu.Lock()
	r.lease.until = clk.Now().Add(5 * time.Second)
	r.lease.mu.Unlock()
	if err := r.MayLogin(0, 0, a.Epoch); err != nil {
		t.Fatalf("the owner with a lease may not log in: %v", err)
	}
	if err := r.MayLogin(0, 0, a.Epoch+1); !errors.Is(err, rpc.ErrNotOwner) {
		t.Fatalf("login at another epoch: %v, want ErrNotOwner", err)
	}
	if err := r.MayLogin(0, 1, a.Epoch); !errors.Is(err, rpc.ErrNotOwner) {
		t.Fatalf("login of an unassigned shard: %v, want ErrNotOwner", err)
	}
	clk.Add(5*time.Second - time.Nanosecond)
	if err := r.MayLogin(0, 0, a.Epoch); err != nil {
		t.Fatalf("login just inside the lease: %v", err)
	}
	clk.Add(time.Nanosecond)
	if err := r.MayLogin(0, 0, a.Epoch); err == nil {
		t.Fatal("a shard logs in once the lease ran out")
	}
	apply(t, f, fsm.Revoke{Moves: []fsm.RevokeMove{{Shard: 0, ExpectNode: "a", ExpectEpoch: a.Epoch}}})
	r.lease.mu.Lock()
	r.lease.until = clk.Now().Add(5 * time.Second)
	r.lease.mu.Unlock()
	if err := r.MayLogin(0, 0, a.Epoch); !errors.Is(err, rpc.ErrNotOwner) {
		t.Fatalf("login of a shard being handed off: %v, want ErrNotOwner", err)
	}
}

// All of a guild's members may be requested once per 30 s; a request never sent
// gives its place back; other guilds and partial requests are not limited.
func TestAllMembersRequestsPerGuild(t *testing.T) {
	var m memberRequests
	t0 := time.Unix(1000, 0)
	if w := m.reserve(1, t0); w != 0 {
		t.Fatalf("the first request waits %v", w)
	}
	if w := m.reserve(1, t0.Add(10*time.Second)); w != 20*time.Second {
		t.Fatalf("a second request 10 s later waits %v, want 20s", w)
	}
	if w := m.reserve(2, t0.Add(10*time.Second)); w != 0 {
		t.Fatalf("another guild waits %v", w)
	}
	if w := m.reserve(1, t0.Add(allMembersWindow)); w != 0 {
		t.Fatalf("a request 30 s later waits %v", w)
	}
	m.release(1, t0.Add(allMembersWindow))
	if w := m.reserve(1, t0.Add(allMembersWindow+time.Second)); w != 0 {
		t.Fatalf("after a released request: waits %v", w)
	}
	for d, all := range map[string]bool{
		`{"guild_id":"81384788765712384","query":"","limit":0}`:                 true,
		`{"guild_id":81384788765712384,"query":""}`:                             true,
		`{"guild_id":"81384788765712384","query":"ab","limit":10}`:              false,
		`{"guild_id":"81384788765712384","user_ids":["1"]}`:                     false,
		`{"guild_id":"81384788765712384","query":"","limit":0,"user_ids":null}`: true,
	} {
		if g, ok := allMembersGuild(json.RawMessage(d)); ok != all || ok && g != 81384788765712384 {
			t.Errorf("%s: %d, %v; want all=%v", d, g, ok, all)
		}
	}
}

// A reshard's shards count as warm only while delivery here is current: the
// cut-over needs the old generation's deliveries up to date at the switch, so a
// failing sink holds the switch back.
func TestNoWarmShardsWhileTheSinkFails(t *testing.T) {
	r := New(Config{Name: "a", ShardsPerCluster: 2, CheckpointInterval: time.Second, Logger: slog.New(slog.DiscardHandler)},
		Deps{FSM: fsm.New(), Lease: func() time.Duration { return 5 * time.Second }})
	now := time.Unix(1_000_000, 0)
	g := newGeneration(2, 4)
	h := newHeldShard()
	h.ready, h.readyAt = true, now
	g.hold[1] = h
	r.gens[2] = g
	if !r.deliveryCurrent() || !g.warm(1, now) {
		t.Fatal("a READY shard with its guilds and a healthy sink is not warm")
	}
	r.sinkHealth.record(errors.New("redis: connection refused"), now)
	if r.deliveryCurrent() {
		t.Fatal("delivery counts as current while the sink fails")
	}
	r.sinkHealth.record(nil, now)
	if !r.deliveryCurrent() {
		t.Fatal("delivery not current once the sink recovered")
	}
	h.expect[42] = true // a guild READY named that has not arrived
	if g.warm(1, now.Add(warmTimeout-time.Second)) {
		t.Fatal("warm before every guild arrived")
	}
	if !g.warm(1, now.Add(warmTimeout+time.Second)) {
		t.Fatal("a guild in an outage holds the shard back past the timeout")
	}
}

// A new generation's owner asks each member for its cut in parts of at most
// cutShardsPerCall shards, so that a busy bot's cut stays under the RPC's reply
// limit, and merges the parts.
func TestCutsAreFetchedInParts(t *testing.T) {
	f := fsm.New()
	apply(t, f, fsm.UpsertMember{Member: fsm.Member{ID: "a", Weight: 1}}, fsm.UpsertMember{Member: fsm.Member{ID: "b", Weight: 1, RaftAddr: "b:1"}})
	var calls [][]int
	r := New(Config{Name: "a", ShardsPerCluster: 2, CheckpointInterval: time.Second, Logger: slog.New(slog.DiscardHandler)},
		Deps{FSM: f, Lease: func() time.Duration { return 5 * time.Second },
			Cuts: func(_ context.Context, addr string, args rpc.CutArgs) (map[int][]rpc.CutKey, bool, error) {
				if addr != "b:1" || args.Gen != 1 || args.Total != 600 {
					t.Errorf("asked %s for generation %d of %d shards", addr, args.Gen, args.Total)
				}
				calls = append(calls, args.Shards) // one member asked: no race
				keys := map[int][]rpc.CutKey{}
				for _, id := range args.Shards {
					keys[id] = []rpc.CutKey{{Guild: uint64(id) << 22, Hash: uint64(id), Age: time.Second}, {Guild: uint64(id) << 22, Hash: 7, Earlier: true}}
				}
				return keys, true, nil
			}})
	shards := make([]int, 300)
	for i := range shards {
		shards[i] = i
	}
	cuts := r.fetchCuts(1, 600, shards)
	if len(calls) != 3 || len(calls[0]) != cutShardsPerCall || len(calls[2]) != 300-2*cutShardsPerCall {
		t.Errorf("asked in %d calls of %v shards, want 3 of at most %d", len(calls), lens(calls), cutShardsPerCall)
	}
	for _, id := range shards {
		if c := cuts[id]; len(c) != 2 || c[0].Hash != uint64(id) || c[0].Earlier || !c[1].Earlier {
			t.Fatalf("shard %d's cut: %+v", id, c)
		}
	}
}

func lens(parts [][]int) []int {
	var n []int
	for _, p := range parts {
		n = append(n, len(p))
	}
	return n
}
