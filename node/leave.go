package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/node/membership"
)

// endOwnLeaveDrain ends the drain that this node's last run wrote when it left (a
// SIGTERM hands shards off through a drain of its own): that drain was for leaving,
// and this run takes shards. When the whole cluster stopped at once, every node left
// draining, and none would take a shard again. An operator's drain (fsm.MarkDrained)
// stays until it is cancelled.
func (n *Node) endOwnLeaveDrain() {
	var after uint64
	for {
		if done := n.tryEndOwnLeaveDrain(); done {
			return
		}
		ctx, cancel := context.WithTimeout(n.ctx, 250*time.Millisecond)
		idx, err := n.fsm.WaitChange(ctx, after)
		cancel()
		if n.ctx.Err() != nil {
			return
		}
		if err == nil {
			after = idx
		}
	}
}

// tryEndOwnLeaveDrain makes one attempt; done means nothing is left to do. It holds
// leaveMu, so that a Leave starting meanwhile writes its drain after this undrain.
func (n *Node) tryEndOwnLeaveDrain() (done bool) {
	n.leaveMu.Lock()
	defer n.leaveMu.Unlock()
	if n.leaving {
		return true // this run's own leave drains it now
	}
	if !n.runner.Lease().Held { // held only once this node's state caught up with the leader's
		return false
	}
	m, ok := n.fsm.Member(n.cfg.Name)
	_, operator := n.fsm.Drained()[n.cfg.Name]
	switch {
	case !ok:
		return false
	case m.State != fsm.Draining || operator:
		return true
	}
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	defer cancel()
	if _, err := n.write(ctx, fsm.Undrain{ID: n.cfg.Name, At: time.Now().UnixNano()}); err != nil {
		n.log.Warn("cannot end the drain of this node's last leave yet; retrying", "err", err)
		return false
	}
	n.log.Info("ended the drain this node wrote when it last left: it takes shards again")
	return true
}

func (n *Node) leave(ctx context.Context) error {
	// After an undrain in flight, never before: the drain below must be the last word.
	n.leaveMu.Lock()
	n.leaving = true
	n.leaveMu.Unlock()
	start := time.Now()
	var errs []error
	if n.toHandOff() > 0 && n.othersCanTakeShards() {
		n.log.Info("leaving: handing shards off")
		if _, err := n.write(ctx, fsm.Drain{ID: n.cfg.Name, At: time.Now().UnixNano()}); err != nil {
			errs = append(errs, fmt.Errorf("drain: %w", err))
		} else if err := n.waitNoShards(ctx); err != nil {
			errs = append(errs, fmt.Errorf("drain: %w", err))
		}
	}
	if k := n.toHandOff(); k > 0 {
		n.log.Info("leaving: no node left to take shards; stopping them resumably and writing their final positions", "shards", k)
	}
	if r, ok := n.fsm.Reshard(); ok {
		if k := len(n.fsm.ShardsOfIn(r.Gen, n.cfg.Name)); k > 0 {
			// An operator's drain keeps them here until the switch: stopped at the
			// position before the oldest event each held, they fail over once this
			// node is gone, and their next owners hold those events again.
			n.log.Info("leaving: the reshard's shards here stop with their positions; the leader fails them over", "shards", k, "gen", r.Gen)
		}
	}
	if err := n.runner.StopAll(ctx, true); err != nil {
		// Not the operator's error: a whole cluster stopping at once loses its quorum
		// under the last ones; the next owner resumes from the last checkpoint.
		n.log.Warn("final positions not written; the next start resumes from the last checkpoint", "err", err)
	}
	if n.raft.State() == raft.Leader && n.raftPeers() > 1 {
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			n.log.Warn("leadership transfer failed", "err", err)
		}
	}
	if err := n.gossip.Leave(); err != nil {
		errs = append(errs, fmt.Errorf("leave gossip: %w", err))
	}
	n.log.Info("left", "took", time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}

// toHandOff is how many shards this node's leave waits to see moved: its shards of
// the current generation and, while a reshard runs, those of the new one, which the
// leader moves off a leaving node at once (see leader.Plan) rather than after the
// switch, which may be minutes away. Under an operator's drain the leader keeps the
// new ones here until the switch, so the leave does not wait for them.
func (n *Node) toHandOff() int {
	k := len(n.fsm.ShardsOf(n.cfg.Name))
	if r, ok := n.fsm.Reshard(); ok {
		if _, operator := n.fsm.Drained()[n.cfg.Name]; !operator {
			k += len(n.fsm.ShardsOfIn(r.Gen, n.cfg.Name))
		}
	}
	return k
}

// othersCanTakeShards reports whether another node could take this one's shards: a
// member alive in the state and in gossip, with weight.
func (n *Node) othersCanTakeShards() bool {
	gossip := map[string]membership.Status{}
	for _, m := range n.gossip.Members() {
		gossip[m.Name] = m.Status
	}
	for _, m := range n.fsm.Members() {
		if m.ID != n.cfg.Name && m.State == fsm.Alive && m.Weight > 0 && gossip[m.ID] == membership.StatusAlive {
			return true
		}
	}
	return false
}

// waitNoShards waits until this node holds no shard to hand off, or until no other
// node is left to take one (the whole cluster is stopping): then the shards stop
// here, with their final positions, and the next start resumes them.
func (n *Node) waitNoShards(ctx context.Context) error {
	after := uint64(0)
	for {
		if n.toHandOff() == 0 || !n.othersCanTakeShards() {
			return nil
		}
		// Gossip sees another node leave before the state does: look again soon.
		wctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
		idx, err := n.fsm.WaitChange(wctx, after)
		cancel()
		if ctx.Err() != nil {
			return fmt.Errorf("%d shards still here: %w", n.toHandOff(), ctx.Err())
		}
		if err == nil {
			after = idx
		}
	}
}
