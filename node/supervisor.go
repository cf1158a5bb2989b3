package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/shard"
)

// supervisor runs this node's shards as the state machine assigns them: it starts
// assigned shards while the lease holds (RESUME when a resume state exists), stops
// and releases revoked ones, suspends all of them when the lease is lost, and
// checkpoints their positions.
type supervisor struct {
	n      *Node
	pokeCh chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	reqs   chan func() // work that must run on the run goroutine
	done   chan struct{}
	halted bool // after stopAll: start nothing more

	// Only the run goroutine touches these, but for clusters, which it writes under mu
	// so that status can read it.
	clusters   map[int]*shard.Cluster
	running    map[int]uint64         // shard → the epoch it runs under
	suspended  map[int]suspendedShard // stopped here while still assigned here
	releases   map[int]fsm.Release    // waiting to be written
	checkpoint map[int]fsm.ResumeData // last written, by shard
	gatewayURL string

	mu        sync.Mutex
	handled   map[int]position // the last event each shard delivered to the sink
	stopping  map[int]bool     // being stopped here: a failing sink may give up on them
	abandoned map[int]bool     // stopping, and an event was not delivered: deliver no more
	// anyAbandoned counts abandoned's entries, so that the delivery of each event
	// looks at the map only while a shard is being given up on.
	anyAbandoned atomic.Int32
	clusterOf    map[int]int
	started      map[int]time.Time // when a shard was started here, for the failover log
	resumed      []resumedShard    // resumes not yet noted; see noteResumed

	sinkHealth sinkHealth
}

type position struct {
	session string
	seq     int64
}

type suspendedShard struct {
	epoch uint64
	state shard.ResumeState
}

func newSupervisor(n *Node) *supervisor {
	ctx, cancel := context.WithCancel(context.Background())
	return &supervisor{
		n: n, pokeCh: make(chan struct{}, 1), ctx: ctx, cancel: cancel,
		reqs: make(chan func()), done: make(chan struct{}),
		clusters: make(map[int]*shard.Cluster), running: make(map[int]uint64),
		suspended: make(map[int]suspendedShard), releases: make(map[int]fsm.Release),
		checkpoint: make(map[int]fsm.ResumeData), handled: make(map[int]position),
		stopping: make(map[int]bool), abandoned: make(map[int]bool),
		clusterOf: make(map[int]int), started: make(map[int]time.Time),
	}
}

func (s *supervisor) poke() {
	select {
	case s.pokeCh <- struct{}{}:
	default:
	}
}

func (s *supervisor) run() {
	defer close(s.done)
	tick := time.NewTicker(s.n.cfg.CheckpointInterval)
	defer tick.Stop()
	for {
		if !s.halted {
			s.pass()
		}
		select {
		case <-s.n.ctx.Done():
			return
		case f := <-s.reqs:
			f()
		case <-s.pokeCh:
		case <-tick.C:
			s.writeCheckpoint()
		}
	}
}

