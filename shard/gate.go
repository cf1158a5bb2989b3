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

// SendReporter is an IdentifyGate that times the next grant of a bucket from the
// moment the granted IDENTIFY was written rather than from the grant. A shard reports
// every grant it was given, whether or not the write succeeded, right after the
// attempt. Without it, a grant that reached its shard late (a slow RPC, a busy
// scheduler) lets the next IDENTIFY of the bucket arrive less than a window after it.
type SendReporter interface {
	IdentifySent(shardID int)
}

// DefaultIdentifyWindow is Discord's identify rate-limit window.
const DefaultIdentifyWindow = 5 * time.Second

// LocalGate enforces Discord's identify rule inside one process: one grant per bucket
// per window, buckets independent of each other, waiters in one bucket served in
// the order they came.
type LocalGate struct {
	maxConcurrency int
	spacing        time.Duration

	mu        sync.Mutex
	buckets   map[int]*gateBucket
	notBefore time.Time // no bucket's first grant comes earlier; see HoldUntil
}

// gateBucket lets one waiter at a time through. The next grant is timed from the
// moment the previous one was actually given, not from when it was due: a waiter
// whose timer fired late (a loaded machine) must push the next grant back with it.
type gateBucket struct {
	turn chan struct{} // capacity 1: holding it is holding the bucket

	// Guarded by LocalGate.mu.
	last    time.Time     // the previous grant, or its reported send when later
	pending chan struct{} // closed when the previous grant is reported sent; nil if it was
	granted int           // the shard of the previous grant
}

// GrantDeadline is how long after a grant its IDENTIFY may still be written. A gate
// whose grants travel (a cluster-wide gate, over RPC) must make its shards drop a
// grant that reached them later than this.
const GrantDeadline = 2 * time.Second

// unreportedWait is how long a bucket waits for the previous grant to be reported
// sent. A shard that stopped between grant and send never reports; its bucket then
// times the next grant from the end of this wait, as if the IDENTIFY had been written
// at the last moment it could be.
func (g *LocalGate) unreportedWait() time.Duration { return max(g.spacing, GrantDeadline) }

// NewLocalGate returns a gate for maxConcurrency buckets and the given window
// (DefaultIdentifyWindow in production), with grants in one bucket spaced
// window + ArrivalMargin(window) apart.
func NewLocalGate(maxConcurrency int, window time.Duration) (*LocalGate, error) {
	return NewLocalGateMargin(maxConcurrency, window, ArrivalMargin(window))
}

// NewLocalGateMargin is NewLocalGate with a chosen margin, for a benchmark that
// measures how close to Discord's floor a cold start can get.
func NewLocalGateMargin(maxConcurrency int, window, margin time.Duration) (*LocalGate, error) {
	if maxConcurrency < 1 {
		return nil, fmt.Errorf("identify gate: max_concurrency %d must be at least 1", maxConcurrency)
	}
	if window <= 0 {
		return nil, fmt.Errorf("identify gate: window %v must be positive", window)
	}
	if margin < 0 {
		return nil, fmt.Errorf("identify gate: margin %v must not be negative", margin)
	}
	return &LocalGate{
		maxConcurrency: maxConcurrency,
		spacing:        window + margin,
		buckets:        make(map[int]*gateBucket),
	}, nil
}

// ArrivalMargin is the slack a client keeps on a limit that the gateway measures
// by arrival time (the identify window, the send window): two sends spaced exactly
// one window apart can arrive less than a window apart when the first was delayed
// on the way (a scheduler stall, a retransmit). 1% of the window plus 20 ms: at
// Discord's 5 s identify window that costs a cold start 1.4% over the floor.
func ArrivalMargin(window time.Duration) time.Duration {
	return window/100 + 20*time.Millisecond
}

// Wait implements IdentifyGate.
func (g *LocalGate) Wait(ctx context.Context, shardID int) error {
	b := g.bucket(shardID % g.maxConcurrency)
	select {
	case b.turn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-b.turn }()
	g.mu.Lock()
	notBefore, pending := g.notBefore, b.pending
	g.mu.Unlock()
	if pending != nil {
		timer := time.NewTimer(g.unreportedWait())
		select {
		case <-pending:
		case <-timer.C:
			g.mu.Lock()
			if b.pending == pending {
				b.last, b.pending = time.Now(), nil
			}
			g.mu.Unlock()
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		}
		timer.Stop()
	}
	g.mu.Lock()
	last := b.last
	g.mu.Unlock()
	if last.IsZero() && !notBefore.IsZero() {
		if err := sleepUntil(ctx, notBefore); err != nil {
			return err
		}
	}
	if !last.IsZero() {
		if err := sleepUntil(ctx, last.Add(g.spacing)); err != nil {
			return err
		}
	}
	g.mu.Lock()
	b.last, b.pending, b.granted = time.Now(), make(chan struct{}), shardID
	g.mu.Unlock()
	return nil
}

// IdentifySent implements SendReporter: the bucket's next grant comes one spacing
// after now. A report for anything but the bucket's latest grant is ignored.
func (g *LocalGate) IdentifySent(shardID int) {
	b := g.bucket(shardID % g.maxConcurrency)
	g.mu.Lock()
	defer g.mu.Unlock()
	if b.pending == nil || b.granted != shardID {
		return
	}
	b.last = time.Now()
	close(b.pending)
	b.pending = nil
}

// HoldUntil delays the first grant of every bucket until t. A gate that takes over
// from another one (a new Raft leader granting identifies for the whole cluster)
// does not know when the old one last granted, so it waits one window before its
// first grant.
func (g *LocalGate) HoldUntil(t time.Time) {
	g.mu.Lock()
	g.notBefore = t
	g.mu.Unlock()
}

func (g *LocalGate) bucket(n int) *gateBucket {
	g.mu.Lock()
	defer g.mu.Unlock()
	b, ok := g.buckets[n]
	if !ok {
		b = &gateBucket{turn: make(chan struct{}, 1)}
		g.buckets[n] = b
	}
	return b
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
