package fsm

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"pgregory.net/rapid"
)

// command draws a random command, valid or not, over a small world of 4 members and
// 6 shards, so that owners, epochs and stale entries collide often.
func command(t *rapid.T, maxIndex uint64) []byte {
	node := rapid.SampledFrom([]string{"a", "b", "c", "d", ""})
	shard := rapid.IntRange(-1, 6)
	epoch := rapid.Uint64Range(0, maxIndex)
	resume := func(t *rapid.T) ResumeData {
		return ResumeData{
			SessionID: rapid.SampledFrom([]string{"", "s1", "s2"}).Draw(t, "session"),
			Seq:       rapid.Int64Range(0, 100).Draw(t, "seq"),
			ResumeURL: "wss://r",
		}
	}
	gen := rapid.Uint64Range(0, 3)
	var cmd Command
	switch rapid.IntRange(0, 15).Draw(t, "type") {
	case 13:
		cmd = StartReshard{Gen: gen.Draw(t, "gen"), Total: rapid.SampledFrom([]int{4, 6, 7, 0}).Draw(t, "total"), At: 13}
	case 14:
		cmd = SwitchReshard{Gen: gen.Draw(t, "gen"), At: 14}
	case 15:
		cmd = CancelReshard{Gen: gen.Draw(t, "gen"), At: 15}
	case 0:
		cmd = SetConfig{Config{TotalShards: rapid.SampledFrom([]int{6, 6, 6, 7, 0}).Draw(t, "total"), MaxConcurrency: 1,
			ShardsPerCluster: 2, IdentifyWindow: time.Second, Lease: time.Second, CheckpointInterval: time.Second}}
	case 1:
		cmd = UpsertMember{Member{ID: node.Draw(t, "id"), Weight: rapid.IntRange(-1, 3).Draw(t, "w"),
			State: MemberState(rapid.IntRange(0, 4).Draw(t, "state"))}}
	case 2:
		cmd = MarkFailed{ID: node.Draw(t, "id"), At: 7}
	case 3:
		cmd = Drain{ID: node.Draw(t, "id"), At: 8}
	case 4:
		cmd = RemoveMember{ID: node.Draw(t, "id")}
	case 11:
		cmd = Undrain{ID: node.Draw(t, "id"), At: 11}
	case 12:
		cmd = MarkDrained{ID: node.Draw(t, "id"), At: 12}
	case 5:
		moves := rapid.SliceOfN(rapid.Custom(func(t *rapid.T) AssignMove {
			return AssignMove{Shard: shard.Draw(t, "shard"), ExpectNode: node.Draw(t, "from"), ExpectEpoch: epoch.Draw(t, "epoch"), To: node.Draw(t, "to")}
		}), 0, 4).Draw(t, "moves")
		cmd = Assign{Gen: gen.Draw(t, "gen"), Moves: moves}
	case 6:
		moves := rapid.SliceOfN(rapid.Custom(func(t *rapid.T) RevokeMove {
			return RevokeMove{Shard: shard.Draw(t, "shard"), ExpectNode: node.Draw(t, "from"), ExpectEpoch: epoch.Draw(t, "epoch")}
		}), 0, 4).Draw(t, "moves")
		cmd = Revoke{Gen: gen.Draw(t, "gen"), Moves: moves}
	case 7:
		rs := rapid.SliceOfN(rapid.Custom(func(t *rapid.T) Release {
			return Release{Shard: shard.Draw(t, "shard"), Epoch: epoch.Draw(t, "epoch"), Resume: resume(t)}
		}), 0, 4).Draw(t, "released")
		cmd = Released{Gen: gen.Draw(t, "gen"), Node: node.Draw(t, "node"), At: 9, Shards: rs}
	case 8:
		es := rapid.SliceOfN(rapid.Custom(func(t *rapid.T) CheckpointEntry {
			return CheckpointEntry{Shard: shard.Draw(t, "shard"), Epoch: epoch.Draw(t, "epoch"), Resume: resume(t)}
		}), 0, 4).Draw(t, "entries")
		cmd = Checkpoint{Gen: gen.Draw(t, "gen"), Node: node.Draw(t, "node"), At: 10, Entries: es}
	case 9:
		es := rapid.SliceOfN(rapid.Custom(func(t *rapid.T) ClearEntry {
			return ClearEntry{Shard: shard.Draw(t, "shard"), Epoch: epoch.Draw(t, "epoch")}
		}), 0, 4).Draw(t, "entries")
		cmd = ClearResume{Gen: gen.Draw(t, "gen"), Node: node.Draw(t, "node"), Entries: es}
	default:
		return rapid.SliceOfN(rapid.Byte(), 0, 12).Draw(t, "garbage")
	}
	return Encode(cmd)
}

