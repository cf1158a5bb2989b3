package rpc

import (
	"context"
	"fmt"
	"time"

	"github.com/discluster/discluster/fsm"
)

// Leadership says where the leader is, as this node's Raft knows it.
type Leadership interface {
	// Leader is the leader's cluster address ("" when none is known), and whether
	// it is this node.
	Leader() (addr string, self bool)
	// LastContact is when this node last heard from a leader; zero if never.
	LastContact() time.Time
}

// ToLeader sends requests to the leader: to this node's own service when it leads
// (through the same checks a remote asker meets), over the pool otherwise. Each
// method makes one attempt; the caller owns the retry, as it alone knows how long a
// request may wait.
type ToLeader struct {
	Node  string // this node, the asker
	Where Leadership
	Local Service
	Pool  *Pool
	// ShardingRequired, when set, is what each renewal reports as
	// RenewArgs.ShardingRequired.
	ShardingRequired func() uint64
}

// leader is the leader's address, or ErrNoLeader with how long there has been none.
func (t *ToLeader) leader() (string, bool, error) {
	addr, self := t.Where.Leader()
	if self || addr != "" {
		return addr, self, nil
	}
	last := t.Where.LastContact()
	if last.IsZero() {
		// A starting cluster has none until its voters meet: nothing is wrong yet.
		return "", false, fmt.Errorf("%w yet (the cluster is forming: waiting for the voters to elect one, or for the leader to add this node)", ErrNoLeader)
	}
	return "", false, fmt.Errorf("%w known for %v (without a majority of the voters there is none: quorum lost?)", ErrNoLeader, time.Since(last).Round(time.Millisecond))
}

// Apply writes cmd through the leader.
func (t *ToLeader) Apply(ctx context.Context, cmd fsm.Command) (*fsm.Result, error) {
	addr, self, err := t.leader()
	switch {
	case err != nil:
		return nil, err
	case self:
		return t.Local.Apply(cmd)
	}
	var reply ApplyReply
	cctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	if err := t.Pool.Call(cctx, addr, "Apply", &ApplyArgs{Command: fsm.Encode(cmd)}, &reply); err != nil {
		return nil, err
	}
	return &fsm.Result{Index: reply.Index, Applied: reply.Applied, Stale: reply.Stale}, nil
}

// Renew asks for this node's lease; unfit says why it should hold no shards ("" when
// it may).
func (t *ToLeader) Renew(ctx context.Context, unfit string) (LeaseGrant, error) {
	addr, self, err := t.leader()
	args := RenewArgs{Node: t.Node, Unfit: unfit}
	if t.ShardingRequired != nil {
		args.ShardingRequired = t.ShardingRequired()
	}
	switch {
	case err != nil:
		return LeaseGrant{}, err
	case self:
		return t.Local.GrantLease(ctx, args)
	}
	var reply RenewReply
	if err := t.Pool.Call(ctx, addr, "Renew", &args, &reply); err != nil {
		if ctx.Err() != nil {
			return LeaseGrant{}, fmt.Errorf("leader %s did not answer in time: %w", addr, err)
		}
		return LeaseGrant{}, fmt.Errorf("leader %s: %w", addr, err)
	}
	return reply.LeaseGrant, nil
}

// Identify asks for a turn to IDENTIFY shard of generation gen under epoch. It returns the leader it
// asked and how long the request waited there, so that the caller can bound the
// grant's age and check the leader still leads.
func (t *ToLeader) Identify(ctx context.Context, gen uint64, shard int, epoch uint64) (leader string, waited time.Duration, err error) {
	addr, self, err := t.leader()
	switch {
	case err != nil:
		return "", 0, err
	case self:
		start := time.Now()
		granted, err := t.Local.GrantIdentify(ctx, t.Node, gen, shard, epoch)
		return addr, granted.Sub(start), err
	}
	cctx, cancel := context.WithTimeout(ctx, IdentifyTimeout+Timeout)
	defer cancel()
	var reply IdentifyReply
	err = t.Pool.Call(cctx, addr, "Identify", &IdentifyArgs{Node: t.Node, Gen: gen, Shard: shard, Epoch: epoch}, &reply)
	return addr, reply.Waited, err
}

// IdentifySent reports a granted IDENTIFY written. It only makes the leader's next
// grant in the bucket exact rather than conservative, so a lost report costs nothing
// but a wait.
func (t *ToLeader) IdentifySent(ctx context.Context, shard int) error {
	addr, self, err := t.leader()
	switch {
	case err != nil:
		return err
	case self:
		t.Local.IdentifySent(shard)
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	return t.Pool.Call(cctx, addr, "IdentifySent", &IdentifySentArgs{Node: t.Node, Shard: shard}, &IdentifySentReply{})
}

// Reshard starts or cancels a reshard at the leader.
func (t *ToLeader) Reshard(ctx context.Context, args ReshardArgs) (fsm.Reshard, error) {
	addr, self, err := t.leader()
	switch {
	case err != nil:
		return fsm.Reshard{}, err
	case self:
		return t.Local.Reshard(ctx, args)
	}
	cctx, cancel := context.WithTimeout(ctx, ReshardTimeout+Timeout)
	defer cancel()
	var reply ReshardReply
	err = t.Pool.Call(cctx, addr, "Reshard", &args, &reply)
	return reply.Reshard, err
}
