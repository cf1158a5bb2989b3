package fsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { return nil }

// fataler is what persist needs of a *testing.T, *testing.B or *rapid.T.
type fataler interface {
	Helper()
	Fatal(args ...any)
}

func persist(t fataler, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

type harness struct {
	t     testing.TB
	f     *FSM
	index uint64
}

func newHarness(t testing.TB) *harness { return &harness{t: t, f: New()} }

// apply proposes cmd at the next index and returns the response.
func (h *harness) apply(cmd Command) any {
	h.index++
	return h.f.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: Encode(cmd)})
}

func (h *harness) ok(cmd Command) *Result {
	h.t.Helper()
	res, isRes := h.apply(cmd).(*Result)
	if !isRes {
		h.t.Fatalf("%T refused: %v", cmd, h.f.Apply(&raft.Log{Index: h.index + 1000, Type: raft.LogCommand, Data: Encode(cmd)}))
	}
	return res
}

// refused applies cmd (or raw bytes) and checks it is an error that leaves the
// snapshot byte-identical.
func (h *harness) refused(data []byte, want string) {
	h.t.Helper()
	before := persist(h.t, h.f)
	h.index++
	resp := h.f.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: data})
	err, isErr := resp.(error)
	if !isErr || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
		h.t.Fatalf("response %v, want an ErrInvalid mentioning %q", resp, want)
	}
	if after := persist(h.t, h.f); !bytes.Equal(before, after) {
		h.t.Fatalf("refused command %q changed the state", want)
	}
}

var testConfig = Config{TotalShards: 8, MaxConcurrency: 2, ShardsPerCluster: 4,
	IdentifyWindow: 5 * time.Second, Lease: 2 * time.Second, CheckpointInterval: time.Second}

// setup: config, members a, b (alive) and c (failed).
func setup(t testing.TB) *harness {
	h := newHarness(t)
	h.ok(SetConfig{testConfig})
	for _, id := range []string{"a", "b", "c"} {
		h.ok(UpsertMember{Member{ID: id, RaftAddr: id + ":1", Weight: 1, Since: 1}})
	}
	h.ok(MarkFailed{ID: "c", At: 2})
	return h
}

func TestMembers(t *testing.T) {
	h := setup(t)
	h.ok(Drain{ID: "b", At: 5})
	if m, _ := h.f.Member("b"); m.State != Draining || m.Since != 5 {
		t.Fatalf("after drain: %+v", m)
	}
	h.refused(Encode(Undrain{ID: "c", At: 6}), "c is failed, not draining")
	h.refused(Encode(Undrain{ID: "zz", At: 6}), `no member "zz"`)
	h.ok(Undrain{ID: "b", At: 6})
	if m, _ := h.f.Member("b"); m.State != Alive || m.Since != 6 {
		t.Fatalf("after undrain: %+v", m)
	}
	h.ok(Drain{ID: "b", At: 5})
	if m, _ := h.f.Member("c"); m.State != Failed || m.Since != 2 {
		t.Fatalf("after mark failed: %+v", m)
	}
	h.ok(RemoveMember{ID: "c"})
	if got := h.f.Members(); len(got) != 2 || got[0].ID != "a" || got[1].ID != "b" {
		t.Fatalf("members %+v", got)
	}
	h.refused(Encode(RemoveMember{ID: "c"}), `no member "c"`)
	h.refused(Encode(MarkFailed{ID: "zz"}), `no member "zz"`)
	h.refused(Encode(UpsertMember{Member{ID: ""}}), "empty")
	h.refused(Encode(UpsertMember{Member{ID: "x", Weight: -1}}), "negative")
	h.refused(Encode(UpsertMember{Member{ID: "x", State: 7}}), "unknown state")
}

