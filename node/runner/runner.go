package runner

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/node/rpc"
	"github.com/discluster/discluster/node/sink"
	"github.com/discluster/discluster/shard"
)

// Config configures the runner.
type Config struct {
	Name               string
	ShardsPerCluster   int
	CheckpointInterval time.Duration
	Token              shard.Token
	APIBase            string
	GatewayURL         string // "" asks Discord
	Intents            uint64
	Compression        shard.Compression
	// NoSessionStealing starts every moved shard with IDENTIFY: the benchmark's
	// comparison with a system that cannot resume elsewhere.
	NoSessionStealing bool
	// TokenRetryMax caps the wait between asks of GET /gateway/bot while Discord
	// rejects the token (default 1 minute).
	TokenRetryMax time.Duration
	Sink          sink.Sink // nil: events are counted, not delivered
	// Events, when set, are the dispatch types the sink gets; the others count as
	// delivered the moment they are read (positions move past them), and never reach
	// the sink.
	Events   map[string]bool
	Observer Observer // nil: nothing is observed (see metrics.go)
	Logger   *slog.Logger
}

// LeaderClient reaches the leader, wherever it is.
type LeaderClient interface {
	// Renew asks for this node's lease; unfit says why the node should hold no
	// shards ("" when it may).
	Renew(ctx context.Context, unfit string) (rpc.LeaseGrant, error)
	Identify(ctx context.Context, gen uint64, shard int, epoch uint64) (leader string, waited time.Duration, err error)
	IdentifySent(ctx context.Context, shard int) error
}

// Proposer writes a command through the leader, retrying until ctx ends.
type Proposer interface {
	Write(ctx context.Context, cmd fsm.Command) (*fsm.Result, error)
}

// Deps are the runner's collaborators.
type Deps struct {
	FSM      *fsm.FSM
	Leader   LeaderClient
	Proposer Proposer
	// LeaderAddr is the leader's address as Raft knows it now.
	LeaderAddr func() string
	Notify     event.Notifier
	// Lease is the cluster's lease as the replicated state holds it.
	Lease func() time.Duration
	// Now is the clock of the lease; time.Now when nil.
	Now        func() time.Time
	GatewayBot func(ctx context.Context) (shard.GatewayBot, error)
	// Cuts asks the node at addr for its cut of an ended generation (Runner.Cut
	// there); nil: no other node is asked.
	Cuts func(ctx context.Context, addr string, args rpc.CutArgs) (keys map[int][]rpc.CutKey, final bool, err error)
}

// Runner is the node's shard supervisor.
type Runner struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	lease  lease
	gw     *gateway
	pokeCh chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	reqs   chan func() // work that must run on the run goroutine
	done   chan struct{}
	wg     sync.WaitGroup
	halted bool // after StopAll: start nothing more

	// gens are this node's shards by generation: the current one's, and during a
	// reshard the new one's. The run goroutine adds and removes them, under mu.
	mu   sync.Mutex
	gens map[uint64]*generation
	// cuts are the final cuts of the generations that ended here at a switch, which
	// the new generation's owners ask for (see cut.go); under mu.
	cuts map[uint64]*endedCut

	resumed    []resumedShard // resumes not yet noted, under mu; see noteResumed
	sinkHealth sinkHealth
	memberReqs memberRequests // all-members requests, by guild: see allMembersWindow
}

