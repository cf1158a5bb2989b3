package runner

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
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

	// Only the run goroutine touches these, but for clusters, which it writes under
	// mu so that status can read it.
	clusters   map[int]*shard.Cluster
	running    map[int]uint64         // shard → the epoch it runs under
	suspended  map[int]suspendedShard // stopped here while still assigned here
	releases   map[int]fsm.Release    // waiting to be written
	released   map[int]uint64         // written, by shard, at the epoch: until this replica applies it
	checkpoint map[int]fsm.ResumeData // last written, by shard

	mu        sync.Mutex
	stopping  map[int]bool // being stopped here: a failing sink may give up on them
	abandoned map[int]bool // stopping, and an event was not delivered: deliver no more
	// anyAbandoned counts abandoned's entries, so that the delivery of each event
	// looks at the map only while a shard is being given up on.
	anyAbandoned atomic.Int32
	clusterOf    map[int]int
	epochOf      map[int]uint64
	started      map[int]time.Time // when a shard was started here, for the resume event
	resumed      []resumedShard    // resumes not yet noted; see noteResumed

	sinkHealth sinkHealth
	memberReqs memberRequests // all-members requests, by guild: see allMembersWindow
}

type suspendedShard struct {
	epoch uint64
	state shard.ResumeState
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
		clusters: make(map[int]*shard.Cluster), running: make(map[int]uint64),
		suspended: make(map[int]suspendedShard), releases: make(map[int]fsm.Release), released: make(map[int]uint64),
		checkpoint: make(map[int]fsm.ResumeData),
		stopping:   make(map[int]bool), abandoned: make(map[int]bool),
		clusterOf: make(map[int]int), epochOf: make(map[int]uint64), started: make(map[int]time.Time),
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

// pass brings the shards running here in line with the state machine and the lease.
func (r *Runner) pass() {
	leaseOK := r.lease.valid(r.now())
	// A node whose token Discord rejects runs nothing: the leader moves its shards.
	unfit := r.gw.unfit()
	want := make(map[int]fsm.Assignment)
	for _, a := range r.deps.FSM.ShardsOf(r.cfg.Name) {
		want[a.Shard] = a
	}
	type stop struct {
		id    int
		epoch uint64
	}
	var stops []stop
	for id, epoch := range r.running {
		a, ok := want[id]
		switch {
		case !ok || a.Epoch != epoch:
			r.log.Warn("shard moved away while running here; stopping it", "shard", id)
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
				finals[i] = r.stopShard(st.id)
			}()
		}
		wg.Wait()
		var ids event.Shards
		for i, st := range stops {
			delete(r.running, st.id)
			delete(r.checkpoint, st.id)
			if a, ok := want[st.id]; ok && a.Epoch == st.epoch {
				r.suspended[st.id] = suspendedShard{epoch: st.epoch, state: finals[i]}
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
		if _, pending := r.releases[id]; pending || r.released[id] == a.Epoch {
			continue // written already; this replica has not applied it yet
		}
		var pos fsm.ResumeData
		if sp, ok := r.suspended[id]; ok && sp.epoch == a.Epoch {
			pos = sp.state
		} else if res, ok := r.deps.FSM.Resume(id); ok {
			pos = res.Position
		}
		r.releases[id] = fsm.Release{Shard: id, Epoch: a.Epoch, Resume: pos}
	}
	for id, sp := range r.suspended {
		if a, ok := want[id]; !ok || a.Epoch != sp.epoch {
			delete(r.suspended, id)
		}
	}
	for id, epoch := range r.released {
		if a, ok := want[id]; !ok || a.Epoch != epoch || a.Phase != fsm.Revoking {
			delete(r.released, id)
		}
	}
	if leaseOK && unfit == "" {
		for id, a := range want {
			if _, ok := r.running[id]; ok || a.Phase != fsm.Assigned {
				continue
			}
			if err := r.startShard(a); err != nil {
				// Waiting for the gateway's URL is reported once, by its watcher.
				if !errors.As(err, new(errNotYet)) {
					r.log.Error("cannot start shard", "shard", id, "err", err)
				}
				continue
			}
			r.running[id] = a.Epoch
		}
	}
	r.writeReleases()
}

// startShard starts a shard in its local cluster, resuming when it can.
func (r *Runner) startShard(a fsm.Assignment) error {
	url, err := r.gw.ready()
	if err != nil {
		return errNotYet{err}
	}
	cfg := r.deps.FSM.Config()
	resume, from := shard.ResumeState{}, "identify"
	if sp, ok := r.suspended[a.Shard]; ok && sp.epoch == a.Epoch && sp.state.Resumable() {
		resume, from = sp.state, "own suspended state"
	} else if res, ok := r.deps.FSM.Resume(a.Shard); ok && res.Resumable() && !r.cfg.NoSessionStealing {
		resume, from = res.Position, "replicated state"
	}
	cid := a.Shard / r.cfg.ShardsPerCluster
	c, err := r.cluster(cid)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.clusterOf[a.Shard] = cid
	r.epochOf[a.Shard] = a.Epoch
	r.started[a.Shard] = r.now()
	r.mu.Unlock()
	err = c.Add(shard.Config{
		Token: r.cfg.Token, ShardID: a.Shard, ShardCount: cfg.TotalShards, Intents: r.cfg.Intents,
		GatewayURL: url, APIBase: r.cfg.APIBase, Compression: r.cfg.Compression,
		Resume: resume, Gate: &identifyClient{r: r, epoch: a.Epoch}, Logger: r.log, // the shard adds its id
		Permit:         func() error { return r.MayLogin(a.Shard, a.Epoch) },
		ObserveLatency: r.latencyObserver(),
	})
	if err != nil {
		return err
	}
	delete(r.suspended, a.Shard)
	r.log.Info("shard starting", "shard", a.Shard, "epoch", a.Epoch, "from", from, "seq", resume.Seq)
	return nil
}

func (r *Runner) cluster(id int) (*shard.Cluster, error) {
	if c, ok := r.clusters[id]; ok {
		return c, nil
	}
	c, err := shard.NewCluster(shard.ClusterConfig{
		ID: id, Logger: r.log,
		BatchHandler: func(evs []shard.Event, errs []error) { r.deliverBatch(id, evs, errs) },
		Observe:      r.observe,
	})
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.clusters[id] = c
	r.mu.Unlock()
	return c, nil
}

// stopShard stops a shard with a resumable close once its queued events were
// delivered, and returns its final position: the session at the last event the sink
// accepted, which is where the next owner resumes.
func (r *Runner) stopShard(id int) shard.ResumeState {
	r.mu.Lock()
	cid := r.clusterOf[id]
	r.stopping[id] = true
	r.mu.Unlock()
	c := r.clusters[cid]
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	pos, err := c.Remove(ctx, id)
	if err != nil && !errors.Is(err, shard.ErrUnknownShard) {
		r.log.Warn("shard stop", "shard", id, "err", err)
	}
	r.mu.Lock()
	delete(r.clusterOf, id)
	delete(r.epochOf, id)
	delete(r.stopping, id)
	if r.abandoned[id] {
		delete(r.abandoned, id)
		r.anyAbandoned.Add(-1)
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
	for _, c := range r.clusters {
		c.Kill()
	}
}

// Shards is this node's view of its own shards, for status.
func (r *Runner) Shards() []rpc.LocalShard {
	r.mu.Lock()
	clusters := make([]*shard.Cluster, 0, len(r.clusters))
	for _, c := range r.clusters {
		clusters = append(clusters, c)
	}
	clusterOf := make(map[int]int, len(r.clusterOf))
	epochOf := make(map[int]uint64, len(r.epochOf))
	for k, v := range r.clusterOf {
		clusterOf[k], epochOf[k] = v, r.epochOf[k]
	}
	r.mu.Unlock()
	var out []rpc.LocalShard
	for _, c := range clusters {
		for _, info := range c.Info() {
			out = append(out, rpc.LocalShard{Info: info, Cluster: clusterOf[info.ShardID], Epoch: epochOf[info.ShardID]})
		}
	}
	return out
}

// Sink is the sink's health, for status.
func (r *Runner) Sink() api.Sink {
	st := r.sinkHealth.status()
	st.Backlog = r.Backlog()
	return st
}
