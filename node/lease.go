package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// leaseKeeper holds this node's lease: the right to run shards, granted by a leader
// that has just proven it leads (a quorum answered it), for the cluster's replicated
// lease, counted from the moment the request was sent. The leader grants nothing to a
// node it marked failed, and waits a lease before it gives that node's shards away;
// so by then the node has stopped them by itself, even if it was paused or cut off.
type leaseKeeper struct {
	mu     sync.Mutex
	until  time.Time
	reason string    // why there is no lease, for status and logs
	since  time.Time // when the current lease state (held or not) began
	held   bool
}

// LeaseStatus is the lease as status shows it.
type LeaseStatus struct {
	Held   bool      `json:"held"`
	Until  time.Time `json:"until,omitzero"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since,omitzero"`
}

func (l *leaseKeeper) valid(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return now.Before(l.until)
}

func (l *leaseKeeper) status() LeaseStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	held := time.Now().Before(l.until)
	s := LeaseStatus{Held: held, Until: l.until, Since: l.since}
	if !held {
		s.Reason = l.reason
	}
	return s
}

// leaseDuration is the cluster's lease: the replicated value, which every node keeps
// and every leader fences with, whatever its own --lease says. Before the cluster
// has a configuration no shard is assigned, and the flag stands in.
func (n *Node) leaseDuration() time.Duration {
	if c := n.fsm.Config(); c.Lease > 0 {
		return c.Lease
	}
	return n.cfg.Lease
}

// warnLeaseFlag says once that --lease differs from the cluster's lease, which is
// the one this node follows.
func (n *Node) warnLeaseFlag() {
	if c := n.fsm.Config(); c.Lease > 0 && c.Lease != n.cfg.Lease && n.leaseWarned.CompareAndSwap(false, true) {
		n.log.Warn("--lease differs from the cluster's lease; following the cluster's (a lease is one value for the whole cluster, set when it was first configured)",
			"flag", n.cfg.Lease, "cluster", c.Lease)
		n.note("--lease %v ignored: the cluster's lease is %v", n.cfg.Lease, c.Lease)
	}
}

// leaseLoop renews the lease a few times per lease period and tells the supervisor
// whenever it is gained or lost.
func (n *Node) leaseLoop() {
	next := time.NewTimer(n.leaseDuration() / 4)
	defer next.Stop()
	expiry := time.NewTimer(time.Hour)
	defer expiry.Stop()
	var failures int
	for {
		every := n.leaseDuration() / 4
		// After a failure (a leader change, most often) it asks again soon: the lease
		// left is all the time there is to find the new leader.
		retry := min(every, 100*time.Millisecond)
		sent := time.Now()
		granted, err := n.renew(every)
		l := &n.lease
		l.mu.Lock()
		wasHeld := sent.Before(l.until) || time.Now().Before(l.until)
		if err == nil {
			// Counted from before the request left: the leader proved it leads after
			// that, so this lease ends no later than that proof plus the lease.
			l.until = sent.Add(granted)
			failures = 0
		} else {
			l.reason = err.Error()
			failures++
		}
		nowHeld := time.Now().Before(l.until)
		if nowHeld != l.held {
			l.held, l.since = nowHeld, time.Now()
		}
		until, reason := l.until, l.reason
		l.mu.Unlock()
		switch {
		case nowHeld && !wasHeld:
			n.log.Info("lease granted", "until", until.Format(time.TimeOnly))
			n.sup.poke()
		case err != nil && failures == 1:
			n.log.Warn("lease renewal failed", "err", err, "lease_left", time.Until(until).Round(time.Millisecond))
		}
		if nowHeld {
			expiry.Reset(time.Until(until))
		}
		if err != nil {
			next.Reset(retry)
		} else {
			next.Reset(every)
		}
		select {
		case <-n.ctx.Done():
			return
		case <-next.C:
		case <-expiry.C:
			if !n.lease.valid(time.Now()) {
				n.log.Error("lease expired: suspending every shard here until the leader renews it", "why", reason)
				n.sup.poke()
			}
		}
	}
}

// renew asks the leader (or, on the leader, itself: through the same check) for a
// lease, and returns its duration once this node's state machine has caught up with
// the grant.
func (n *Node) renew(timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(n.ctx, timeout)
	defer cancel()
	var index uint64
	var lease time.Duration
	if n.raft.State() == raft.Leader {
		g, err := n.grantLease(ctx, n.cfg.Name)
		if err != nil {
			return 0, err
		}
		index, lease = g.Index, g.Lease
	} else {
		addr, _ := n.raft.LeaderWithID()
		if addr == "" {
			since := "since this node started"
			if last := n.raft.LastContact(); !last.IsZero() {
				since = "for " + time.Since(last).Round(time.Millisecond).String()
			}
			return 0, fmt.Errorf("%w: no leader known %s (without a majority of the voters there is none: quorum lost?)", ErrNoLeader, since)
		}
		var reply RenewReply
		if err := n.peers.call(ctx, string(addr), "Renew", &RenewArgs{Node: n.cfg.Name}, &reply); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return 0, fmt.Errorf("leader %s did not answer within %v", addr, timeout)
			}
			return 0, fmt.Errorf("leader %s: %w", addr, err)
		}
		index, lease = reply.Index, reply.Lease
	}
	if lease <= 0 {
		return 0, fmt.Errorf("leader granted a lease of %v", lease)
	}
	// The grant counts only once this node's state machine has applied everything the
	// leader's had: a shard moved away before the grant must not run here under it.
	// raft.AppliedIndex would not do: it runs ahead of the state machine under load,
	// and a restarted node would start shards that its stale state still gives it.
	for n.fsm.AppliedIndex() < index {
		if !sleepCtx(ctx, 5*time.Millisecond) {
			return 0, fmt.Errorf("state machine behind the leader (%d < %d)", n.fsm.AppliedIndex(), index)
		}
	}
	return lease, nil
}