// pass brings the shards running here in line with the state machine and the lease.
func (s *supervisor) pass() {
	n := s.n
	leaseOK := n.lease.valid(time.Now())
	want := make(map[int]fsm.Assignment)
	for _, a := range n.fsm.ShardsOf(n.cfg.Name) {
		want[a.Shard] = a
	}
	type stop struct {
		id      int
		epoch   uint64
		release bool
	}
	var stops []stop
	for id, epoch := range s.running {
		a, ok := want[id]
		switch {
		case !ok || a.Epoch != epoch:
			n.log.Warn("shard moved away while running here; stopping it", "shard", id)
			stops = append(stops, stop{id: id, epoch: epoch})
		case a.Phase == fsm.Revoking:
			stops = append(stops, stop{id: id, epoch: epoch, release: true})
		case !leaseOK:
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
				finals[i] = s.stopShard(st.id)
			}()
		}
		wg.Wait()
		for i, st := range stops {
			delete(s.running, st.id)
			delete(s.checkpoint, st.id)
			if a, ok := want[st.id]; ok && a.Epoch == st.epoch {
				s.suspended[st.id] = suspendedShard{epoch: st.epoch, state: finals[i]}
			}
		}
		if !leaseOK {
			n.log.Warn("lease lost: shards suspended", "count", len(stops), "why", n.lease.status().Reason)
			n.note("lease lost: %d shards suspended (%s)", len(stops), n.lease.status().Reason)
		}
	}
	// Revoked shards not running here (suspended, or never started) are released too,
	// with the best state known: our own final one, else the last checkpoint.
	for id, a := range want {
		if a.Phase != fsm.Revoking {
			continue
		}
		if _, pending := s.releases[id]; pending {
			continue
		}
		rd := fsm.ResumeData{}
		if sp, ok := s.suspended[id]; ok && sp.epoch == a.Epoch {
			rd = fsm.ResumeData{SessionID: sp.state.SessionID, Seq: sp.state.Seq, ResumeURL: sp.state.ResumeURL}
		} else if r, ok := n.fsm.Resume(id); ok {
			rd = fsm.ResumeData{SessionID: r.SessionID, Seq: r.Seq, ResumeURL: r.ResumeURL}
		}
		s.releases[id] = fsm.Release{Shard: id, Epoch: a.Epoch, Resume: rd}
	}
	for id, sp := range s.suspended {
		if a, ok := want[id]; !ok || a.Epoch != sp.epoch {
			delete(s.suspended, id)
		}
	}
	if leaseOK {
		for id, a := range want {
			if _, ok := s.running[id]; ok || a.Phase != fsm.Assigned {
				continue
			}
			if err := s.startShard(a); err != nil {
				n.log.Error("cannot start shard", "shard", id, "err", err)
				continue
			}
			s.running[id] = a.Epoch
		}
	}
	s.writeReleases()
}

// startShard starts a shard in its local cluster, resuming when it can.
func (s *supervisor) startShard(a fsm.Assignment) error {
	n := s.n
	if s.gatewayURL == "" {
		s.gatewayURL = n.cfg.GatewayURL
		if s.gatewayURL == "" {
			gb, err := n.gatewayBot(s.ctx)
			if err != nil {
				return fmt.Errorf("gateway url: %w", err)
			}
			s.gatewayURL = gb.URL
		}
	}
	cfg := n.fsm.Config()
	resume, from := shard.ResumeState{}, "identify"
	if sp, ok := s.suspended[a.Shard]; ok && sp.epoch == a.Epoch && sp.state.Resumable() {
		resume, from = sp.state, "own suspended state"
	} else if r, ok := n.fsm.Resume(a.Shard); ok && r.SessionID != "" && !n.cfg.NoSessionStealing {
		resume, from = shard.ResumeState{SessionID: r.SessionID, Seq: r.Seq, ResumeURL: r.ResumeURL}, "replicated state"
	}
	c, err := s.cluster(a.Shard / n.cfg.ShardsPerCluster)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.handled[a.Shard] = position{session: resume.SessionID, seq: resume.Seq}
	s.clusterOf[a.Shard] = a.Shard / n.cfg.ShardsPerCluster
	s.started[a.Shard] = time.Now()
	s.mu.Unlock()
	err = c.Add(shard.Config{
		Token: n.cfg.Token, ShardID: a.Shard, ShardCount: cfg.TotalShards, Intents: n.cfg.Intents,
		GatewayURL: s.gatewayURL, APIBase: n.cfg.APIBase, Compression: n.cfg.Compression,
		Resume: resume, Gate: &remoteGate{n: n, epoch: a.Epoch}, Logger: n.log.With("shard", a.Shard),
		Permit: func() error { return n.mayLogin(a.Shard, a.Epoch) },
	})
	if err != nil {
		return err
	}
	delete(s.suspended, a.Shard)
	n.log.Info("shard starting", "shard", a.Shard, "epoch", a.Epoch, "from", from, "seq", resume.Seq)
	return nil
}

