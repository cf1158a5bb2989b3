package shard

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestSendLimiterReservesHeartbeats(t *testing.T) {
	// Discord's numbers: 120 per 60 s, heartbeats every 41.25 s.
	l := newSendLimiter(120, time.Minute, 41250*time.Millisecond)
	if got := l.commandLimit(); got != 115 {
		t.Fatalf("command limit %d, want 115 (3 heartbeats, IDENTIFY/RESUME and one requested beat kept free)", got)
	}
}

func TestSendLimiterNeverExceedsLimitInAnyWindow(t *testing.T) {
	const window = 200 * time.Millisecond
	l := newSendLimiter(10, window, time.Hour) // reserve 4: 6 commands per window
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var sends []time.Time
	for i := range 20 {
		if i%5 == 0 {
			l.record() // a heartbeat squeezed between commands
		} else if err := l.wait(ctx); err != nil {
			t.Fatal(err)
		}
		sends = append(sends, time.Now())
	}
	for i := range sends {
		n := 0
		for j := i; j < len(sends) && sends[j].Sub(sends[i]) < window; j++ {
			n++
		}
		if n > 10 {
			t.Fatalf("%d sends within one window starting at send %d, limit 10", n, i)
		}
	}
}

func TestSendLimiterWaitHonoursContext(t *testing.T) {
	l := newSendLimiter(4, time.Hour, time.Hour) // reserve clamps to 3: one command per hour
	if err := l.wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.wait(ctx); err == nil {
		t.Fatal("second command in the window did not wait")
	}
}

// A command the limit would hold past the caller's deadline is refused at once, with
// when a slot frees; without a deadline it waits.
func TestSendLimiterRefusesPastTheDeadline(t *testing.T) {
	l := newSendLimiter(10, time.Hour, time.Hour) // 6 commands an hour
	for range 6 {
		if err := l.wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	err := l.wait(ctx)
	var rl *RateLimitedError
	if !errors.As(err, &rl) || !errors.Is(err, ErrRateLimited) {
		t.Fatalf("the 7th command: %v, want a RateLimitedError", err)
	}
	if waited := time.Since(start); waited > 500*time.Millisecond {
		t.Fatalf("refused after %v, want at once", waited)
	}
	if rl.RetryAfter < 59*time.Minute || rl.RetryAfter > 62*time.Minute {
		t.Fatalf("retry after %v, want about the window (an hour)", rl.RetryAfter)
	}
}
