package logbridge

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// nopFSM is the least FSM raft accepts.
type nopFSM struct{}

func (nopFSM) Apply(*raft.Log) any                 { return nil }
func (nopFSM) Snapshot() (raft.FSMSnapshot, error) { return nopSnap{}, nil }
func (nopFSM) Restore(r io.ReadCloser) error       { return r.Close() }

type nopSnap struct{}

func (nopSnap) Persist(s raft.SnapshotSink) error { return s.Close() }
func (nopSnap) Release()                          {}

// TestRaftInfoReachesSlog runs a real single-node raft on in-memory stores and
// transport with the bridge as its logger at Info: Info records from raft reach
// the handler with component=raft, and nothing below Info does.
func TestRaftInfoReachesSlog(t *testing.T) {
	h := newRecorder(slog.LevelDebug - 8)
	hl := Hclog(slog.New(h), "raft", hclog.Info)

	conf := raft.DefaultConfig()
	conf.LocalID = "n1"
	conf.Logger = hl
	conf.HeartbeatTimeout = 50 * time.Millisecond
	conf.ElectionTimeout = 50 * time.Millisecond
	conf.LeaderLeaseTimeout = 50 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond

	addr, trans := raft.NewInmemTransport("")
	store := raft.NewInmemStore()
	snaps := raft.NewInmemSnapshotStore()
	boot := raft.Configuration{Servers: []raft.Server{{ID: conf.LocalID, Address: addr}}}
	if err := raft.BootstrapCluster(conf, store, store, snaps, trans, boot); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	r, err := raft.NewRaft(conf, nopFSM{}, store, store, snaps, trans)
	if err != nil {
		t.Fatalf("NewRaft: %v", err)
	}
	defer func() {
		if err := r.Shutdown().Error(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}()

	deadline := time.NewTimer(2 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for r.State() != raft.Leader {
		select {
		case <-deadline.C:
			t.Fatalf("no leader within 2s; state %v", r.State())
		case <-tick.C:
		}
	}

	infos := 0
	for _, rec := range h.all() {
		if rec.level < slog.LevelInfo {
			t.Errorf("a record below Info reached the handler: %+v", rec)
		}
		if rec.str("component") != "raft" {
			t.Errorf("record without component=raft: %+v", rec)
		}
		if rec.level == slog.LevelInfo {
			infos++
		}
	}
	if infos == 0 {
		t.Fatalf("no Info record from raft reached the handler: %+v", h.all())
	}
}