func (s *supervisor) cluster(id int) (*shard.Cluster, error) {
	if c, ok := s.clusters[id]; ok {
		return c, nil
	}
	n := s.n
	c, err := shard.NewCluster(shard.ClusterConfig{
		ID: id, Logger: n.log,
		Handler: func(ev shard.Event) { s.deliver(id, ev) },
		Observe: s.observe,
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.clusters[id] = c
	s.mu.Unlock()
	return c, nil
}

// deliver hands one event to the sink, then records it as the shard's position: a
// checkpoint never names an event the sink has not accepted. A failing sink is
// retried with backoff, holding up this cluster's handler and so, through its queue,
// its shards' reads (the back-pressure of a slow handler). Only a shard being stopped
// here gives up on it: its final position is the last delivered event, so whoever
// runs the shard next has Discord replay the rest.
func (s *supervisor) deliver(cluster int, ev shard.Event) {
	if sink := s.n.cfg.Sink; sink != nil {
		if !s.deliverRetrying(sink, Delivery{Node: s.n.cfg.Name, Cluster: cluster, Event: ev}) {
			return
		}
	}
	s.mu.Lock()
	if !s.abandoned[ev.ShardID] {
		s.handled[ev.ShardID] = position{session: ev.SessionID, seq: ev.Seq}
	}
	s.mu.Unlock()
}

// deliverRetrying delivers d, retrying until the sink accepts it; false means it was
// not delivered and never will be from here (the node stops, or the shard does).
func (s *supervisor) deliverRetrying(sink Sink, d Delivery) bool {
	id := d.Event.ShardID
	bo := backoff{min: 50 * time.Millisecond, max: 2 * time.Second}
	for {
		if s.ctx.Err() != nil || s.anyAbandoned.Load() > 0 && s.isAbandoned(id) {
			return false
		}
		err := sink.Deliver(d)
		s.sinkHealth.record(err, time.Now())
		if err == nil {
			return true
		}
		wait := bo.next()
		if bo.attempt == 1 || bo.attempt%20 == 0 {
			s.n.log.Error("sink failed; retrying, the shard's position holds", "shard", id, "seq", d.Event.Seq,
				"attempt", bo.attempt, "retry_in", wait, "err", err)
		}
		s.mu.Lock()
		if s.stopping[id] && !s.abandoned[id] {
			// Nothing more of this shard is delivered from here: its position stays
			// at the last accepted event, where the next owner resumes, and events
			// after it would only reach the sink twice.
			s.abandoned[id] = true
			s.anyAbandoned.Add(1)
		}
		s.mu.Unlock()
		if !sleepCtx(s.ctx, wait) {
			return false
		}
	}
}

func (s *supervisor) isAbandoned(id int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.abandoned[id]
}

// backoff doubles a wait from min to max.
type backoff struct {
	min, max time.Duration
	attempt  int
}

func (b *backoff) next() time.Duration {
	d := b.min << min(b.attempt, 20)
	b.attempt++
	return min(d, b.max)
}

// sinkHealth is what status shows of the sink. Every delivery records its outcome,
// so a success while the sink is healthy costs one atomic load.
type sinkHealth struct {
	failing  atomic.Bool // written under mu
	mu       sync.Mutex
	since    time.Time
	lastErr  string
	failures int64
}

// SinkStatus is the sink as status shows it: failing, since when, and why.
type SinkStatus struct {
	Failing  bool      `json:"failing"`
	Since    time.Time `json:"since,omitzero"`
	Error    string    `json:"error,omitempty"`
	Failures int64     `json:"failures"`
}

func (h *sinkHealth) record(err error, now time.Time) {
	if err == nil && !h.failing.Load() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case err == nil:
		h.failing.Store(false)
	case !h.failing.Load():
		h.failing.Store(true)
		h.since = now
		fallthrough
	default:
		h.lastErr = err.Error()
		h.failures++
	}
}

func (h *sinkHealth) status() SinkStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := SinkStatus{Failing: h.failing.Load(), Failures: h.failures}
	if st.Failing {
		st.Since, st.Error = h.since, h.lastErr
	}
	return st
}

