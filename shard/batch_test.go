package shard_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/discluster/discluster/shard"
	"github.com/discluster/discluster/shard/gatewaytest"
)

// A BatchHandler gets what the queue holds, never more than MaxBatch and never
// waiting for more: while it is slow, events pile up and the next call takes them
// all; each event's verdict counts as Handler's return would. An event refused
// freezes its shard's position, and Remove hands back the last event handled before
// it.
func TestClusterBatchHandler(t *testing.T) {
	srv := newFake(t, gatewaytest.Options{EventRate: 400})
	rec := newRecorder()
	var (
		mu      sync.Mutex
		sizes   []int
		refuse  int64 // seq from which events are refused; 0: none
		handled int64
	)
	errRefused := errors.New("refused (test)")
	c := newCluster(t, shard.ClusterConfig{QueueSize: 64, MaxBatch: 16, BatchHandler: func(evs []shard.Event, errs []error) {
		if len(errs) != len(evs) {
			t.Errorf("%d verdicts for %d events", len(errs), len(evs))
		}
		mu.Lock()
		sizes = append(sizes, len(evs))
		mu.Unlock()
		time.Sleep(20 * time.Millisecond) // a sink's round trip, during which events queue up
		for i, ev := range evs {
			mu.Lock()
			if refuse > 0 && ev.Seq >= refuse {
				errs[i] = errRefused
				mu.Unlock()
				continue
			}
			handled = max(handled, ev.Seq)
			mu.Unlock()
			rec.handle(ev)
		}
	}})
	cfg := baseConfig(t, srv, rec, 0, 1)
	cfg.Dispatch = nil
	if err := c.Add(cfg); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "200 events", func() bool { return len(rec.delivered(0)) >= 200 })
	mu.Lock()
	big := 0
	for _, n := range sizes {
		if n > 16 || n < 1 {
			t.Errorf("a batch of %d events (MaxBatch 16)", n)
		}
		if n > 1 {
			big++
		}
	}
	refuse = handled + 5
	mu.Unlock()
	if big == 0 {
		t.Errorf("no batch of more than one event while the handler was slow: %v", sizes)
	}
	rec.waitFor(t, "events past the refused one", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(sizes) > 0 && handled >= refuse-1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs, err := c.Remove(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rs.Seq != refuse-1 {
		t.Errorf("final position %d, want %d: the last event before the refused one", rs.Seq, refuse-1)
	}
	checkContiguous(t, rec.delivered(0), 1, rs.Seq)
}
