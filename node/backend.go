package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/node/membership"
	"github.com/discluster/discluster/node/rpc"
)

// backend is the API's view of the node.
type backend struct{ n *Node }

var _ api.Backend = backend{}

func (b backend) Status(ctx context.Context, all bool) api.Status { return b.n.status(ctx, all) }

// Health is healthy while the node can run shards: a node without a lease for
// longer than a few seconds after start needs attention.
func (b backend) Health() api.Health {
	n := b.n
	l := n.runner.Lease()
	h := api.Health{Node: n.cfg.Name, Lease: l, RaftState: n.raft.State().String(), Healthy: true}
	switch unfit := n.runner.Unfit(); {
	case unfit != "":
		h.Healthy, h.Problem = false, unfit
	case !l.Held && time.Since(n.started) > 2*n.leaseDuration():
		h.Healthy, h.Problem = false, "no lease: "+l.Reason
	}
	return h
}

// Drain is an operator's drain: replicated, it holds across every restart of the
// node and of the leader until Undrain. A failed node is marked too, and takes
// nothing when it comes back.
func (b backend) Drain(ctx context.Context, id string) (api.Drained, error) {
	n := b.n
	if _, ok := n.fsm.Member(id); !ok {
		return api.Drained{}, fmt.Errorf("%w: no member %q", api.ErrUnknownNode, id)
	}
	if _, err := n.write(ctx, fsm.MarkDrained{ID: id, At: time.Now().UnixNano()}); err != nil {
		return api.Drained{}, refusal(err)
	}
	m, _ := n.fsm.Member(id)
	return api.Drained{Draining: id, Shards: len(n.fsm.ShardsOf(id)), State: m.State.String()}, nil
}

// Undrain is decided by the leader's state, not this node's replica: right after a
// drain sent through a follower, the follower may not have applied it yet.
func (b backend) Undrain(ctx context.Context, id string) error {
	n := b.n
	if _, err := n.write(ctx, fsm.Undrain{ID: id, At: time.Now().UnixNano()}); err != nil {
		if _, known := n.fsm.Member(id); errors.Is(err, fsm.ErrInvalid) && !known {
			return fmt.Errorf("%w: %v", api.ErrUnknownNode, err)
		}
		return refusal(err)
	}
	return nil
}

// Keyring lists or changes the gossip keyring of every member.
func (b backend) Keyring(_ context.Context, op, key string) (api.Keyring, error) {
	res, err := b.n.gossip.Keyring(membership.KeyringOp(op), key)
	out := api.Keyring{Nodes: res.Nodes, Responded: res.Responded, Failed: res.Failed, Keys: res.Keys, Primary: res.Primary}
	if errors.Is(err, membership.ErrBadKey) {
		err = fmt.Errorf("%w: %v", api.ErrRefused, err)
	}
	return out, err
}

// refusal marks a command the state machine refused as the API's refusal.
func refusal(err error) error {
	if errors.Is(err, fsm.ErrInvalid) {
		return fmt.Errorf("%w: %v", api.ErrRefused, err)
	}
	return err
}

// Status gathers the cluster's status: the replicated state from this node, and
// each shard's live state from its owner. Members that left the gossip pool and the
// state are not listed.
func (n *Node) Status(ctx context.Context) api.Status { return n.status(ctx, false) }