func TestAssignFencingAndRetries(t *testing.T) {
	h := setup(t)
	res := h.ok(Assign{Moves: []AssignMove{{Shard: 0, To: "a"}, {Shard: 1, To: "b"}, {Shard: 2, To: "c"}, {Shard: 3, To: "nobody"}}})
	if res.Applied != 2 || len(res.Stale) != 2 || res.Stale[0].Shard != 2 || res.Stale[1].Shard != 3 {
		t.Fatalf("assign result %+v: want shards 0 and 1 applied, 2 (failed target) and 3 (unknown) stale", res)
	}
	a0, _ := h.f.Assignment(0)
	if a0.Node != "a" || a0.Epoch != h.index || a0.Phase != Assigned {
		t.Fatalf("shard 0: %+v, want a at epoch %d", a0, h.index)
	}
	// The same plan applied again (raft reported a lost leadership, the leader
	// retried) must not move anything twice.
	res = h.ok(Assign{Moves: []AssignMove{{Shard: 0, To: "b"}}})
	if res.Applied != 0 || len(res.Stale) != 1 {
		t.Fatalf("retried assign: %+v", res)
	}
	if again, _ := h.f.Assignment(0); again != a0 {
		t.Fatalf("retried assign moved shard 0: %+v", again)
	}
	// A move naming the current owner and epoch applies.
	res = h.ok(Assign{Moves: []AssignMove{{Shard: 0, ExpectNode: "a", ExpectEpoch: a0.Epoch, To: "b"}}})
	if res.Applied != 1 {
		t.Fatalf("move: %+v", res)
	}
	if got, _ := h.f.Assignment(0); got.Node != "b" || got.Epoch != h.index {
		t.Fatalf("after move: %+v", got)
	}
	if got := h.f.ShardsOf("b"); len(got) != 2 || got[0].Shard != 0 || got[1].Shard != 1 {
		t.Fatalf("shards of b: %+v", got)
	}

	h.refused(Encode(Assign{Moves: []AssignMove{{Shard: 8, To: "a"}}}), "outside [0, 8)")
	h.refused(Encode(Assign{Moves: []AssignMove{{Shard: 4, To: "a"}, {Shard: 4, To: "b"}}}), "twice")
	h.refused(Encode(Assign{Moves: []AssignMove{{Shard: 4, To: ""}}}), "empty node")
}

func TestRevokeReleaseAndResume(t *testing.T) {
	h := setup(t)
	h.ok(Assign{Moves: []AssignMove{{Shard: 5, To: "a"}}})
	epoch := h.index

	// Checkpoints: only the owner at its epoch writes.
	res := h.ok(Checkpoint{Node: "a", At: 10, Entries: []CheckpointEntry{{Shard: 5, Epoch: epoch, Resume: ResumeData{SessionID: "s1", Seq: 40, ResumeURL: "wss://r"}}}})
	if res.Applied != 1 {
		t.Fatalf("checkpoint: %+v", res)
	}
	for _, stale := range []Checkpoint{
		{Node: "b", At: 11, Entries: []CheckpointEntry{{Shard: 5, Epoch: epoch, Resume: ResumeData{SessionID: "evil", Seq: 1}}}},
		{Node: "a", At: 11, Entries: []CheckpointEntry{{Shard: 5, Epoch: epoch - 1, Resume: ResumeData{SessionID: "old", Seq: 1}}}},
		{Node: "a", At: 11, Entries: []CheckpointEntry{{Shard: 6, Epoch: epoch, Resume: ResumeData{SessionID: "none", Seq: 1}}}},
	} {
		if res := h.ok(stale); res.Applied != 0 || len(res.Stale) != 1 {
			t.Fatalf("stale checkpoint %+v applied: %+v", stale, res)
		}
	}
	if r, _ := h.f.Resume(5); r.SessionID != "s1" || r.Seq != 40 || r.Epoch != epoch || r.UpdatedAt != 10 || r.ResumeURL != "wss://r" {
		t.Fatalf("resume: %+v", r)
	}

	// Revoke: the owner keeps checkpointing until it releases.
	h.refused(Encode(Revoke{Moves: []RevokeMove{{Shard: 5, ExpectNode: ""}}}), "empty node")
	if res := h.ok(Revoke{Moves: []RevokeMove{{Shard: 5, ExpectNode: "a", ExpectEpoch: epoch}}}); res.Applied != 1 {
		t.Fatalf("revoke: %+v", res)
	}
	if a, _ := h.f.Assignment(5); a.Phase != Revoking || a.Epoch != epoch {
		t.Fatalf("after revoke: %+v", a)
	}
	if res := h.ok(Revoke{Moves: []RevokeMove{{Shard: 5, ExpectNode: "a", ExpectEpoch: epoch}}}); res.Applied != 0 {
		t.Fatalf("second revoke applied: %+v", res)
	}
	if res := h.ok(Checkpoint{Node: "a", At: 12, Entries: []CheckpointEntry{{Shard: 5, Epoch: epoch, Resume: ResumeData{SessionID: "s1", Seq: 45, ResumeURL: "wss://r"}}}}); res.Applied != 1 {
		t.Fatalf("checkpoint while revoking: %+v", res)
	}

	// A release from someone else is stale; the owner's ends the assignment and keeps
	// the final state for the next owner.
	if res := h.ok(Released{Node: "b", At: 13, Shards: []Release{{Shard: 5, Epoch: epoch}}}); res.Applied != 0 {
		t.Fatalf("stale release applied: %+v", res)
	}
	if res := h.ok(Released{Node: "a", At: 14, Shards: []Release{{Shard: 5, Epoch: epoch, Resume: ResumeData{SessionID: "s1", Seq: 47, ResumeURL: "wss://r"}}}}); res.Applied != 1 {
		t.Fatalf("release: %+v", res)
	}
	if _, ok := h.f.Assignment(5); ok {
		t.Fatal("shard 5 still assigned after release")
	}
	if r, _ := h.f.Resume(5); r.Seq != 47 || r.UpdatedAt != 14 {
		t.Fatalf("final resume state: %+v", r)
	}
	// The late checkpoint of the old owner cannot overwrite the final state.
	if res := h.ok(Checkpoint{Node: "a", At: 15, Entries: []CheckpointEntry{{Shard: 5, Epoch: epoch, Resume: ResumeData{SessionID: "s1", Seq: 46}}}}); res.Applied != 0 {
		t.Fatalf("late checkpoint applied: %+v", res)
	}

	// The next owner takes it, and may clear the state after an invalid session.
	h.ok(Assign{Moves: []AssignMove{{Shard: 5, To: "b"}}})
	next := h.index
	if res := h.ok(ClearResume{Node: "a", Entries: []ClearEntry{{Shard: 5, Epoch: epoch}}}); res.Applied != 0 {
		t.Fatalf("stale clear applied: %+v", res)
	}
	if res := h.ok(ClearResume{Node: "b", Entries: []ClearEntry{{Shard: 5, Epoch: next}}}); res.Applied != 1 {
		t.Fatalf("clear: %+v", res)
	}
	if _, ok := h.f.Resume(5); ok {
		t.Fatal("resume state survived the clear")
	}
}

