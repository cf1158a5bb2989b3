package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// leaseKeeper holds this node's lease: the right to run shards, granted by the leader
// for --lease from the moment the request was sent. The leader grants nothing to a
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

// leaseLoop renews the lease a few times per lease period and tells the supervisor
// whenever it is gained or lost.
func (n *Node) leaseLoop() {
	every := n.cfg.Lease / 4
	// After a failure (a leader change, most often) it asks again soon: the lease
	// left is all the time there is to find the new leader.
	retry := min(every, 100*time.Millisecond)
	next := time.NewTimer(every)
	defer next.Stop()
	expiry := time.NewTimer(time.Hour)
	defer expiry.Stop()
	var failures int
	for {
		sent := time.Now()
		err := n.renew(every)
		l := &n.lease
		l.mu.Lock()
		wasHeld := sent.Before(l.until) || time.Now().Before(l.until)
		if err == nil {
			l.until = sent.Add(n.cfg.Lease)
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

// renew asks the leader (or, on the leader, itself) for a lease, and returns once
// this node's state machine has caught up with the grant.
func (n *Node) renew(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(n.ctx, timeout)
	defer cancel()
	var index uint64
	if n.raft.State() == raft.Leader {
		idx, err := n.grantLease(n.cfg.Name)
		if err != nil {
			return err
		}
		index = idx
	} else {
		addr, _ := n.raft.LeaderWithID()
		if addr == "" {
			return fmt.Errorf("%w: no leader known for %v (without a majority of the voters there is none: quorum lost?)",
				ErrNoLeader, time.Since(n.raft.LastContact()).Round(time.Millisecond))
		}
		var reply RenewReply
		if err := n.peers.call(ctx, string(addr), "Renew", &RenewArgs{Node: n.cfg.Name}, &reply); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("leader %s did not answer within %v", addr, timeout)
			}
			return fmt.Errorf("leader %s: %w", addr, err)
		}
		index = reply.Index
	}
	// The grant counts only once this node's state machine has applied everything the
	// leader's had: a shard moved away before the grant must not run here under it.
	// raft.AppliedIndex would not do: it runs ahead of the state machine under load,
	// and a restarted node would start shards that its stale state still gives it.
	for n.fsm.AppliedIndex() < index {
		if !sleepCtx(ctx, 5*time.Millisecond) {
			return fmt.Errorf("state machine behind the leader (%d < %d)", n.fsm.AppliedIndex(), index)
		}
	}
	return nil
}
