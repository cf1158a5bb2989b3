package node

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/node/membership"
	"github.com/discluster/discluster/node/rpc"
)

// The adapters below give each room what it asked for, in its own terms, from the
// others. They hold no state of their own.

// service answers the cluster port: the leader's grants, the runner's view, the
// bootstrap promise.
type service struct{ n *Node }

var _ rpc.Service = service{}

func (s service) Apply(cmd fsm.Command) (*fsm.Result, error) { return s.n.leader.Apply(cmd) }

func (s service) GrantLease(ctx context.Context, args rpc.RenewArgs) (rpc.LeaseGrant, error) {
	return s.n.leader.GrantLease(ctx, args)
}

func (s service) GrantIdentify(ctx context.Context, node string, gen uint64, shard int, epoch uint64) (time.Time, error) {
	return s.n.leader.GrantIdentify(ctx, node, gen, shard, epoch)
}

func (s service) IdentifySent(shard int) { s.n.leader.IdentifySent(shard) }

func (s service) Shards() rpc.ShardsReply {
	r := s.n.runner
	return rpc.ShardsReply{Shards: r.Shards(), Lease: r.Lease(), Sink: r.Sink(), Unfit: r.Unfit(),
		Events: s.n.events.List(), Budget: s.n.leader.Budget(), Fences: s.n.leader.Fences()}
}

func (s service) Promise(from string, release bool) error { return s.n.gossip.Promise(from, release) }

func (s service) Send(ctx context.Context, args rpc.SendArgs) (string, error) {
	return s.n.send(ctx, args)
}

func (s service) Cut(args rpc.CutArgs) (map[int][]rpc.CutKey, bool) {
	return s.n.runner.Cut(args.Gen, args.Total, args.Shards)
}

func (s service) Standing(node string) rpc.Standing {
	var st rpc.Standing
	if m, ok := s.n.fsm.Member(node); ok && m.State != fsm.Left {
		st.Replicated = true
	}
	for _, m := range s.n.gossip.Members() {
		if m.Name == node {
			st.Gossip = m.Status == membership.StatusAlive
			break
		}
	}
	return st
}

// leadership is where Raft says the leader is.
type leadership struct{ r *raft.Raft }

func (l leadership) Leader() (string, bool) {
	addr, _ := l.r.LeaderWithID()
	return string(addr), l.r.State() == raft.Leader
}

func (l leadership) LastContact() time.Time { return l.r.LastContact() }

// membersView is the gossip pool for the leader.
type membersView struct{ n *Node }

func (m membersView) Members() []membership.Member { return m.n.gossip.Members() }

// raftBootstrap is Raft for bootstrap-expect.
type raftBootstrap struct{ n *Node }

func (b raftBootstrap) HasState() bool { return b.n.hasRaftState() }

func (b raftBootstrap) Bootstrap(voters []membership.Voter) error {
	var conf raft.Configuration
	for _, v := range voters {
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(v.Name), Address: raft.ServerAddress(v.Addr)})
	}
	if err := b.n.raft.BootstrapCluster(conf).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return err
	}
	return nil
}

func (b raftBootstrap) LeaderID() string {
	_, id := b.n.raft.LeaderWithID()
	return string(id)
}

// promiser asks peers for bootstrap promises over the cluster port.
type promiser struct{ pool *rpc.Pool }

func (p promiser) AskPromise(ctx context.Context, addr string, release bool) error {
	return p.pool.Call(ctx, addr, "BootstrapPromise", &rpc.PromiseArgs{Release: release}, &rpc.PromiseReply{})
}

// proposer writes through the leader until ctx ends.
type proposer struct{ n *Node }

func (p proposer) Write(ctx context.Context, cmd fsm.Command) (*fsm.Result, error) {
	return p.n.write(ctx, cmd)
}
