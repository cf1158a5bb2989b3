package backoff

import (
	"context"
	"math"
	"testing"
	"time"
)

func TestNextDoublesUpToMax(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond}
	want := []time.Duration{10, 20, 40, 80, 100, 100, 100}
	for i, w := range want {
		if got := b.Next(); got != w*time.Millisecond {
			t.Fatalf("wait %d: got %v, want %v", i, got, w*time.Millisecond)
		}
	}
}

func TestNextExactCap(t *testing.T) {
	b := Backoff{Min: time.Second, Max: 4 * time.Second}
	want := []time.Duration{1, 2, 4, 4}
	for i, w := range want {
		if got := b.Next(); got != w*time.Second {
			t.Fatalf("wait %d: got %v, want %v", i, got, w*time.Second)
		}
	}
}

func TestNextJitterBounds(t *testing.T) {
	const jitter = 0.25
	b := Backoff{Min: 8 * time.Millisecond, Max: time.Second, Jitter: jitter}
	plain := Backoff{Min: b.Min, Max: b.Max}
	for i := 0; i < 200; i++ {
		full := plain.Next()
		got := b.Next()
		lo := time.Duration(float64(full) * (1 - jitter))
		if got <= lo || got > full {
			t.Fatalf("wait %d: got %v, want in (%v, %v]", i, got, lo, full)
		}
	}
}

func TestNextJitterVaries(t *testing.T) {
	// 100 draws from a continuous range all equal to the full wait has
	// probability 0 in float64 terms; this is not a timing assert.
	seen := map[time.Duration]bool{}
	for i := 0; i < 100; i++ {
		b := Backoff{Min: time.Second, Max: time.Second, Jitter: 0.5}
		seen[b.Next()] = true
	}
	if len(seen) < 2 {
		t.Fatalf("jitter 0.5 gave the same wait 100 times: %v", seen)
	}
}

func TestJitterOutOfRange(t *testing.T) {
	for _, j := range []float64{-1, math.NaN(), 0} {
		b := Backoff{Min: time.Second, Max: time.Second, Jitter: j}
		if got := b.Next(); got != time.Second {
			t.Errorf("Jitter %v: got %v, want no jitter (1s)", j, got)
		}
	}
	for _, j := range []float64{1, 5, math.Inf(1)} {
		for i := 0; i < 100; i++ {
			b := Backoff{Min: time.Second, Max: time.Second, Jitter: j}
			if got := b.Next(); got <= 0 || got > time.Second {
				t.Fatalf("Jitter %v: got %v, want in (0, 1s]", j, got)
			}
		}
	}
}

func TestResetAndAttempt(t *testing.T) {
	b := Backoff{Min: time.Millisecond, Max: time.Second}
	if b.Attempt() != 0 {
		t.Fatalf("new Backoff: Attempt %d, want 0", b.Attempt())
	}
	for i := 1; i <= 5; i++ {
		b.Next()
		if b.Attempt() != i {
			t.Fatalf("after %d Next: Attempt %d", i, b.Attempt())
		}
	}
	b.Reset()
	if b.Attempt() != 0 {
		t.Fatalf("after Reset: Attempt %d, want 0", b.Attempt())
	}
	if got := b.Next(); got != time.Millisecond {
		t.Fatalf("first wait after Reset: %v, want Min", got)
	}
}

func TestNoOverflow(t *testing.T) {
	for _, limit := range []time.Duration{time.Minute, math.MaxInt64} {
		b := Backoff{Min: time.Nanosecond, Max: limit}
		prev := time.Duration(0)
		for i := 0; i < 1000; i++ {
			got := b.Next()
			if got < prev || got > limit || got <= 0 {
				t.Fatalf("Max %v, wait %d: %v after %v", limit, i, got, prev)
			}
			prev = got
		}
		if prev != limit {
			t.Fatalf("Max %v: after 1000 waits got %v, want the cap", limit, prev)
		}
	}
	// A large Min against the largest Max: the first doubling already overflows.
	b := Backoff{Min: math.MaxInt64/2 + 1, Max: math.MaxInt64}
	for i := 0; i < 1000; i++ {
		if got := b.Next(); got <= 0 {
			t.Fatalf("wait %d: %v", i, got)
		}
	}
}

func TestMinNotPositive(t *testing.T) {
	for _, c := range []struct {
		min, max, want time.Duration
	}{
		{0, time.Second, time.Second},
		{-time.Second, time.Second, time.Second},
		{0, 0, 0},
		{0, -time.Second, 0},
	} {
		b := Backoff{Min: c.min, Max: c.max}
		for i := 0; i < 5; i++ {
			if got := b.Next(); got != c.want {
				t.Fatalf("Min %v Max %v, wait %d: %v, want %v", c.min, c.max, i, got, c.want)
			}
		}
	}
	var zero Backoff
	if got := zero.Next(); got != 0 {
		t.Fatalf("zero Backoff: %v, want 0", got)
	}
}

func TestMaxBelowMin(t *testing.T) {
	for _, limit := range []time.Duration{0, -1, time.Millisecond} {
		b := Backoff{Min: time.Second, Max: limit}
		for i := 0; i < 5; i++ {
			if got := b.Next(); got != time.Second {
				t.Fatalf("Max %v, wait %d: %v, want Min (1s)", limit, i, got)
			}
		}
	}
}

func TestSleepCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// An hour: if Sleep did not return at once the test would hang.
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep on a cancelled context reported the full wait")
	}
	if Sleep(ctx, 0) {
		t.Fatal("Sleep(0) on a cancelled context reported the full wait")
	}
}

func TestSleepShort(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep(1ms) on a live context reported an early end")
	}
	if !Sleep(context.Background(), 0) || !Sleep(context.Background(), -time.Second) {
		t.Fatal("Sleep with d <= 0 on a live context reported an early end")
	}
}

func TestWait(t *testing.T) {
	b := Backoff{Min: time.Millisecond, Max: time.Millisecond}
	if !b.Wait(context.Background()) {
		t.Fatal("Wait on a live context reported an early end")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b = Backoff{Min: time.Hour, Max: time.Hour}
	if b.Wait(ctx) {
		t.Fatal("Wait on a cancelled context reported the full wait")
	}
	if b.Attempt() != 1 {
		t.Fatalf("Wait did not advance the attempt: %d", b.Attempt())
	}
}