// New makes a runner; Run runs it.
func New(cfg Config, deps Deps) *Runner {
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if cfg.TokenRetryMax <= 0 {
		cfg.TokenRetryMax = time.Minute
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Runner{
		cfg: cfg, deps: deps, log: cfg.Logger, gw: newGateway(cfg.GatewayURL), pokeCh: make(chan struct{}, 1), ctx: ctx, cancel: cancel,
		reqs: make(chan func()), done: make(chan struct{}),
		gens: make(map[uint64]*generation), cuts: make(map[uint64]*endedCut),
	}
}

func (r *Runner) now() time.Time { return r.deps.Now() }

// Poke asks for a pass soon: the state or the lease changed.
func (r *Runner) Poke() {
	select {
	case r.pokeCh <- struct{}{}:
	default:
	}
}

// Run supervises the shards and holds the lease until ctx ends or Kill.
func (r *Runner) Run(ctx context.Context) {
	stop := context.AfterFunc(ctx, r.cancel)
	defer stop()
	r.wg.Add(2)
	go func() {
		defer r.wg.Done()
		r.holdLease()
	}()
	go func() {
		defer r.wg.Done()
		r.watchGateway()
	}()
	defer close(r.done)
	tick := time.NewTicker(r.cfg.CheckpointInterval)
	defer tick.Stop()
	for {
		if !r.halted {
			r.pass()
		}
		select {
		case <-r.ctx.Done():
			return
		case f := <-r.reqs:
			f()
		case <-r.pokeCh:
		case <-tick.C:
			r.writeCheckpoint()
		}
	}
}

// pass brings the shards running here in line with the state machine and the lease:
// each generation the state runs (the current one, and a reshard's), and the end of
// those it no longer does.
func (r *Runner) pass() {
	leaseOK := r.lease.valid(r.now())
	// A node whose token Discord rejects runs nothing: the leader moves its shards.
	unfit := r.gw.unfit()
	f := r.deps.FSM
	cur := f.Generation()
	want := map[uint64]generationRole{}
	if total := f.Config().TotalShards; total > 0 {
		want[cur] = generationRole{total: total}
	}
	next, resharding := f.Reshard()
	if resharding {
		want[next.Gen] = generationRole{total: next.Total, next: true}
		if role, ok := want[cur]; ok {
			role.succeeded = true
			want[cur] = role
		}
	}
	for gen, g := range r.gens {
		if _, ok := want[gen]; !ok {
			r.endGeneration(g, gen < cur)
		}
	}
	// Roles first: the current generation tracks its deliveries before any shard of
	// its successor starts.
	for gen, role := range want {
		g := r.gens[gen]
		if g == nil {
			g = newGeneration(gen, role.total)
			r.mu.Lock()
			r.gens[gen] = g
			r.mu.Unlock()
		}
		r.setRole(g, role)
	}
	for gen := range want {
		r.passGeneration(r.gens[gen], leaseOK, unfit)
	}
	r.writeReleases()
}

// generationRole is what the state makes of a generation now.
type generationRole struct {
	total int
	// next: a reshard's generation, before its switch: its events are held back.
	next bool
	// succeeded: the current generation while a reshard starts its successor: what it
	// delivers is tracked, for the cut at the switch.
	succeeded bool
}

// passGeneration brings one generation's shards in line with its table and the lease.
func (r *Runner) passGeneration(g *generation, leaseOK bool, unfit string) {
	want := make(map[int]fsm.Assignment)
	for _, a := range r.deps.FSM.ShardsOfIn(g.gen, r.cfg.Name) {
		want[a.Shard] = a
	}
	type stop struct {
		id    int
		epoch uint64
	}
	var stops []stop
	for id, epoch := range g.running {
		a, ok := want[id]
		switch {
		case !ok || a.Epoch != epoch:
			r.log.Warn("shard moved away while running here; stopping it", "shard", id, "generation", g.gen)
			stops = append(stops, stop{id: id, epoch: epoch})
		case a.Phase == fsm.Revoking, !leaseOK, unfit != "":
			stops = append(stops, stop{id: id, epoch: epoch})
		}
	}
	if len(stops) > 0 {
		var wg sync.WaitGroup
		finals := make([]shard.ResumeState, len(stops))
		for i, st := range stops {
			wg.Add(1)
			go func() {
				defer wg.Done()
				finals[i] = r.stopShard(g, st.id)
			}()
		}
		wg.Wait()
		var ids event.Shards
		for i, st := range stops {
			delete(g.running, st.id)
			delete(g.checkpoint, st.id)
			if a, ok := want[st.id]; ok && a.Epoch == st.epoch {
				g.suspended[st.id] = suspendedShard{epoch: st.epoch, state: finals[i]}
			}
			ids = append(ids, st.id)
		}
		switch {
		case !leaseOK:
			why := r.lease.status(r.now()).Reason
			r.log.Warn("lease lost: shards suspended", "count", len(stops), "why", why)
			r.deps.Notify.Notify(event.Event{Kind: event.LeaseLost, Shards: ids, Cause: why})
		case unfit != "":
			r.log.Warn("shards stopped: the bot token is rejected here", "count", len(stops))
			r.deps.Notify.Notify(event.Event{Kind: event.TokenRejected, Shards: ids, Cause: unfit})
		}
	}
	// Revoked shards not running here (suspended, or never started) are released too,
	// with the best state known: our own final one, else the last checkpoint.
	for id, a := range want {
		if a.Phase != fsm.Revoking {
			continue
		}
		if _, pending := g.releases[id]; pending || g.released[id] == a.Epoch {
			continue // written already; this replica has not applied it yet
		}
		var pos fsm.ResumeData
		if sp, ok := g.suspended[id]; ok && sp.epoch == a.Epoch {
			pos = sp.state
		} else if res, ok := r.deps.FSM.ResumeIn(g.gen, id); ok {
			pos = res.Position
		}
		g.releases[id] = fsm.Release{Shard: id, Epoch: a.Epoch, Resume: pos}
	}
	for id, sp := range g.suspended {
		if a, ok := want[id]; !ok || a.Epoch != sp.epoch {
			delete(g.suspended, id)
		}
	}
	for id, epoch := range g.released {
		if a, ok := want[id]; !ok || a.Epoch != epoch || a.Phase != fsm.Revoking {
			delete(g.released, id)
		}
	}
	if leaseOK && unfit == "" && !r.halted {
		for id, a := range want {
			if _, ok := g.running[id]; ok || a.Phase != fsm.Assigned {
				continue
			}
			if err := r.startShard(g, a); err != nil {
				// Waiting for the gateway's URL is reported once, by its watcher.
				if !errors.As(err, new(errNotYet)) {
					r.log.Error("cannot start shard", "shard", id, "generation", g.gen, "err", err)
				}
				continue
			}
			g.running[id] = a.Epoch
		}
	}
}

// startShard starts a shard in its local cluster, resuming when it can.
func (r *Runner) startShard(g *generation, a fsm.Assignment) error {
	url, err := r.gw.ready()
	if err != nil {
		return errNotYet{err}
	}
	resume, from := shard.ResumeState{}, "identify"
	if sp, ok := g.suspended[a.Shard]; ok && sp.epoch == a.Epoch && sp.state.Resumable() {
		resume, from = sp.state, "own suspended state"
	} else if res, ok := r.deps.FSM.ResumeIn(g.gen, a.Shard); ok && res.Resumable() && !r.cfg.NoSessionStealing {
		resume, from = res.Position, "replicated state"
	}
	cid := a.Shard / r.cfg.ShardsPerCluster
	c, err := r.cluster(g, cid)
	if err != nil {
		return err
	}
	r.mu.Lock()
	g.clusterOf[a.Shard] = cid
	g.epochOf[a.Shard] = a.Epoch
	g.started[a.Shard] = r.now()
	if g.holding {
		g.hold[a.Shard] = newHeldShard()
	}
	r.mu.Unlock()
	gen := g.gen
	err = c.Add(shard.Config{
		Token: r.cfg.Token, ShardID: a.Shard, ShardCount: g.total, Intents: r.cfg.Intents,
		GatewayURL: url, APIBase: r.cfg.APIBase, Compression: r.cfg.Compression,
		Resume: resume, Gate: &identifyClient{r: r, gen: gen, epoch: a.Epoch}, Logger: r.log, // the shard adds its id
		Permit:         func() error { return r.MayLogin(gen, a.Shard, a.Epoch) },
		ObserveLatency: r.latencyObserver(),
	})
	if err != nil {
		return err
	}
	delete(g.suspended, a.Shard)
	r.log.Info("shard starting", "shard", a.Shard, "generation", g.gen, "epoch", a.Epoch, "from", from, "seq", resume.Seq)
	return nil
}

func (r *Runner) cluster(g *generation, id int) (*shard.Cluster, error) {
	if c, ok := g.clusters[id]; ok {
		return c, nil
	}
	c, err := shard.NewCluster(shard.ClusterConfig{
		ID: id, Logger: r.log.With("generation", g.gen),
		BatchHandler: func(evs []shard.Event, errs []error) { r.deliverBatch(g, id, evs, errs) },
		Observe:      func(l shard.Lifecycle) { r.observe(g, l) },
	})
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	g.clusters[id] = c
	r.mu.Unlock()
	return c, nil
}

// stopShard stops a shard with a resumable close once its queued events were
// delivered, and returns its final position: the session at the last event the sink
// accepted, which is where the next owner resumes. A shard holding its events back
// (a reshard's generation) stops at the position before the oldest it holds, so
// that its next owner holds them back again.
func (r *Runner) stopShard(g *generation, id int) shard.ResumeState {
	r.mu.Lock()
	cid := g.clusterOf[id]
	g.stopping[id] = true
	r.mu.Unlock()
	c := g.clusters[cid]
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	pos, err := c.Remove(ctx, id)
	if err != nil && !errors.Is(err, shard.ErrUnknownShard) {
		r.log.Warn("shard stop", "shard", id, "generation", g.gen, "err", err)
	}
	r.mu.Lock()
	pos = g.trail(id, pos)
	delete(g.hold, id)
	delete(g.clusterOf, id)
	delete(g.epochOf, id)
	delete(g.stopping, id)
	if g.abandoned[id] {
		delete(g.abandoned, id)
		g.anyAbandoned.Add(-1)
	}
	r.mu.Unlock()
	return pos
}

// errNotYet is a shard that cannot start until the gateway is known.
type errNotYet struct{ err error }

func (e errNotYet) Error() string { return e.err.Error() }

// Kill drops every shard's connection as a crash would.
func (r *Runner) Kill() {
	r.cancel()
	<-r.done
	r.wg.Wait()
	for _, g := range r.gens {
		for _, c := range g.clusters {
			c.Kill()
		}
	}
}

// Shards is this node's view of its own shards, of every generation, for status.
func (r *Runner) Shards() []rpc.LocalShard {
	type clusterOf struct {
		g *generation
		c *shard.Cluster
	}
	now := r.now()
	current := r.deliveryCurrent()
	r.mu.Lock()
	var clusters []clusterOf
	type placed struct {
		cluster int
		epoch   uint64
		warm    bool
	}
	where := map[*generation]map[int]placed{}
	for _, g := range r.gens {
		for _, c := range g.clusters {
			clusters = append(clusters, clusterOf{g, c})
		}
		m := make(map[int]placed, len(g.clusterOf))
		for id, cid := range g.clusterOf {
			m[id] = placed{cid, g.epochOf[id], current && g.warm(id, now)}
		}
		where[g] = m
	}
	r.mu.Unlock()
	var out []rpc.LocalShard
	for _, gc := range clusters {
		for _, info := range gc.c.Info() {
			p := where[gc.g][info.ShardID]
			out = append(out, rpc.LocalShard{Info: info, Cluster: p.cluster, Epoch: p.epoch, Gen: gc.g.gen, Warm: p.warm})
		}
	}
	return out
}

// maxSwitchBacklog is the most events the current generation's queues may hold
// here for a reshard's shards here to count as warm: the cut-over needs the old
// generation's delivery to be current at the switch (see cutover), so the switch
// waits out a failing or lagging sink.
const maxSwitchBacklog = 1000

// deliveryCurrent reports the sink healthy and the generations that deliver here no
// more than maxSwitchBacklog behind.
func (r *Runner) deliveryCurrent() bool {
	if r.sinkHealth.failing.Load() {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, g := range r.gens {
		if g.tracking.Load() {
			for _, c := range g.clusters {
				n += c.Queued()
			}
		}
	}
	return n <= maxSwitchBacklog
}

// Sink is the sink's health, for status.
func (r *Runner) Sink() api.Sink {
	st := r.sinkHealth.status()
	st.Backlog = r.Backlog()
	return st
}