func (s *supervisor) observe(l shard.Lifecycle) {
	switch l.Kind {
	case shard.LifecycleReady, shard.LifecycleResumed:
		s.mu.Lock()
		started, ok := s.started[l.ShardID]
		delete(s.started, l.ShardID)
		s.mu.Unlock()
		if ok {
			took := time.Since(started).Round(time.Millisecond)
			s.n.log.Info("shard "+l.Kind.String(), "shard", l.ShardID, "took", took)
			if l.Kind == shard.LifecycleResumed {
				s.noteResumed(l.ShardID, took)
			}
		}
	case shard.LifecycleInvalidated, shard.LifecycleFailed:
		s.n.log.Warn("shard "+l.Kind.String(), "shard", l.ShardID, "reason", l.Reason)
	}
}

// noteResumed gathers the resumes of a quarter second into one event: a failover
// resumes hundreds of shards at once, and one line each would push everything else
// out of the recent events.
func (s *supervisor) noteResumed(id int, took time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resumed = append(s.resumed, resumedShard{id, took})
	if len(s.resumed) > 1 {
		return
	}
	time.AfterFunc(250*time.Millisecond, func() {
		s.mu.Lock()
		batch := s.resumed
		s.resumed = nil
		s.mu.Unlock()
		ids := make([]int, len(batch))
		tooks := make([]time.Duration, len(batch))
		for i, r := range batch {
			ids[i], tooks[i] = r.id, r.took
		}
		slices.Sort(tooks)
		if len(batch) == 1 {
			s.n.note("shard %d resumed in %v", ids[0], tooks[0])
			return
		}
		s.n.note("shards %s resumed in %v (median), %v at most", FoldRanges(ids), tooks[len(tooks)/2], tooks[len(tooks)-1])
	})
}

type resumedShard struct {
	id   int
	took time.Duration
}

// stopShard stops a shard with a resumable close once its queued events were
// delivered, and returns its final state: the session at the last event the sink
// accepted, which is where the next owner resumes.
func (s *supervisor) stopShard(id int) shard.ResumeState {
	s.mu.Lock()
	cid := s.clusterOf[id]
	s.stopping[id] = true
	s.mu.Unlock()
	c := s.clusters[cid]
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	rs, err := c.Remove(ctx, id)
	if err != nil && !errors.Is(err, shard.ErrUnknownShard) {
		s.n.log.Warn("shard stop", "shard", id, "err", err)
	}
	s.mu.Lock()
	p, ok := s.handled[id]
	delete(s.handled, id)
	delete(s.clusterOf, id)
	delete(s.stopping, id)
	if s.abandoned[id] {
		delete(s.abandoned, id)
		s.anyAbandoned.Add(-1)
	}
	s.mu.Unlock()
	// The shard's own seq counts the events it queued; the handled one counts what
	// the sink took. They differ when the sink failed or the stop timed out.
	if ok && rs.SessionID != "" {
		if p.session == rs.SessionID {
			rs.Seq = p.seq
		} else {
			rs.Seq = 0 // a new session, none of whose events were delivered yet
		}
	}
	return rs
}

func (s *supervisor) writeReleases() {
	if len(s.releases) == 0 {
		return
	}
	cmd := fsm.Released{Node: s.n.cfg.Name, At: time.Now().UnixNano()}
	for _, r := range s.releases {
		cmd.Shards = append(cmd.Shards, r)
	}
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	res, err := s.n.write(ctx, cmd)
	if err != nil {
		s.n.log.Warn("cannot release shards yet; retrying", "count", len(cmd.Shards), "err", err)
		return
	}
	ids := make([]int, 0, len(cmd.Shards))
	for _, r := range cmd.Shards {
		ids = append(ids, r.Shard)
		delete(s.releases, r.Shard)
		delete(s.suspended, r.Shard)
	}
	s.n.log.Info("released shards", "shards", FoldRanges(ids), "applied", res.Applied, "stale", len(res.Stale))
	s.n.note("handed off shards %s", FoldRanges(ids))
}

