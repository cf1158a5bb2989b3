package shard

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestLocalGateOneGrantPerBucketPerWindow(t *testing.T) {
	const (
		maxConcurrency = 3
		shards         = 9
		window         = 40 * time.Millisecond
	)
	g, err := NewLocalGate(maxConcurrency, window)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var mu sync.Mutex
	grants := make(map[int][]time.Time) // by bucket
	var wg sync.WaitGroup
	for id := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := g.Wait(ctx, id); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			grants[id%maxConcurrency] = append(grants[id%maxConcurrency], time.Now())
			mu.Unlock()
			g.IdentifySent(id)
		}()
	}
	wg.Wait()
	for bucket, ts := range grants {
		if len(ts) != shards/maxConcurrency {
			t.Fatalf("bucket %d: %d grants, want %d", bucket, len(ts), shards/maxConcurrency)
		}
		// The gate spaces grants window+margin apart; recording a grant can lag it by
		// a scheduler delay, which the margin (20 ms here) absorbs.
		for i := 1; i < len(ts); i++ {
			if gap := ts[i].Sub(ts[i-1]); gap < window {
				t.Errorf("bucket %d: grants %d and %d only %v apart, window %v", bucket, i-1, i, gap, window)
			}
		}
	}
}

func TestLocalGateCancelledWaitReturns(t *testing.T) {
	g, err := NewLocalGate(1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Wait(context.Background(), 0); err != nil { // the first grant is immediate
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Wait(ctx, 0); err == nil {
		t.Fatal("a cancelled wait for a bucket an hour away returned a grant")
	}
}

func TestLocalGateBucketsAreIndependent(t *testing.T) {
	g, err := NewLocalGate(2, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Shards 0 and 1 are in different buckets: neither waits for the other's hour.
	for _, id := range []int{0, 1} {
		if err := g.Wait(ctx, id); err != nil {
			t.Fatalf("shard %d waited on another bucket: %v", id, err)
		}
	}
}

func TestNewLocalGateRejectsBadInput(t *testing.T) {
	if _, err := NewLocalGate(0, time.Second); err == nil {
		t.Error("max_concurrency 0 accepted")
	}
	if _, err := NewLocalGate(1, 0); err == nil {
		t.Error("window 0 accepted")
	}
}

func TestLocalGateHoldUntilDelaysFirstGrants(t *testing.T) {
	g, err := NewLocalGate(2, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hold := time.Now().Add(300 * time.Millisecond)
	g.HoldUntil(hold)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range []int{0, 1} {
		if err := g.Wait(ctx, id); err != nil {
			t.Fatal(err)
		}
		if now := time.Now(); now.Before(hold) {
			t.Fatalf("shard %d granted %v before the hold ended", id, hold.Sub(now))
		}
	}
}

// A grant that reaches its shard late must push the bucket's next grant back with
// it: Discord measures the window between arrivals, not between grants.
func TestLocalGateTimesNextGrantFromReportedSend(t *testing.T) {
	const window = 50 * time.Millisecond
	g, ctx := oneBucketGrantedShard0(t, window)
	granted := make(chan time.Time, 1)
	go func() {
		if err := g.Wait(ctx, 1); err != nil {
			t.Error(err)
		}
		granted <- time.Now()
	}()
	g.IdentifySent(7) // not the bucket's latest grant: ignored
	// Shard 0 is slow to write its IDENTIFY: two spacings, where timing from the grant
	// let shard 1 through after one.
	slow := time.NewTimer(2 * (window + ArrivalMargin(window)))
	<-slow.C
	sent := time.Now()
	g.IdentifySent(0)
	if at := <-granted; at.Sub(sent) < window {
		t.Fatalf("shard 1 granted %v after shard 0's IDENTIFY was written; the window is %v", at.Sub(sent), window)
	}
}

// A shard that stops between its grant and its IDENTIFY never reports; its bucket
// goes on, timed as if the IDENTIFY had been written at the last moment it could be.
func TestLocalGateUnreportedGrantReleasesBucket(t *testing.T) {
	const window = 20 * time.Millisecond
	g, ctx := oneBucketGrantedShard0(t, window)
	first := time.Now()
	if err := g.Wait(ctx, 1); err != nil {
		t.Fatalf("the bucket stayed blocked by an unreported grant: %v", err)
	}
	if gap, want := time.Since(first), g.unreportedWait()+window; gap < want {
		t.Fatalf("second grant %v after an unreported one; want at least %v", gap, want)
	}
}

// oneBucketGrantedShard0 returns a one-bucket gate that has just granted shard 0, and
// a context that ends with the test.
func oneBucketGrantedShard0(t *testing.T, window time.Duration) (*LocalGate, context.Context) {
	t.Helper()
	g, err := NewLocalGate(1, window)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	if err := g.Wait(ctx, 0); err != nil {
		t.Fatal(err)
	}
	return g, ctx
}