func (n *Node) status(ctx context.Context, all bool) api.Status {
	st := api.Status{Node: n.cfg.Name, Cluster: n.gossip.ClusterID(), RaftState: n.raft.State().String(),
		Term: n.raft.CurrentTerm(), Applied: n.raft.AppliedIndex(), Lease: n.runner.Lease()}
	_, leaderID := n.raft.LeaderWithID()
	st.Leader = string(leaderID)
	if c := n.fsm.Config(); c.TotalShards > 0 {
		st.Config = &api.ShardConfig{TotalShards: c.TotalShards, MaxConcurrency: c.MaxConcurrency, IdentifyWindow: c.IdentifyWindow,
			Lease: c.Lease, CheckpointInterval: c.CheckpointInterval, Generation: n.fsm.Generation()}
	}
	suffrage := map[string]string{}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			suffrage[string(s.ID)] = map[raft.ServerSuffrage]string{raft.Voter: "voter", raft.Nonvoter: "nonvoter", raft.Staging: "staging"}[s.Suffrage]
		}
	}
	gossip := map[string]membership.Member{}
	for _, m := range n.gossip.Members() {
		gossip[m.Name] = m
	}
	byID := map[string]*api.MemberStatus{}
	for _, m := range n.fsm.Members() {
		ms := &api.MemberStatus{ID: m.ID, State: m.State.String(), Weight: m.Weight, Cluster: m.RaftAddr, HTTP: m.HTTPAddr,
			Raft: suffrage[m.ID], Leader: m.ID == st.Leader, Gossip: "unknown"}
		if g, ok := gossip[m.ID]; ok {
			ms.Gossip = g.Status.String()
		}
		byID[m.ID] = ms
	}
	for name, g := range gossip {
		if g.Status == membership.StatusLeft && !all {
			continue // gone: gossip remembers it for --reap-after, status need not
		}
		if _, ok := byID[name]; !ok {
			byID[name] = &api.MemberStatus{ID: name, Gossip: g.Status.String(), Raft: suffrage[name], Leader: name == st.Leader,
				Weight: g.Weight, Cluster: g.RPCAddr, HTTP: g.HTTPAddr}
		}
	}

	// Live shard states from every member that gossip sees alive, in parallel.
	type answer struct {
		id    string
		reply rpc.ShardsReply
		err   error
	}
	var wg sync.WaitGroup
	answers := make(chan answer, len(byID))
	for id, ms := range byID {
		if ms.Gossip != membership.StatusAlive.String() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if id == n.cfg.Name {
				answers <- answer{id: id, reply: service{n}.Shards()}
				return
			}
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			var r rpc.ShardsReply
			err := n.pool.Call(cctx, ms.Cluster, "Shards", &rpc.ShardsArgs{}, &r)
			answers <- answer{id: id, reply: r, err: err}
		}()
	}
	wg.Wait()
	close(answers)
	var events [][]event.Event
	live := map[int]rpc.LocalShard{}
	liveOwner := map[int]string{}
	gen := n.fsm.Generation()
	var reshardLive []ownedShard // a reshard's, and an ended generation's still closing
	for a := range answers {
		if a.err != nil {
			st.Problems = append(st.Problems, fmt.Sprintf("%s: %v", a.id, a.err))
			continue
		}
		l, sk := a.reply.Lease, a.reply.Sink
		byID[a.id].Lease, byID[a.id].Sink = &l, &sk
		if a.reply.Unfit != "" {
			byID[a.id].Problem = a.reply.Unfit
			st.Problems = append(st.Problems, fmt.Sprintf("%s: %s", a.id, a.reply.Unfit))
		}
		if sk.Failing {
			st.Problems = append(st.Problems, fmt.Sprintf("%s: sink failing since %s (%d failures, %d events waiting, shards held at their last delivered event): %s",
				a.id, sk.Since.Format(time.TimeOnly), sk.Failures, sk.Backlog, sk.Error))
		}
		events = append(events, a.reply.Events)
		if a.reply.Budget != nil {
			st.Budget = a.reply.Budget
			st.Fences = a.reply.Fences
		}
		for _, s := range a.reply.Shards {
			if !current(s, gen) {
				reshardLive = append(reshardLive, ownedShard{node: a.id, LocalShard: s})
				continue // the same id names another shard in another generation
			}
			live[s.Info.ShardID] = s
			liveOwner[s.Info.ShardID] = a.id
		}
	}
	slices.Sort(st.Problems)
	st.Events = event.Merge(events, 20)
	for _, ms := range byID {
		st.Members = append(st.Members, *ms)
	}
	slices.SortFunc(st.Members, func(a, b api.MemberStatus) int { return strings.Compare(a.ID, b.ID) })

	if st.Config != nil {
		asg := make([]fsm.Assignment, st.Config.TotalShards)
		for _, a := range n.fsm.Assignments() {
			asg[a.Shard] = a
		}
		count := map[string]int{}
		for id := range st.Config.TotalShards {
			a := asg[id]
			s := api.ShardStatus{Shard: id, State: "unassigned", Cluster: id / n.cfg.ShardsPerCluster}
			if a.Node != "" {
				count[a.Node]++
				s.Node, s.Epoch, s.Phase, s.State = a.Node, a.Epoch, a.Phase.String(), "unknown"
				if r, ok := n.fsm.Resume(id); ok && r.Resumable() {
					s.Seq, s.Checkpoint, s.Session = r.Seq, r.Seq, r.SessionID
				}
				if l, ok := live[id]; ok && liveOwner[id] == a.Node {
					s.State, s.Seq, s.Cluster = l.Info.State.String(), l.Info.Seq, l.Cluster
					if l.Info.SessionID != "" {
						s.Session = l.Info.SessionID
					}
					s.Latency = float64(l.Info.Latency) / float64(time.Millisecond)
					s.LastEvent, s.Error = l.Info.LastEvent, l.Info.Err
				} else if ms, ok := byID[a.Node]; ok && ms.Lease != nil && !ms.Lease.Held {
					s.State = "suspended"
				} else if _, reached := byID[a.Node]; !reached || byID[a.Node].Gossip != "alive" {
					s.State = "unreachable"
				} else {
					s.State = "starting"
				}
			}
			st.Shards = append(st.Shards, s)
		}
		for i := range st.Members {
			st.Members[i].Shards = count[st.Members[i].ID]
		}
	}
	n.addReshard(&st, reshardLive)
	return st
}