// writeCheckpoint writes the position of every shard that moved since the last
// checkpoint, in one command, while the lease holds.
func (s *supervisor) writeCheckpoint() {
	if !s.n.lease.valid(time.Now()) || len(s.running) == 0 {
		return
	}
	cmd := fsm.Checkpoint{Node: s.n.cfg.Name, At: time.Now().UnixNano()}
	s.mu.Lock()
	for id, epoch := range s.running {
		p, ok := s.handled[id]
		if !ok || p.session == "" {
			continue
		}
		url := s.checkpoint[id].ResumeURL
		if c := s.clusters[s.clusterOf[id]]; c != nil {
			if rs, ok := c.ResumeState(id); ok && rs.SessionID == p.session {
				url = rs.ResumeURL
			}
		}
		rd := fsm.ResumeData{SessionID: p.session, Seq: p.seq, ResumeURL: url}
		if s.checkpoint[id] == rd {
			continue
		}
		cmd.Entries = append(cmd.Entries, fsm.CheckpointEntry{Shard: id, Epoch: epoch, Resume: rd})
	}
	s.mu.Unlock()
	if len(cmd.Entries) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.n.cfg.CheckpointInterval*2)
	defer cancel()
	if _, err := s.n.write(ctx, cmd); err != nil {
		s.n.log.Warn("checkpoint failed", "shards", len(cmd.Entries), "err", err)
		return
	}
	for _, e := range cmd.Entries {
		s.checkpoint[e.Shard] = e.Resume
	}
}

