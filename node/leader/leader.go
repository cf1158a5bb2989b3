package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/internal/backoff"
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/node/membership"
	"github.com/discluster/discluster/node/rpc"
	"github.com/discluster/discluster/shard"
)

// Membership is the gossip view the leader reconciles.
type Membership interface {
	Members() []membership.Member
}

// Config configures the leader's work. The shard fields are the flags a cluster is
// first configured with; a configured cluster keeps its replicated values.
type Config struct {
	Name     string
	Voters   int
	MaxMoves int
	// Shards 0 and MaxConcurrency 0 ask Discord.
	Shards             int
	MaxConcurrency     int
	ShardsPerCluster   int
	IdentifyWindow     time.Duration
	Lease              time.Duration
	CheckpointInterval time.Duration
	SessionReserve     int
	ReconcileInterval  time.Duration
	// ProbeEvery bounds how often a failing peer's cluster port is probed.
	ProbeEvery time.Duration
	// ReshardAutoThreshold, when above 0, starts a reshard once Discord recommends
	// at least this many times the current count (at most once per hour).
	ReshardAutoThreshold float64
	// ReshardPoll is how often, while a reshard's shards are all assigned, their
	// owners are asked which are warm; a second when 0.
	ReshardPoll time.Duration
	Logger      *slog.Logger
}

// Deps are the leader's collaborators.
type Deps struct {
	Raft    *raft.Raft
	FSM     *fsm.FSM
	Members Membership
	Notify  event.Notifier
	// Now is the clock of every lease, grace and fencing rule; time.Now when nil.
	Now func() time.Time
	// Lease is the cluster's lease as the replicated state holds it.
	Lease func() time.Duration
	// ProcessGone reports whether a peer's machine answers on its cluster address
	// but nothing listens: the process died, and its websockets with it.
	ProcessGone func(addr string) bool
	// GatewayBot asks Discord for the shard count and session start limit.
	GatewayBot func(ctx context.Context) (shard.GatewayBot, error)
	// Done is closed when the node stops: a write waits no longer.
	Done <-chan struct{}
	// CanReach checks that a gossip member's cluster port takes this node's
	// connections (with mutual TLS: that it holds a certificate of the cluster's CA)
	// before it is added to Raft; nil when any member may be added.
	CanReach func(addr string) error
	// LocalShards asks a member what its shards are doing (the Shards RPC, or this
	// node's own runner): how the leader learns that a reshard's shards are warm.
	// Nil: a reshard never switches on its own.
	LocalShards func(ctx context.Context, m fsm.Member) ([]rpc.LocalShard, error)
}

// Leader does the leader's work whenever this node leads.
type Leader struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	poke chan struct{}
	cur  atomic.Pointer[term]
	wg   sync.WaitGroup
}

// term is what one leadership keeps, in memory: it is rebuilt, with a grace of one
// lease, by every new leader.
type term struct {
	ctx         context.Context
	established time.Time

	mu        sync.Mutex
	gate      *shard.LocalGate
	grants    Grants
	budget    api.Budget
	lowLogged time.Time
	configErr string
	// unreachable holds members not added to Raft because their cluster port refused
	// this node, with why: logged once each.
	unreachable map[string]string

	// warm is what the owners of a reshard's shards last said (see watchWarm).
	warm warmth
	// recommended is Discord's shard count as last read, 0 before.
	recommended int
	// shardingRequired holds the nodes that report a shard closed with 4011, with
	// the generation it was of.
	shardingRequired map[string]uint64
	// autoTried and autoStarted are this leader's last attempt to start a reshard
	// on its own, and its last success.
	autoTried, autoStarted time.Time
}

// New makes a leader that waits for Run.
func New(cfg Config, deps Deps) *Leader {
	if deps.Now == nil {
		deps.Now = time.Now
	}
	return &Leader{cfg: cfg, deps: deps, log: cfg.Logger, poke: make(chan struct{}, 1)}
}

func (l *Leader) now() time.Time { return l.deps.Now() }

// Poke asks for a reconcile soon.
func (l *Leader) Poke() {
	select {
	case l.poke <- struct{}{}:
	default:
	}
}

// IsLeader reports whether this node leads and has finished taking over.
func (l *Leader) IsLeader() bool { return l.cur.Load() != nil }

