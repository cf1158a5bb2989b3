// Package backoff is the one wait-between-attempts helper that every retry loop in
// discluster uses: a capped exponential wait with optional jitter, and a sleep that
// ends when its context does.
//
// It never retries anything itself (the caller owns the loop and decides when to
// give up), never starts a goroutine, and never sleeps past the end of its context.
package backoff

import (
	"context"
	"math"
	"math/rand/v2"
	"time"
)

// Backoff is a capped exponential wait: Min, 2·Min, 4·Min, … up to Max.
//
// Min must be positive. The rules for settings that make no sense, so that a
// misconfigured loop neither overflows nor spins:
//   - Min <= 0: the wait does not grow; every wait is Max (or 0 if Max <= 0 too,
//     which is also what the zero Backoff hands out).
//   - Max < Min: the cap is Min, so every wait is Min.
//
// A Backoff is not safe for concurrent use: give each retry loop its own.
type Backoff struct {
	Min, Max time.Duration
	// Jitter, in [0,1), takes up to that fraction off each wait at random, so that
	// many waiters that failed together do not retry together. A wait d with
	// jitter j lies in (d·(1-j), d]. Jitter below 0 (or NaN) counts as 0, above 1
	// as 1.
	Jitter float64

	attempt int
}

// Next returns the wait before the next attempt and advances the attempt count.
func (b *Backoff) Next() time.Duration {
	d := b.wait(b.attempt)
	if b.attempt < math.MaxInt {
		b.attempt++
	}
	return b.jitter(d)
}

// Attempt reports how many waits Next has handed out since the last Reset.
func (b *Backoff) Attempt() int { return b.attempt }

// Reset starts the sequence again from Min, as after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// Wait is Sleep(ctx, b.Next()): it reports whether the full wait passed.
func (b *Backoff) Wait(ctx context.Context) bool { return Sleep(ctx, b.Next()) }

// wait is the wait without jitter for attempt n (0 for the first).
func (b *Backoff) wait(n int) time.Duration {
	if b.Min <= 0 {
		return max(b.Max, 0)
	}
	limit := max(b.Max, b.Min)
	// Min<<n is exact and within limit as long as n < 63 and Min <= limit>>n;
	// past that it would reach or pass the cap (or overflow), so it is the cap.
	if n < 63 && b.Min <= limit>>uint(n) {
		return b.Min << uint(n)
	}
	return limit
}

func (b *Backoff) jitter(d time.Duration) time.Duration {
	j := b.Jitter
	if !(j > 0) || d <= 0 {
		return d
	}
	j = min(j, 1)
	// rand.Float64 is in [0,1), so the cut is below j·d and the wait stays above
	// d·(1-j): with Jitter 1 it is still more than 0.
	return d - time.Duration(rand.Float64()*j*float64(d))
}

// Sleep waits d or until ctx ends, whichever is first; it reports whether the full
// wait passed. A context that has already ended returns false at once, whatever d;
// d <= 0 does not wait. Its timer is stopped on return, so an early end leaks
// nothing (unlike time.After).
func Sleep(ctx context.Context, d time.Duration) bool {
	if ctx.Err() != nil {
		return false
	}
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
