package shard_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discluster/discluster/shard"
	"github.com/discluster/discluster/shard/gatewaytest"
)

// Permit is asked right before IDENTIFY and RESUME: refused, the shard logs in
// nothing (no session at the fake) and Run says why; once permitted again, the same
// shard continues its session with RESUME.
func TestPermitRefusedLogsInNothing(t *testing.T) {
	srv := newFake(t, gatewaytest.Options{Shards: 1, EventRate: 50})
	rec := newRecorder()
	var refuse atomic.Bool
	errLeaseGone := errors.New("lease gone (test)")
	cfg := baseConfig(t, srv, rec, 0, 1)
	cfg.Permit = func() error {
		if refuse.Load() {
			return errLeaseGone
		}
		return nil
	}

	refuse.Store(true)
	sh, err := shard.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sh.Run(ctx); !errors.Is(err, shard.ErrNotPermitted) {
		t.Fatalf("Run with the permit refused: %v, want ErrNotPermitted", err)
	}
	if st := srv.Stats(); st.Identifies != 0 || st.Shards[0].MaxLive != 0 {
		t.Fatalf("refused, yet the fake saw %d identifies and %d live connections", st.Identifies, st.Shards[0].MaxLive)
	}

	// Permitted: it identifies; then a drop with the permit refused must not resume.
	refuse.Store(false)
	ts := startShard(t, cfg)
	rec.waitFor(t, "events", func() bool { return len(rec.delivered(0)) >= 5 })
	refuse.Store(true)
	srv.DropShard(0)
	select {
	case err := <-ts.errc:
		if !errors.Is(err, shard.ErrNotPermitted) {
			t.Fatalf("Run after a drop with the permit refused: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run kept going with the permit refused")
	}
	if st := srv.Stats(); st.Resumes != 0 || st.Shards[0].Live != 0 {
		t.Fatalf("refused, yet %d resumes and %d live connections", st.Resumes, st.Shards[0].Live)
	}
	refuse.Store(false)
	go func() { ts.errc <- ts.Run(context.Background()) }()
	awaitFake(t, srv, "the session resumed", func(st gatewaytest.Stats) bool { return st.Resumes == 1 && st.Shards[0].Live == 1 })
	if st := srv.Stats(); st.Identifies != 1 {
		t.Fatalf("%d identifies: the permitted reconnect should have resumed", st.Identifies)
	}
}
