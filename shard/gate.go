package shard

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// IdentifyGate decides when a shard may send IDENTIFY. Discord allows max_concurrency
// IDENTIFYs per 5 s, one per bucket (shard_id % max_concurrency); one that comes too
// early is answered with INVALID_SESSION and counts against the bot. Every shard of a
// bot must go through the same gate, so a multi-node deployment supplies a
// cluster-wide one; LocalGate is right only when one process runs every shard.
type IdentifyGate interface {
	// Wait blocks until shardID may send IDENTIFY, or ctx ends. A nil error is a
	// grant the caller is expected to use at once.
	Wait(ctx context.Context, shardID int) error
}

// DefaultIdentifyWindow is Discord's identify rate-limit window.
const DefaultIdentifyWindow = 5 * time.Second

// LocalGate enforces Discord's identify rule inside one process: one grant per bucket
// per window, buckets independent of each other.
type LocalGate struct {
	maxConcurrency int
	spacing        time.Duration

	mu   sync.Mutex
	next map[int]time.Time // per bucket: the earliest next grant
}

// NewLocalGate returns a gate for maxConcurrency buckets and the given window
// (DefaultIdentifyWindow in production). Grants in one bucket are spaced a little
// more than the window apart (GateMargin): the gateway times IDENTIFYs when they
// arrive, and two grants exactly one window apart can arrive less than a window
// apart when the first one's write was the slower.
func NewLocalGate(maxConcurrency int, window time.Duration) (*LocalGate, error) {
	if maxConcurrency < 1 {
		return nil, fmt.Errorf("identify gate: max_concurrency %d must be at least 1", maxConcurrency)
	}
	if window <= 0 {
		return nil, fmt.Errorf("identify gate: window %v must be positive", window)
	}
	return &LocalGate{
		maxConcurrency: maxConcurrency,
		spacing:        window + GateMargin(window),
		next:           make(map[int]time.Time),
	}, nil
}

// GateMargin is the safety margin added between two identify grants of one bucket:
// 1% of the window plus 5 ms, which keeps a 5 s window's cold start within 1.1% of
// Discord's floor.
func GateMargin(window time.Duration) time.Duration {
	return window/100 + 5*time.Millisecond
}

// Wait implements IdentifyGate. A caller whose ctx ends while it waits gives up its
// slot unused; the bucket stays conservative rather than risking a double grant.
func (g *LocalGate) Wait(ctx context.Context, shardID int) error {
	bucket := shardID % g.maxConcurrency
	g.mu.Lock()
	now := time.Now()
	slot := g.next[bucket]
	if slot.Before(now) {
		slot = now
	}
	g.next[bucket] = slot.Add(g.spacing)
	g.mu.Unlock()
	return sleepUntil(ctx, slot)
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
