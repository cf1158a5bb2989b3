package shard

import (
	"context"
	"sync"
	"time"
)

// sendLimiter keeps one connection's sends inside Discord's limit of limit payloads
// per window (120 per 60 s; over it the gateway closes with 4008). It is a
// sliding-window log rather than a token bucket because the gateway counts a sliding
// window: a bucket refilled at 2/s with a burst would still allow more than 120 in
// some 60 s span.
//
// Heartbeats, IDENTIFY and RESUME must never wait behind commands, or a busy shard
// would miss its heartbeat and be disconnected; they go through record and are
// covered by reserve, the room kept free of commands.
type sendLimiter struct {
	limit   int
	reserve int
	window  time.Duration

	mu sync.Mutex
	// times holds the sends still inside the window, oldest first. It grows by
	// append and is dropped when empty, so an idle shard (a heartbeat every 41 s)
	// keeps two entries rather than a ring of limit.
	times []time.Time
}

// newSendLimiter sizes the reserve from the heartbeat interval: at most
// ceil(window/interval)+1 heartbeats fall in one window, plus IDENTIFY or RESUME, plus
// one heartbeat the server asks for.
func newSendLimiter(limit int, window, heartbeat time.Duration) *sendLimiter {
	beats := 1
	if heartbeat > 0 {
		beats = int((window+heartbeat-1)/heartbeat) + 1
	}
	reserve := beats + 2
	if reserve > limit-1 {
		// Only a test-sized heartbeat interval gets here; keep one command slot so
		// Send cannot block forever.
		reserve = limit - 1
	}
	// The gateway counts arrivals; a send leaves our window ArrivalMargin later than
	// it would leave Discord's, so jitter cannot squeeze two windows' worth into one.
	window += ArrivalMargin(window)
	return &sendLimiter{limit: limit, reserve: reserve, window: window}
}

// commandLimit is how many commands fit in one window.
func (l *sendLimiter) commandLimit() int { return l.limit - l.reserve }

// countLocked drops sends older than the window and returns how many remain.
func (l *sendLimiter) countLocked(now time.Time) int {
	old := 0
	for old < len(l.times) && now.Sub(l.times[old]) >= l.window {
		old++
	}
	l.times = l.times[old:]
	if len(l.times) == 0 {
		l.times = nil
	}
	return len(l.times)
}

func (l *sendLimiter) pushLocked(now time.Time) {
	if len(l.times) == l.limit {
		// Only priority sends beyond the reserve get here; forget the oldest.
		l.times = l.times[1:]
	}
	l.times = append(l.times, now)
}

// record notes a priority send (heartbeat, IDENTIFY, RESUME).
func (l *sendLimiter) record() {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.countLocked(now)
	l.pushLocked(now)
}

// wait blocks until a command may be sent and records it. A wait that would end
// past ctx's deadline is refused at once with a *RateLimitedError, so that a caller
// with a deadline learns when to come back instead of waiting it out.
func (l *sendLimiter) wait(ctx context.Context) error {
	for {
		l.mu.Lock()
		now := time.Now()
		if l.countLocked(now) < l.commandLimit() {
			l.pushLocked(now)
			l.mu.Unlock()
			return nil
		}
		// The window must slide past enough old sends to leave a command slot.
		over := len(l.times) - l.commandLimit()
		free := l.times[over].Add(l.window)
		l.mu.Unlock()
		if deadline, ok := ctx.Deadline(); ok && free.After(deadline) {
			return &RateLimitedError{RetryAfter: free.Sub(now)}
		}
		if err := sleepUntil(ctx, free); err != nil {
			return err
		}
	}
}