// Run runs the leader loop while this node leads, until ctx ends. It reads Raft's
// NotifyCh, which is ordered and reliable, and waits for one loop to end before it
// starts the next.
func (l *Leader) Run(ctx context.Context, notify <-chan bool) {
	defer l.wg.Wait()
	var running *leading
	defer func() {
		if running != nil {
			running.stop()
		}
	}()
	for {
		select {
		case lead := <-notify:
			switch {
			case lead && running == nil:
				running = l.startLeading(ctx)
			case !lead && running != nil:
				l.log.Info("lost leadership")
				running.stop()
				running = nil
			}
		case <-ctx.Done():
			return
		}
	}
}

// leading is one leadership's loop in progress.
type leading struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *leading) stop() {
	r.cancel()
	<-r.done
}

func (l *Leader) startLeading(ctx context.Context) *leading {
	ctx, cancel := context.WithCancel(ctx)
	r := &leading{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		l.lead(ctx)
	}()
	return r
}

func (l *Leader) lead(ctx context.Context) {
	r := l.deps.Raft
	for r.Barrier(10*time.Second).Error() != nil {
		if !backoff.Sleep(ctx, 200*time.Millisecond) {
			return
		}
	}
	t := &term{ctx: ctx, established: l.now(), grants: newGrants(), unreachable: map[string]string{}, shardingRequired: map[string]uint64{}}
	l.cur.Store(t)
	defer l.cur.Store(nil)
	l.log.Info("became leader", "term", r.CurrentTerm(), "applied", r.AppliedIndex(), "grace", l.deps.Lease())
	l.deps.Notify.Notify(event.Event{Kind: event.LeaderElected, Term: r.CurrentTerm()})

	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.refreshBudget(ctx, t)
	}()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.watchWarm(ctx, t)
	}()
	tick := time.NewTicker(l.cfg.ReconcileInterval)
	defer tick.Stop()
	for {
		l.reconcile(ctx, t)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-l.poke:
		}
	}
}

// applyTimeout bounds the wait for one command's commit.
const applyTimeout = 30 * time.Second

// ErrStopping is the answer to a write that Raft will not answer: the node stops.
var ErrStopping = errors.New("node stopping")

// Apply applies a command on this node, which must be the Raft leader.
func (l *Leader) Apply(cmd fsm.Command) (*fsm.Result, error) {
	r := l.deps.Raft
	if r.State() != raft.Leader {
		return nil, rpc.ErrNotLeader
	}
	f := r.Apply(fsm.Encode(cmd), 10*time.Second)
	// Raft leaves a command that was queued but not yet taken when it shut down
	// without an answer, and its future would wait forever: a shutdown must not wait
	// for it. Every command is safe to send again, so the caller may retry.
	answered := make(chan error, 1)
	go func() { answered <- f.Error() }()
	var err error
	select {
	case err = <-answered:
	case <-l.deps.Done:
		return nil, ErrStopping
	case <-time.After(applyTimeout):
		return nil, fmt.Errorf("apply: no answer from Raft within %v", applyTimeout)
	}
	if err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return nil, fmt.Errorf("%w: %v", rpc.ErrNotLeader, err)
		}
		return nil, err
	}
	switch res := f.Response().(type) {
	case *fsm.Result:
		return res, nil
	case error:
		return nil, res
	default:
		return nil, fmt.Errorf("apply: unexpected response %T", res)
	}
}

// Fences are the failed nodes whose shards wait for their last lease to run out,
// while this node leads.
func (l *Leader) Fences() []api.Fence {
	t := l.cur.Load()
	if t == nil {
		return nil
	}
	t.mu.Lock()
	in := Input{Now: l.now(), Lease: l.deps.Lease(), Established: t.established, Grants: t.grants.clone()}
	t.mu.Unlock()
	waiting := map[string]int{}
	for _, a := range l.deps.FSM.Assignments() {
		if m, ok := l.deps.FSM.Member(a.Node); a.Phase == fsm.Revoking && ok && m.State == fsm.Failed && !fenced(in, a.Node) {
			waiting[a.Node]++
		}
	}
	var out []api.Fence
	for node, k := range waiting {
		out = append(out, api.Fence{Node: node, Shards: k, Until: fenceAt(in, node)})
	}
	slices.SortFunc(out, func(a, b api.Fence) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// Budget is the session start budget while this node leads, nil otherwise.
func (l *Leader) Budget() *api.Budget {
	t := l.cur.Load()
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.budget
	return &b
}
