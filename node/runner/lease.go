package runner

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/discluster/discluster/internal/backoff"
	"github.com/discluster/discluster/node/api"
)

// lease holds this node's lease: the right to run shards, granted by a leader that
// has just proven it leads (a quorum answered it), for the cluster's replicated
// lease, counted from the moment the request was sent. The leader grants nothing to
// a node it marked failed, and waits a lease before it gives that node's shards
// away; so by then the node has stopped them by itself, even if it was paused or
// cut off.
type lease struct {
	mu     sync.Mutex
	until  time.Time
	reason string    // why there is no lease, for status and logs
	since  time.Time // when the current lease state (held or not) began
	held   bool
}

func (l *lease) valid(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return now.Before(l.until)
}

func (l *lease) status(now time.Time) api.Lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	held := now.Before(l.until)
	s := api.Lease{Held: held, Until: l.until, Since: l.since}
	if !held {
		s.Reason = l.reason
	}
	return s
}

// Lease is the lease as status shows it.
func (r *Runner) Lease() api.Lease { return r.lease.status(r.now()) }

// holdLease renews the lease a few times per lease period and pokes the supervisor
// whenever it is gained or lost.
func (r *Runner) holdLease() {
	next := time.NewTimer(r.deps.Lease() / 4)
	defer next.Stop()
	expiry := time.NewTimer(time.Hour)
	defer expiry.Stop()
	var failures int
	l := &r.lease
	for {
		every := r.deps.Lease() / 4
		// After a failure (a leader change, most often) it asks again soon: the lease
		// left is all the time there is to find the new leader.
		retry := min(every, 100*time.Millisecond)
		sent := r.now()
		granted, err := r.renew(every)
		now := r.now()
		l.mu.Lock()
		wasHeld := sent.Before(l.until) || now.Before(l.until)
		if err == nil {
			// Counted from before the request left: the leader proved it leads after
			// that, so this lease ends no later than that proof plus the lease.
			l.until = sent.Add(granted)
			failures = 0
		} else {
			l.reason = err.Error()
			failures++
		}
		nowHeld := now.Before(l.until)
		if nowHeld != l.held {
			l.held, l.since = nowHeld, now
		}
		until, reason := l.until, l.reason
		l.mu.Unlock()
		switch {
		case nowHeld && !wasHeld:
			r.log.Info("lease granted", "until", until.Format(time.TimeOnly))
			r.Poke()
		case err != nil && failures == 1 && until.IsZero():
			r.log.Info("no lease yet", "why", err)
		case err != nil && failures == 1:
			r.log.Warn("lease renewal failed", "err", err, "lease_left", max(0, until.Sub(now)).Round(time.Millisecond))
		}
		if nowHeld {
			expiry.Reset(until.Sub(now))
		}
		if err != nil {
			next.Reset(retry)
		} else {
			next.Reset(every)
		}
		select {
		case <-r.ctx.Done():
			return
		case <-next.C:
		case <-expiry.C:
			if !l.valid(r.now()) {
				r.log.Error("lease expired: suspending every shard here until the leader renews it", "why", reason)
				r.Poke()
			}
		}
	}
}

// renew asks the leader (or, on the leader, itself: through the same check) for a
// lease, and returns its duration once this node's state machine has caught up with
// the grant.
func (r *Runner) renew(timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	defer cancel()
	g, err := r.deps.Leader.Renew(ctx, r.gw.unfit())
	if err != nil {
		return 0, err
	}
	if g.Lease <= 0 {
		return 0, fmt.Errorf("leader granted a lease of %v", g.Lease)
	}
	// The grant counts only once this node's state machine has applied everything the
	// leader's had: a shard moved away before the grant must not run here under it.
	// raft.AppliedIndex would not do: it runs ahead of the state machine under load,
	// and a restarted node would start shards that its stale state still gives it.
	f := r.deps.FSM
	for f.AppliedIndex() < g.Index {
		if !backoff.Sleep(ctx, 5*time.Millisecond) {
			return 0, fmt.Errorf("state machine behind the leader (%d < %d)", f.AppliedIndex(), g.Index)
		}
	}
	return g.Lease, nil
}
