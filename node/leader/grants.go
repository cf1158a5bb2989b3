package leader

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/node/rpc"
)

// GrantLease renews node's lease, the leader's own included. A node marked failed
// gets none: the leader is waiting for its last lease to run out before giving its
// shards away. Every grant follows a quorum's confirmation that this node still
// leads: a leader that was paused or cut off believes it leads until Raft notices,
// and must not extend anyone's lease, its own least of all, on that belief.
func (l *Leader) GrantLease(ctx context.Context, args rpc.RenewArgs) (rpc.LeaseGrant, error) {
	node := args.Node
	t := l.cur.Load()
	if t == nil || l.deps.Raft.State() != raft.Leader {
		return rpc.LeaseGrant{}, rpc.ErrNotLeader
	}
	if m, ok := l.deps.FSM.Member(node); ok && m.State == fsm.Failed {
		t.mu.Lock()
		t.grants.AskedWhileFailed[node] = true
		t.mu.Unlock()
		l.Poke()
		return rpc.LeaseGrant{}, fmt.Errorf("%w: %s is marked failed; its shards are moving to other nodes", rpc.ErrLeaseRefused, node)
	}
	if err := l.verifyLeader(ctx); err != nil {
		return rpc.LeaseGrant{}, fmt.Errorf("%w: a quorum did not confirm this leader: %v", rpc.ErrNotLeader, err)
	}
	lease := l.deps.Lease()
	t.mu.Lock()
	// Recorded after the proof: the asker counts from before it asked, so its lease
	// ends before this plus the lease.
	t.grants.LastRenew[node] = l.now()
	changed := t.grants.Unfit[node] != args.Unfit
	if args.Unfit == "" {
		delete(t.grants.Unfit, node)
	} else {
		t.grants.Unfit[node] = args.Unfit
	}
	t.mu.Unlock()
	if t.noteShardingRequired(node, args.ShardingRequired) {
		l.log.Warn("Discord closed a shard with 4011 (sharding required): the cluster needs more shards", "member", node, "gen", args.ShardingRequired)
		l.Poke()
	}
	if changed {
		if args.Unfit != "" {
			l.log.Warn("node holds no shards until it is fit", "member", node, "why", args.Unfit)
		} else {
			l.log.Info("node is fit to hold shards again", "member", node)
		}
		l.Poke()
	}
	// The state machine's index, not Raft's: Raft counts an entry applied once it is
	// handed to the state machine, which may still be working through a backlog.
	return rpc.LeaseGrant{Index: l.deps.FSM.AppliedIndex(), Lease: lease}, nil
}