func TestDeadOwnerShardsAreAssignedFromRevoking(t *testing.T) {
	// Failure flow: the leader revokes a dead node's shard, waits out the lease, then
	// assigns it straight to a survivor (the dead node never releases).
	h := setup(t)
	h.ok(Assign{Moves: []AssignMove{{Shard: 1, To: "a"}}})
	epoch := h.index
	h.ok(Revoke{Moves: []RevokeMove{{Shard: 1, ExpectNode: "a", ExpectEpoch: epoch}}})
	if res := h.ok(Assign{Moves: []AssignMove{{Shard: 1, ExpectNode: "a", ExpectEpoch: epoch, To: "b"}}}); res.Applied != 1 {
		t.Fatalf("assign from revoking: %+v", res)
	}
}

func TestConfig(t *testing.T) {
	h := newHarness(t)
	h.refused(Encode(Assign{Moves: []AssignMove{{Shard: 0, To: "a"}}}), "no config")
	bad := testConfig
	bad.MaxConcurrency = 0
	h.refused(Encode(SetConfig{bad}), "MaxConcurrency")
	h.ok(SetConfig{testConfig})
	h.ok(UpsertMember{Member{ID: "a", Weight: 1}})
	h.ok(Assign{Moves: []AssignMove{{Shard: 0, To: "a"}}})
	more := testConfig
	more.TotalShards = 16
	h.refused(Encode(SetConfig{more}), "reshard instead")
	changed := testConfig
	changed.Lease = time.Minute
	h.ok(SetConfig{changed})
	if h.f.Config().Lease != time.Minute {
		t.Fatal("config not updated")
	}
}

func TestMalformedCommandsAreRefused(t *testing.T) {
	h := setup(t)
	good := Encode(Checkpoint{Node: "a", Entries: []CheckpointEntry{{Shard: 1, Resume: ResumeData{SessionID: "x"}}}})
	h.refused(nil, "at least 2")
	h.refused([]byte{99, 1}, "unknown command type 99")
	h.refused(append([]byte{byte(CmdCheckpoint), 3}, good[2:]...), "version 3")
	h.refused(append([]byte{byte(CmdMarkFailed), 2}, Encode(MarkFailed{ID: "a"})[2:]...), "version 2")
	h.refused(append([]byte{byte(CmdCheckpoint), 2}, good[2:]...), "truncated")               // version 2 without its generation
	h.refused(append(append([]byte{byte(CmdCheckpoint), 2}, good[2:]...), 1), "generation 1") // the first is written in version 1
	h.refused(good[:len(good)-1], "truncated")
	h.refused(append(slicesClone(good), 0), "trailing")
	// A batch count far beyond the bytes present must not allocate it.
	h.refused([]byte{byte(CmdAssign), 1, 0xff, 0xff, 0xff, 0xff, 0x0f}, "entries")
	if h.f.AppliedIndex() == h.index {
		t.Fatal("a refused command moved the applied index")
	}
}