// Replicas that apply the same log hold byte-identical state, whatever the log; a
// refused entry changes nothing; and a snapshot restores to the same bytes.
func TestPropertyReplicasAgree(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b := New(), New()
		n := rapid.IntRange(1, 60).Draw(t, "entries")
		var batch []*raft.Log
		for i := 1; i <= n; i++ {
			l := &raft.Log{Index: uint64(i), Type: raft.LogCommand, Data: command(t, uint64(i))}
			before := persist(t, a)
			resp := a.Apply(l)
			if _, refused := resp.(error); refused && !bytes.Equal(before, persist(t, a)) {
				t.Fatalf("entry %d was refused (%v) but changed the state", i, resp)
			}
			batch = append(batch, l)
		}
		// b gets the same log in batches, as raft's batching would deliver it.
		for len(batch) > 0 {
			k := min(len(batch), rapid.IntRange(1, 8).Draw(t, "batch"))
			if got := b.ApplyBatch(batch[:k]); len(got) != k {
				t.Fatalf("ApplyBatch returned %d responses for %d entries", len(got), k)
			}
			batch = batch[k:]
		}
		sa, sb := persist(t, a), persist(t, b)
		if !bytes.Equal(sa, sb) {
			t.Fatal("two replicas applying the same log differ")
		}
		c := New()
		if err := c.Restore(io.NopCloser(bytes.NewReader(sa))); err != nil {
			t.Fatalf("restore of a valid snapshot: %v", err)
		}
		if !bytes.Equal(sa, persist(t, c)) {
			t.Fatal("restored state differs")
		}
		// Invariants of any reachable state: each assignment's owner and epoch are
		// sensible, and every resume state's epoch is not after the applied index.
		for _, as := range a.Assignments() {
			if as.Epoch == 0 || as.Epoch > a.AppliedIndex() {
				t.Fatalf("assignment %+v with applied index %d", as, a.AppliedIndex())
			}
		}
	})
}

// FuzzDecode: no input panics the command decoder; what decodes re-encodes to the
// same bytes (the encoding has one form per command).
func FuzzDecode(f *testing.F) {
	f.Add(Encode(Checkpoint{Node: "a", At: 1, Entries: []CheckpointEntry{{Shard: 1, Epoch: 2, Resume: ResumeData{SessionID: "s", Seq: 3}}}}))
	f.Add(Encode(Assign{Moves: []AssignMove{{Shard: 1, To: "b"}}}))
	f.Add(Encode(SetConfig{testConfig}))
	f.Add(Encode(UpsertMember{Member{ID: "n", RaftAddr: "x:1", Weight: 2}}))
	f.Add([]byte{byte(CmdAssign), 1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, p []byte) {
		cmd, err := Decode(p)
		if err != nil {
			return
		}
		if again := Encode(cmd); !bytes.Equal(again, p) {
			t.Fatalf("decode/encode is not the identity:\n%x\n%x", p, again)
		}
		// Applying it must not panic either.
		f := New()
		f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: Encode(SetConfig{testConfig})})
		f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: p})
	})
}

// FuzzRestore: no input panics Restore; a failed restore leaves the FSM unchanged.
func FuzzRestore(f *testing.F) {
	h := setup(f)
	h.ok(Assign{Moves: []AssignMove{{Shard: 0, To: "a"}}})
	h.ok(Checkpoint{Node: "a", At: 3, Entries: []CheckpointEntry{{Shard: 0, Epoch: h.index, Resume: ResumeData{SessionID: "s", Seq: 9}}}})
	f.Add(persist(f, h.f))
	f.Add([]byte(snapshotMagic))
	f.Fuzz(func(t *testing.T, p []byte) {
		g := New()
		before := persist(t, g)
		if err := g.Restore(io.NopCloser(bytes.NewReader(p))); err != nil {
			if !bytes.Equal(before, persist(t, g)) {
				t.Fatal("failed restore changed the state")
			}
			return
		}
		// Whatever restored must snapshot again without error.
		persist(t, g)
	})
}

// BenchmarkApplyCheckpoint1000: one node checkpoints its 1,000 shards in one
// command, decode included; every entry applies.
func BenchmarkApplyCheckpoint1000(b *testing.B) {
	h := newHarness(b)
	cfg := testConfig
	cfg.TotalShards = 1000
	h.ok(SetConfig{cfg})
	h.ok(UpsertMember{Member{ID: "node-00", Weight: 1}})
	moves := make([]AssignMove, 1000)
	for s := range moves {
		moves[s] = AssignMove{Shard: s, To: "node-00"}
	}
	h.ok(Assign{Moves: moves})
	epoch := h.index
	cp := Checkpoint{Node: "node-00", At: 1}
	for s := range 1000 {
		cp.Entries = append(cp.Entries, CheckpointEntry{Shard: s, Epoch: epoch, Resume: ResumeData{
			SessionID: fmt.Sprintf("%032x", s), Seq: int64(s), ResumeURL: "wss://gateway-us-east1-b.discord.gg"}})
	}
	data := Encode(cp)
	b.ReportMetric(float64(len(data)), "command-bytes")
	b.ReportAllocs()
	for b.Loop() {
		h.index++
		res, ok := h.f.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: data}).(*Result)
		if !ok || res.Applied != 1000 {
			b.Fatalf("checkpoint: %+v", res)
		}
	}
}

func BenchmarkSnapshot20k(b *testing.B) {
	h := big(b, 20000)
	var size int
	b.ReportAllocs()
	for b.Loop() {
		size = len(persist(b, h.f))
	}
	b.ReportMetric(float64(size), "snapshot-bytes")
}

func BenchmarkRestore20k(b *testing.B) {
	snap := persist(b, big(b, 20000).f)
	b.ReportAllocs()
	for b.Loop() {
		if err := New().Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
			b.Fatal(err)
		}
	}
}