// verifyLeader asks a quorum whether this node still leads, until ctx ends.
func (l *Leader) verifyLeader(ctx context.Context) error {
	f := l.deps.Raft.VerifyLeader()
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// leaseHeld reports whether node holds a lease this leader granted.
func (t *term) leaseHeld(node string, lease time.Duration, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	last, ok := t.grants.LastRenew[node]
	return ok && now.Sub(last) < lease
}

// checkOwner is the leader's rule for an identify: the asker must be the shard's
// current owner at the epoch it names, alive, and holding a lease from this leader.
func (l *Leader) checkOwner(t *term, node string, gen uint64, shardID int, epoch uint64) error {
	f := l.deps.FSM
	a, ok := f.AssignmentIn(max(gen, fsm.FirstGen), shardID)
	switch {
	case !ok:
		return fmt.Errorf("%w: shard %d of generation %d is not assigned", rpc.ErrNotOwner, shardID, max(gen, fsm.FirstGen))
	case a.Node != node || a.Epoch != epoch:
		return fmt.Errorf("%w: shard %d is %s's at epoch %d, not %s's at epoch %d", rpc.ErrNotOwner, shardID, a.Node, a.Epoch, node, epoch)
	case a.Phase != fsm.Assigned:
		return fmt.Errorf("%w: shard %d is being handed off (%s)", rpc.ErrNotOwner, shardID, a.Phase)
	}
	if m, ok := f.Member(node); !ok || m.State == fsm.Failed || m.State == fsm.Left {
		return fmt.Errorf("%w: %s is not an alive member", rpc.ErrNotOwner, node)
	}
	if !t.leaseHeld(node, l.deps.Lease(), l.now()) {
		return fmt.Errorf("%w: %s holds no lease from this leader", rpc.ErrNotOwner, node)
	}
	return nil
}

// GrantIdentify is the leader's side of the identify gate: the session start budget
// first, then one grant per bucket per window for the whole cluster. It returns when
// the grant was given, so that a remote asker can bound the grant's age.
func (l *Leader) GrantIdentify(ctx context.Context, node string, gen uint64, shardID int, epoch uint64) (granted time.Time, err error) {
	t := l.cur.Load()
	if t == nil {
		return time.Time{}, rpc.ErrNotLeader
	}
	if err := l.checkOwner(t, node, gen, shardID, epoch); err != nil {
		return time.Time{}, err
	}
	t.mu.Lock()
	g, b := t.gate, &t.budget
	if g == nil {
		t.mu.Unlock()
		return time.Time{}, fmt.Errorf("%w: no shard configuration yet", rpc.ErrNotLeader)
	}
	now := l.now()
	if b.Known && now.Before(b.ResetsAt) && b.Remaining <= b.Reserve {
		msg := fmt.Sprintf(": %d of %d daily session starts left, reserve %d, resets at %s; shards wait rather than risk a token reset",
			b.Remaining, b.Total, b.Reserve, b.ResetsAt.Format(time.RFC3339))
		if now.Sub(t.lowLogged) > time.Minute {
			l.log.Error("SESSION START BUDGET EXHAUSTED: identifies stopped", "remaining", b.Remaining, "reserve", b.Reserve, "resets_at", b.ResetsAt)
			t.lowLogged = now
		}
		t.mu.Unlock()
		return time.Time{}, fmt.Errorf("%w%s", rpc.ErrBudgetLow, msg)
	}
	// The start is taken from the budget before the wait, so that waiters queued
	// together cannot all pass the check; a wait that ends without a grant gives it back.
	if b.Known {
		b.Remaining--
		if !b.Low && b.Remaining <= 2*b.Reserve {
			b.Low = true
			l.log.Warn("session start budget running low", "remaining", b.Remaining, "total", b.Total, "reserve", b.Reserve, "resets_at", b.ResetsAt)
		}
	}
	known := b.Known
	t.mu.Unlock()
	giveBack := func() {
		if known {
			t.mu.Lock()
			b.Remaining++
			t.mu.Unlock()
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(t.ctx, cancel)
	defer stop()
	if err := g.Wait(ctx, shardID); err != nil {
		giveBack()
		if t.ctx.Err() != nil {
			return time.Time{}, rpc.ErrNotLeader
		}
		return time.Time{}, err
	}
	granted = l.now()
	// The wait can be long: the asker may have lost the shard or its lease meanwhile.
	if err := l.checkOwner(t, node, gen, shardID, epoch); err != nil {
		giveBack()
		g.IdentifySent(shardID) // the grant goes unused: the bucket need not wait it out
		return time.Time{}, err
	}
	// A leader cut off from the others keeps believing it leads until its Raft lease
	// runs out, longer on a starved machine; a new one may be granting by then. A
	// quorum's confirmation now means no other leader can exist before the followers'
	// heartbeat timeout, and a new one holds its first grants a window beyond that.
	if err := l.deps.Raft.VerifyLeader().Error(); err != nil {
		return time.Time{}, rpc.ErrNotLeader
	}
	l.log.Debug("identify granted", "member", node, "shard", shardID)
	return granted, nil
}

// IdentifySent is the report that a granted IDENTIFY was written. A leader that did
// not grant it (leadership moved meanwhile) ignores it: its gate held its first grants
// for a window anyway.
func (l *Leader) IdentifySent(shardID int) {
	t := l.cur.Load()
	if t == nil {
		return
	}
	t.mu.Lock()
	g := t.gate
	t.mu.Unlock()
	if g != nil {
		g.IdentifySent(shardID)
	}
}
