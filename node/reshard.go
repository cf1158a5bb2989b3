package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/internal/backoff"
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/node/rpc"
)

// Reshard starts a reshard at the leader, wherever it is: the leader checks the
// count against the state and the session start budget, which only it holds.
func (b backend) Reshard(ctx context.Context, req api.ReshardRequest) (api.Reshard, error) {
	from := b.n.fsm.Config().TotalShards
	r, err := b.n.reshardAtLeader(ctx, rpc.ReshardArgs{Shards: req.Shards, Auto: req.Auto})
	if err != nil {
		return api.Reshard{}, err
	}
	out := reshardOf(r, from)
	if c := b.n.fsm.Config(); c.MaxConcurrency > 0 {
		out.ETA = api.ReshardETA(r.Total, c.MaxConcurrency, c.IdentifyWindow)
	}
	return out, nil
}

// CancelReshard drops the reshard that runs, at the leader.
func (b backend) CancelReshard(ctx context.Context) (api.Reshard, error) {
	from := b.n.fsm.Config().TotalShards
	r, err := b.n.reshardAtLeader(ctx, rpc.ReshardArgs{Cancel: true})
	if err != nil {
		return api.Reshard{}, err
	}
	return reshardOf(r, from), nil
}

func reshardOf(r fsm.Reshard, from int) api.Reshard {
	return api.Reshard{Generation: r.Gen, From: from, To: r.Total, StartedAt: time.Unix(0, r.StartedAt)}
}

// reshardAtLeader asks the leader until it answers or ctx ends: a refusal is its
// answer, a missing or changing leader is not.
func (n *Node) reshardAtLeader(ctx context.Context, args rpc.ReshardArgs) (fsm.Reshard, error) {
	bo := backoff.Backoff{Min: 50 * time.Millisecond, Max: time.Second}
	for {
		r, err := n.toLeader.Reshard(ctx, args)
		if err == nil || errors.Is(err, api.ErrRefused) {
			return r, err
		}
		if !errors.Is(err, rpc.ErrNotLeader) && !errors.Is(err, rpc.ErrNoLeader) {
			return r, err // Discord's recommendation unreachable, a write that failed: say so
		}
		if !bo.Wait(ctx) {
			return r, fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		}
	}
}

// Reshard answers the Reshard RPC: this node must lead.
func (s service) Reshard(ctx context.Context, args rpc.ReshardArgs) (fsm.Reshard, error) {
	if args.Cancel {
		return s.n.leader.CancelReshard("cancelled by an operator")
	}
	why := fmt.Sprintf("asked for %d shards", args.Shards)
	if args.Auto {
		why = "asked for Discord's recommendation"
	}
	return s.n.leader.StartReshard(ctx, args.Shards, args.Auto, why)
}

// localShards is what member m's shards are doing: this node's own, or m's over the
// Shards RPC. The leader polls it for a reshard's warm shards.
func (n *Node) localShards(ctx context.Context, m fsm.Member) ([]rpc.LocalShard, error) {
	if m.ID == n.cfg.Name {
		return service{n}.Shards().Shards, nil
	}
	var r rpc.ShardsReply
	err := n.pool.Call(ctx, m.RaftAddr, "Shards", &rpc.ShardsArgs{}, &r)
	return r.Shards, err
}

// ownedShard is a shard a member reported, with that member.
type ownedShard struct {
	node string
	rpc.LocalShard
}

// current reports whether a reported shard is of generation gen, the current one:
// an agent from before reshards reports 0, which is the first.
func current(s rpc.LocalShard, gen uint64) bool { return max(s.Gen, fsm.FirstGen) == gen }

// addReshard fills in a reshard's progress: its shards placed, warm under their
// assignment (as their owners reported them in live), each member's count, and the
// identify schedule's floor for the rest.
func (n *Node) addReshard(st *api.Status, live []ownedShard) {
	r, ok := n.fsm.Reshard()
	if !ok {
		return
	}
	out := reshardOf(r, n.fsm.Config().TotalShards)
	asg := make(map[int]fsm.Assignment, r.Total)
	held := map[string]int{}
	for _, a := range n.fsm.AssignmentsIn(r.Gen) {
		asg[a.Shard] = a
		held[a.Node]++
		if a.Phase == fsm.Assigned {
			out.Assigned++
		}
	}
	for _, s := range live {
		if a, ok := asg[s.Info.ShardID]; ok && s.Gen == r.Gen && s.Warm && a.Node == s.node && a.Epoch == s.Epoch {
			out.Warm++
		}
	}
	if st.Config != nil {
		out.ETA = api.ReshardETA(r.Total-out.Warm, st.Config.MaxConcurrency, st.Config.IdentifyWindow)
	}
	for i := range st.Members {
		st.Members[i].ReshardShards = held[st.Members[i].ID]
	}
	st.Reshard = &out
}

// noteShardingRequired keeps a shard's 4011 close (Discord requires more shards)
// to report with each lease renewal until the generation it was of is gone; the
// leader starts a reshard. The runner's event names the generation; one that does
// not is the current one's.
func (n *Node) noteShardingRequired(e event.Event) {
	gen := e.Gen
	if gen == 0 {
		gen = n.fsm.Generation()
	}
	for {
		was := n.shardingRequired.Load()
		if was >= gen || n.shardingRequired.CompareAndSwap(was, gen) {
			return
		}
	}
}

// shardingRequiredGen is what a lease renewal reports: the generation of a shard
// closed with 4011, 0 once a reshard replaced that generation.
func (n *Node) shardingRequiredGen() uint64 {
	gen := n.shardingRequired.Load()
	if gen != 0 && gen < n.fsm.Generation() {
		n.shardingRequired.CompareAndSwap(gen, 0)
		return 0
	}
	return gen
}