func slicesClone(b []byte) []byte { return append([]byte(nil), b...) }

func TestWaitChange(t *testing.T) {
	h := setup(t)
	at := h.f.AppliedIndex()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got := make(chan uint64, 1)
	go func() {
		idx, err := h.f.WaitChange(ctx, at)
		if err != nil {
			t.Error(err)
		}
		got <- idx
	}()
	h.ok(Drain{ID: "a", At: 1})
	if idx := <-got; idx != h.index {
		t.Fatalf("woke at %d, want %d", idx, h.index)
	}
	short, cancelShort := context.WithCancel(context.Background())
	cancelShort()
	if _, err := h.f.WaitChange(short, h.index); err == nil {
		t.Fatal("WaitChange returned without a change or an error")
	}
}

// big builds a state with n shards over 50 members, each assigned and checkpointed.
func big(t testing.TB, n int) *harness {
	h := newHarness(t)
	cfg := testConfig
	cfg.TotalShards = n
	h.ok(SetConfig{cfg})
	for i := range 50 {
		h.ok(UpsertMember{Member{ID: fmt.Sprintf("node-%02d", i), RaftAddr: fmt.Sprintf("10.0.0.%d:7001", i), HTTPAddr: "127.0.0.1:7002", Weight: 1}})
	}
	moves := make([]AssignMove, n)
	for s := range n {
		moves[s] = AssignMove{Shard: s, To: fmt.Sprintf("node-%02d", s%50)}
	}
	h.ok(Assign{Moves: moves})
	epoch := h.index
	for node := range 50 {
		var cp Checkpoint
		cp.Node, cp.At = fmt.Sprintf("node-%02d", node), 99
		for s := node; s < n; s += 50 {
			cp.Entries = append(cp.Entries, CheckpointEntry{Shard: s, Epoch: epoch, Resume: ResumeData{
				SessionID: fmt.Sprintf("%032x", s), Seq: int64(s * 7), ResumeURL: "wss://gateway-us-east1-b.discord.gg"}})
		}
		if res := h.ok(cp); res.Applied != len(cp.Entries) {
			t.Fatalf("checkpoint %s: %+v", cp.Node, res)
		}
	}
	return h
}

func TestSnapshotRoundTrip20k(t *testing.T) {
	h := big(t, 20000)
	h.ok(Revoke{Moves: []RevokeMove{{Shard: 3, ExpectNode: "node-03", ExpectEpoch: 51}}})
	h.ok(Drain{ID: "node-07", At: 123})
	snap := persist(t, h.f)
	g := New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if again := persist(t, g); !bytes.Equal(snap, again) {
		t.Fatal("restore then snapshot is not byte-identical")
	}
	if g.AppliedIndex() != h.f.AppliedIndex() || len(g.Assignments()) != 20000 || len(g.Members()) != 50 {
		t.Fatalf("restored index %d, %d assignments, %d members", g.AppliedIndex(), len(g.Assignments()), len(g.Members()))
	}
	if r, _ := g.Resume(19999); r.Seq != 19999*7 {
		t.Fatalf("restored resume %+v", r)
	}
	t.Logf("snapshot of 20,000 shards: %d bytes", len(snap))
}

func TestRestoreRefusesGarbageAndKeepsState(t *testing.T) {
	h := setup(t)
	h.ok(Assign{Moves: []AssignMove{{Shard: 0, To: "a"}}})
	good := persist(t, h.f)
	cases := map[string][]byte{
		"empty":            nil,
		"wrong magic":      append([]byte("XXXXX"), good[5:]...),
		"future version":   append(append([]byte(snapshotMagic), 9), good[6:]...),
		"truncated":        good[:len(good)-3],
		"no end":           good[:len(good)-1],
		"after end":        append(slicesClone(good), 1),
		"unknown record":   append(slicesClone(good[:len(good)-1]), 77, 0, recEnd),
		"assign no config": append(append(append([]byte(snapshotMagic), snapshotVersion), 5), recAssign, 3, 0, 0, 1, recEnd),
	}
	for name, data := range cases {
		f := setup(t).f
		before := persist(t, f)
		if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err == nil {
			t.Errorf("%s: restored", name)
		}
		if after := persist(t, f); !bytes.Equal(before, after) {
			t.Errorf("%s: a failed restore changed the state", name)
		}
	}
}