// stopAll stops every shard with a resumable close and, when checkpoint is set,
// writes their final positions: whoever runs them next resumes exactly there.
func (s *supervisor) stopAll(ctx context.Context, checkpoint bool) error {
	done := make(chan error, 1)
	// The run goroutine owns the maps, so the work runs there.
	f := func() {
		s.halted = true
		cmd := fsm.Checkpoint{Node: s.n.cfg.Name, At: time.Now().UnixNano()}
		for id, epoch := range s.running {
			rs := s.stopShard(id)
			if rs.Resumable() {
				cmd.Entries = append(cmd.Entries, fsm.CheckpointEntry{Shard: id, Epoch: epoch,
					Resume: fsm.ResumeData{SessionID: rs.SessionID, Seq: rs.Seq, ResumeURL: rs.ResumeURL}})
			}
			delete(s.running, id)
			delete(s.checkpoint, id)
		}
		if checkpoint && len(cmd.Entries) > 0 {
			_, err := s.n.write(ctx, cmd)
			done <- err
			return
		}
		done <- nil
	}
	select {
	case s.reqs <- f:
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-done
}

// kill drops every shard's connection as a crash would.
func (s *supervisor) kill() {
	s.cancel()
	<-s.done
	for _, c := range s.clusters {
		c.Kill()
	}
}

// maxGrantAge is the oldest grant a shard still uses: half of shard.GrantDeadline, the
// rest is slack for writing the IDENTIFY.
const maxGrantAge = shard.GrantDeadline / 2

// remoteGate asks the leader for each identify: one per bucket per window across the
// whole cluster, within the daily session start budget. It reports each IDENTIFY
// written, so that the leader times the bucket's next grant from the write.
type remoteGate struct {
	n     *Node
	epoch uint64 // the assignment the shard runs under: the leader grants only to it
}

// mayLogin is the last check before a shard of this node writes IDENTIFY or RESUME:
// the node holds its lease and its state machine still gives it the shard at epoch.
// A lease holds only while this node's state has caught up with the leader's at the
// last renewal, and a leader moves a shard off a node only after revoking it (which
// the node sees) or after that node's lease ran out; so a shard that passes here is
// not running anywhere else.
func (n *Node) mayLogin(shardID int, epoch uint64) error {
	if !n.lease.valid(time.Now()) {
		return fmt.Errorf("no lease: %s", n.lease.status().Reason)
	}
	a, ok := n.fsm.Assignment(shardID)
	switch {
	case !ok || a.Node != n.cfg.Name || a.Epoch != epoch:
		return fmt.Errorf("%w: shard %d moved (now %q at epoch %d, ran here at %d)", ErrNotOwner, shardID, a.Node, a.Epoch, epoch)
	case a.Phase != fsm.Assigned:
		return fmt.Errorf("%w: shard %d is being handed off", ErrNotOwner, shardID)
	}
	return nil
}

var _ shard.SendReporter = (*remoteGate)(nil)

// IdentifySent implements shard.SendReporter without holding up the shard: the report
// only makes the leader's next grant in the bucket exact rather than conservative.
func (g *remoteGate) IdentifySent(shardID int) {
	n := g.n
	if n.IsLeader() {
		n.identifySent(shardID)
		return
	}
	addr, _ := n.raft.LeaderWithID()
	if addr == "" || n.ctx.Err() != nil {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ctx, cancel := context.WithTimeout(n.ctx, rpcTimeout)
		defer cancel()
		args := &IdentifySentArgs{Node: n.cfg.Name, Shard: shardID}
		if err := n.peers.call(ctx, string(addr), "IdentifySent", args, &IdentifySentReply{}); err != nil {
			n.log.Debug("identify report not delivered; the leader's bucket waits it out", "shard", shardID, "err", err)
		}
	}()
}

func (g *remoteGate) Wait(ctx context.Context, shardID int) error {
	n := g.n
	for attempt := 0; ; attempt++ {
		var err error
		if err = n.mayLogin(shardID, g.epoch); err != nil {
			// Asking would be refused; the supervisor stops the shard soon.
		} else if n.IsLeader() {
			_, err = n.grantIdentify(ctx, n.cfg.Name, shardID, g.epoch)
			if err == nil && !n.IsLeader() {
				err = ErrNotLeader
			}
		} else if addr, _ := n.raft.LeaderWithID(); addr == "" {
			err = ErrNoLeader
		} else {
			cctx, cancel := context.WithTimeout(ctx, identifyRPCTimeout+rpcTimeout)
			var reply IdentifyReply
			asked := time.Now()
			err = n.peers.call(cctx, string(addr), "Identify", &IdentifyArgs{Node: n.cfg.Name, Shard: shardID, Epoch: g.epoch}, &reply)
			cancel()
			// The grant is at most this old: the round trip less the wait at the leader.
			// The leader times the bucket's next grant from this one if no report comes
			// within shard.GrantDeadline; an IDENTIFY written later than that could
			// meet the next one inside the window, so a grant that took too long to get
			// here (a starved process) is dropped rather than used.
			if age := time.Since(asked) - reply.Waited; err == nil && age > maxGrantAge {
				err = fmt.Errorf("grant %v old when it arrived (a busy machine?); asking again", age.Round(time.Millisecond))
			}
			// A grant counts only while the leader that gave it still leads. One that
			// reached a starved process after a new leader took over was timed against
			// buckets the new leader knows nothing of; the new leader holds its first
			// grants long enough for prompt ones, not for late ones.
			if now, _ := n.raft.LeaderWithID(); err == nil && now != addr {
				err = fmt.Errorf("%w: leadership moved from %s while the grant was on its way", ErrNotLeader, addr)
			}
		}
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := min(time.Duration(attempt+1)*100*time.Millisecond, 2*time.Second)
		if errors.Is(err, ErrBudgetLow) {
			wait = 30 * time.Second
		}
		if attempt%20 == 0 {
			n.log.Warn("identify not granted yet", "shard", shardID, "err", err, "retry_in", wait)
		}
		if !sleepCtx(ctx, wait) {
			return ctx.Err()
		}
	}
}