// An operator's drain outlives the member: failed, removed or back, the node stays
// drained until Undrain, and a snapshot keeps it.
func TestOperatorDrainOutlivesTheMember(t *testing.T) {
	h := setup(t)
	h.refused(Encode(MarkDrained{ID: "zz", At: 3}), `no member "zz"`)
	h.ok(MarkDrained{ID: "b", At: 3})
	if m, _ := h.f.Member("b"); m.State != Draining {
		t.Fatalf("an alive member marked drained is %s", m.State)
	}
	h.ok(MarkDrained{ID: "c", At: 4}) // failed: marked, and stays failed
	if m, _ := h.f.Member("c"); m.State != Failed {
		t.Fatalf("a failed member marked drained is %s", m.State)
	}
	h.ok(MarkFailed{ID: "b", At: 5})
	h.ok(RemoveMember{ID: "b"})
	if d := h.f.Drained(); len(d) != 2 || d["b"] != 3 || d["c"] != 4 {
		t.Fatalf("drains %v, want b and c", d)
	}
	back := New()
	if err := back.Restore(io.NopCloser(bytes.NewReader(persist(t, h.f)))); err != nil {
		t.Fatal(err)
	}
	if d := back.Drained(); len(d) != 2 || d["b"] != 3 {
		t.Fatalf("after a snapshot: drains %v", d)
	}
	h.ok(Undrain{ID: "b", At: 6}) // no member any more, but a drain to end
	h.ok(Undrain{ID: "c", At: 7})
	if m, _ := h.f.Member("c"); m.State != Failed {
		t.Fatalf("undrain of a failed member made it %s", m.State)
	}
	if d := h.f.Drained(); len(d) != 0 {
		t.Fatalf("drains %v after undrain", d)
	}
	h.refused(Encode(Undrain{ID: "b", At: 8}), `no member "b"`)
}

// A reshard starts a second generation with its own table beside the current one;
// the switch makes it current at once and ends the old one, whose writes are stale
// from then on; a cancel drops it. Snapshots keep both generations.
func TestReshardGenerations(t *testing.T) {
	h := setup(t)
	h.ok(Assign{Moves: []AssignMove{{Shard: 0, To: "a"}, {Shard: 1, To: "b"}}})
	old, _ := h.f.Assignment(0)
	h.refused(Encode(StartReshard{Gen: 3, Total: 16, At: 1}), "does not follow")
	h.refused(Encode(StartReshard{Gen: 2, Total: 8, At: 1}), "already runs 8")
	h.refused(Encode(SwitchReshard{Gen: 2, At: 1}), "not being started")
	h.ok(StartReshard{Gen: 2, Total: 16, At: 5})
	h.refused(Encode(StartReshard{Gen: 2, Total: 32, At: 1}), "already running")
	h.refused(Encode(SetConfig{Config: func() Config { c := testConfig; c.TotalShards = 16; return c }()}), "while a reshard")
	if r, ok := h.f.Reshard(); !ok || r != (Reshard{Gen: 2, Total: 16, StartedAt: 5}) {
		t.Fatalf("reshard %+v %v", r, ok)
	}

	// The new generation's table is its own: shard 12 exists there only, shard 0
	// is placed there without touching the current generation's shard 0.
	h.refused(Encode(Assign{Moves: []AssignMove{{Shard: 12, To: "a"}}}), "outside [0, 8)")
	var moves []AssignMove
	for i := range 15 {
		moves = append(moves, AssignMove{Shard: i, To: []string{"a", "b"}[i%2]})
	}
	if res := h.ok(Assign{Gen: 2, Moves: moves}); res.Applied != 15 {
		t.Fatalf("assign in generation 2: %+v", res)
	}
	n0, ok := h.f.AssignmentIn(2, 0)
	if !ok || n0.Node != "a" || n0.Gen != 2 {
		t.Fatalf("generation 2's shard 0: %+v", n0)
	}
	if a, _ := h.f.Assignment(0); a != old || a.Gen != FirstGen {
		t.Fatalf("the current generation's shard 0 changed: %+v, was %+v", a, old)
	}
	h.ok(Checkpoint{Gen: 2, Node: "a", At: 6, Entries: []CheckpointEntry{{Shard: 0, Epoch: n0.Epoch, Resume: ResumeData{SessionID: "new-0", Seq: 7}}}})
	h.ok(Checkpoint{Node: "a", At: 6, Entries: []CheckpointEntry{{Shard: 0, Epoch: old.Epoch, Resume: ResumeData{SessionID: "old-0", Seq: 70}}}})
	if r, _ := h.f.ResumeIn(2, 0); r.SessionID != "new-0" {
		t.Fatalf("generation 2's resume state %+v", r)
	}

	// A snapshot holds both generations.
	snap := persist(t, h.f)
	c := New()
	if err := c.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snap, persist(t, c)) {
		t.Fatal("a snapshot with a reshard does not round-trip")
	}

	// Not every shard of generation 2 is assigned: no switch.
	h.refused(Encode(SwitchReshard{Gen: 2, At: 8}), "shards 15 are not assigned")
	h.ok(Assign{Gen: 2, Moves: []AssignMove{{Shard: 15, To: "b"}}})
	h.ok(SwitchReshard{Gen: 2, At: 9})
	if _, ok := h.f.Reshard(); ok || h.f.Generation() != 2 || h.f.Config().TotalShards != 16 {
		t.Fatalf("after the switch: generation %d, %d shards, reshard %v", h.f.Generation(), h.f.Config().TotalShards, ok)
	}
	if a, _ := h.f.Assignment(0); a != n0 {
		t.Fatalf("the current shard 0 is %+v, want generation 2's %+v", a, n0)
	}
	if r, _ := h.f.Resume(0); r.SessionID != "new-0" {
		t.Fatalf("the current shard 0's resume state %+v", r)
	}
	// The old generation's writes are stale: its owner checkpointing after the switch
	// changes nothing.
	res := h.ok(Checkpoint{Node: "a", At: 10, Entries: []CheckpointEntry{{Shard: 0, Epoch: old.Epoch, Resume: ResumeData{SessionID: "old-0", Seq: 71}}}})
	if res.Applied != 0 || len(res.Stale) != 1 || !strings.Contains(res.Stale[0].Reason, "generation 1 is not running") {
		t.Fatalf("an old generation's checkpoint after the switch: %+v", res)
	}
	if r, _ := h.f.Resume(0); r.SessionID != "new-0" {
		t.Fatalf("an old checkpoint overwrote the new generation's: %+v", r)
	}

	// A later reshard can be cancelled; the current generation stays.
	h.ok(StartReshard{Gen: 3, Total: 32, At: 11})
	h.ok(Assign{Gen: 3, Moves: []AssignMove{{Shard: 31, To: "a"}}})
	h.refused(Encode(CancelReshard{Gen: 2, At: 12}), "not being started")
	h.ok(CancelReshard{Gen: 3, At: 12})
	if _, ok := h.f.Reshard(); ok || h.f.Generation() != 2 {
		t.Fatal("the cancel did not drop generation 3")
	}
	if res := h.ok(Assign{Gen: 3, Moves: []AssignMove{{Shard: 30, To: "a"}}}); res.Applied != 0 {
		t.Fatalf("an assign in a cancelled generation applied: %+v", res)
	}
	snap = persist(t, h.f)
	c = New()
	if err := c.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil || c.Generation() != 2 {
		t.Fatalf("restore of generation 2: %v (generation %d)", err, c.Generation())
	}
}

// Commands of the first generation are written as before generations existed, so
// that agents of that version keep reading a log that never resharded.
func TestFirstGenerationCommandsKeepTheOldEncoding(t *testing.T) {
	c := Checkpoint{Node: "a", At: 1, Entries: []CheckpointEntry{{Shard: 1, Epoch: 2}}}
	if b := Encode(c); b[1] != 1 {
		t.Fatalf("a first-generation checkpoint written in version %d", b[1])
	}
	c.Gen = 2
	b := Encode(c)
	got, err := Decode(b)
	if err != nil || b[1] != 2 || got.(*Checkpoint).Gen != 2 {
		t.Fatalf("generation 2: version %d, decoded %+v, %v", b[1], got, err)
	}
}
