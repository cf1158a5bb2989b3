package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discluster/discluster/internal/backoff"
)

// ClusterConfig configures a Cluster.
type ClusterConfig struct {
	ID int
	// Handler receives every dispatch of every shard of the cluster, one at a time,
	// from one goroutine, in the order the shards accepted them (per shard, that is
	// sequence order). It must not call back into the Cluster.
	//
	// What it returns is how the cluster knows where each shard's handled position is
	// (see Handled and Remove), which is the position a shard's next owner resumes
	// from: a shard's own resume state counts events queued, not handled. Nil means the
	// event was handled (delivered): the shard's position moves to (ev.SessionID,
	// ev.Seq). An error means it was not and never will be from here (the handler gave
	// up on it, say because the shard is being stopped and the sink keeps failing):
	// the position stays where it was, and no later event of the same run of the shard
	// (from its Add to its Remove) moves it either, even when the handler returns nil
	// for it. Counting a later event would skip the one not handled: the next owner
	// must resume from the last handled event so that Discord replays the rest. The
	// handler still receives those later events; it may drop them, since they will be
	// replayed to the next owner anyway.
	Handler func(Event) error
	// BatchHandler, when set, is used instead of Handler: it receives, in one call,
	// the events the queue already holds (up to MaxBatch; it never waits for more,
	// so a lone event goes out at once), and reports its verdict on each in errs,
	// which has the batch's length and is all nil on entry: a nil is a handled event,
	// an error one not handled, by the same rules as Handler's return. It runs on the
	// same goroutine, in the same order, and must not keep batch or errs.
	BatchHandler func(batch []Event, errs []error)
	// MaxBatch bounds a BatchHandler's batch (default 256).
	MaxBatch int
	// QueueSize bounds the events accepted but not yet handled (default 1024). When
	// the queue is full, shards stop reading their sockets until it has room: a slow
	// handler slows the gateway down (TCP back-pressure up to Discord), it never loses
	// an event. Heartbeats keep going meanwhile, so the connections stay up.
	QueueSize int
	// Observe receives the lifecycle events of every shard, from the shards'
	// goroutines. It must not block for long.
	Observe func(Lifecycle)
	// BackoffMin and BackoffMax bound the wait before restarting a shard whose
	// connection failed without establishing a session (defaults 1 s and 60 s). The
	// wait doubles after each such failure, with jitter, and resets once a session is
	// established.
	BackoffMin time.Duration
	BackoffMax time.Duration
	Logger     *slog.Logger
}

// ErrUnknownShard is returned for a shard id the cluster does not run.
var ErrUnknownShard = errors.New("shard not in this cluster")

// Cluster supervises a group of shards on one node: it runs each, restarts the ones
// that fail for a retryable reason with exponential backoff, reports fatal ones, and
// feeds all their dispatches through one bounded queue to one handler. Because it
// owns that handler, it also keeps each shard's handled position (Handled), which is
// what a shard's next owner resumes from.
type Cluster struct {
	cfg   ClusterConfig
	log   *slog.Logger
	queue chan queued

	ctx    context.Context
	cancel context.CancelFunc
	drain  sync.WaitGroup // the handler goroutine

	mu     sync.Mutex
	shards map[int]*supervised
	closed bool
}

type queued struct {
	ev    Event
	from  *supervised   // the shard run that queued ev
	flush chan struct{} // a marker: closed when the handler reaches it
	do    func()        // with flush: run on the handler's goroutine first
}

type supervised struct {
	shard  *Shard
	cancel context.CancelFunc
	done   chan struct{}
	// removed is set once Remove gave up waiting for this run's events: those still
	// queued are dropped, so that none reaches the handler after a later run of the
	// same shard id started.
	removed atomic.Bool
	handled handledPos
}

// handledPos is the last event of one run of a shard that the handler handled. The
// handler goroutine records each event under a lock that only Handled and Remove
// contend for, and allocates nothing doing so: it runs once per event.
type handledPos struct {
	mu      sync.Mutex
	session string
	seq     int64
	// frozen is set when an event of the run was not handled, or once Remove returned
	// the position: from then on it is final, and no event moves it.
	frozen bool
}

// record notes the handler's verdict on ev.
func (p *handledPos) record(ev Event, err error) (froze bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.frozen:
	case err != nil:
		p.frozen = true
		return true
	case ev.SessionID != p.session:
		p.session, p.seq = ev.SessionID, ev.Seq
	case ev.Seq > p.seq:
		// Within a session only forward, as the shard's own seq: a position never
		// names an event before one already handled.
		p.seq = ev.Seq
	}
	return false
}

func (p *handledPos) get() (session string, seq int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.session, p.seq
}

// freeze makes the position final and returns it.
func (p *handledPos) freeze() (session string, seq int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = true
	return p.session, p.seq
}

// final freezes the run's handled position and returns the state its next owner
// resumes from: the handled position, or, when the shard has moved to a new session
// none of whose events was handled yet, that session from its start (Seq 0). The
// resume URL is the shard's own, which belongs to its current session.
func (sv *supervised) final() ResumeState {
	session, seq := sv.handled.freeze()
	rs := sv.shard.ResumeState()
	if rs.SessionID != session {
		return ResumeState{SessionID: rs.SessionID, ResumeURL: rs.ResumeURL}
	}
	return ResumeState{SessionID: session, Seq: seq, ResumeURL: rs.ResumeURL}
}

// runDispatcher queues the events of one run of a shard.
type runDispatcher struct {
	c  *Cluster
	sv *supervised
}

func (d runDispatcher) Dispatch(ctx context.Context, ev Event) error {
	select {
	case d.c.queue <- queued{ev: ev, from: d.sv}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// NewCluster starts a cluster with no shards.
func NewCluster(cfg ClusterConfig) (*Cluster, error) {
	if cfg.Handler == nil && cfg.BatchHandler == nil {
		return nil, fmt.Errorf("%w: cluster %d: Handler and BatchHandler are nil", ErrInvalidConfig, cfg.ID)
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = 256
	}
	if cfg.MaxBatch < 1 {
		return nil, fmt.Errorf("%w: cluster %d: MaxBatch %d must be positive", ErrInvalidConfig, cfg.ID, cfg.MaxBatch)
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = 1024
	}
	if cfg.QueueSize < 1 {
		return nil, fmt.Errorf("%w: cluster %d: QueueSize %d must be positive", ErrInvalidConfig, cfg.ID, cfg.QueueSize)
	}
	setDefault(&cfg.BackoffMin, time.Second)
	setDefault(&cfg.BackoffMax, time.Minute)
	if cfg.BackoffMax < cfg.BackoffMin {
		return nil, fmt.Errorf("%w: cluster %d: BackoffMax %v is below BackoffMin %v", ErrInvalidConfig, cfg.ID, cfg.BackoffMax, cfg.BackoffMin)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cluster{
		cfg:    cfg,
		log:    cfg.Logger.With("cluster", cfg.ID),
		queue:  make(chan queued, cfg.QueueSize),
		ctx:    ctx,
		cancel: cancel,
		shards: make(map[int]*supervised),
	}
	c.drain.Add(1)
	go c.handle()
	return c, nil
}

func (c *Cluster) handle() {
	defer c.drain.Done()
	var (
		taken []queued // what the queue held, up to a flush marker
		evs   []Event  // the events of taken still to be handled
		from  []*supervised
		errs  []error
	)
	for {
		select {
		case q := <-c.queue:
			taken = append(taken[:0], q)
			// Take what is queued already, without waiting for more: a batch never
			// holds an event back. A flush marker ends the batch, so that it is
			// closed only once the events before it were handled.
			for c.cfg.BatchHandler != nil && q.flush == nil && len(taken) < c.cfg.MaxBatch {
				select {
				case q = <-c.queue:
					taken = append(taken, q)
					continue
				default:
				}
				break
			}
			evs, from = evs[:0], from[:0]
			for _, q := range taken {
				if q.flush != nil || q.from != nil && q.from.removed.Load() {
					continue
				}
				evs, from = append(evs, q.ev), append(from, q.from)
			}
			errs = slices.Grow(errs[:0], len(evs))[:len(evs)]
			clear(errs)
			switch {
			case len(evs) == 0:
			case c.cfg.BatchHandler != nil:
				c.cfg.BatchHandler(evs, errs)
			default:
				errs[0] = c.cfg.Handler(evs[0])
			}
			for i, ev := range evs {
				if from[i] != nil && from[i].handled.record(ev, errs[i]) {
					c.log.Warn("event not handled; the shard's position holds for the rest of its run",
						"shard", ev.ShardID, "session", ev.SessionID, "seq", ev.Seq, "err", errs[i])
				}
			}
			clear(evs) // the handler's Data is not kept alive here
			if last := taken[len(taken)-1]; last.flush != nil {
				if last.do != nil {
					last.do()
				}
				close(last.flush)
			}
			clear(taken)
		case <-c.ctx.Done():
			return
		}
	}
}

// flush waits until every event queued before it was handled.
func (c *Cluster) flush(ctx context.Context) error { return c.Do(ctx, nil) }

// Do runs fn on the handler's goroutine once every event queued before it was
// handled, and waits until it ran: work ordered with the handler's own, such as
// handing on events the handler kept back. fn must not call into the cluster.
func (c *Cluster) Do(ctx context.Context, fn func()) error {
	f := make(chan struct{})
	select {
	case c.queue <- queued{flush: f, do: fn}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-f:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Add starts a shard in the cluster. cfg.Dispatch is set by the cluster; cfg.Observe
// is chained after the cluster's own.
func (c *Cluster) Add(cfg Config) error {
	if own, all := cfg.Observe, c.cfg.Observe; own != nil || all != nil {
		cfg.Observe = func(l Lifecycle) {
			if all != nil {
				all(l)
			}
			if own != nil {
				own(l)
			}
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = c.log
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("add shard %d: cluster %d is closed", cfg.ShardID, c.cfg.ID)
	}
	if _, ok := c.shards[cfg.ShardID]; ok {
		return fmt.Errorf("add shard %d: already in cluster %d", cfg.ShardID, c.cfg.ID)
	}
	sv := &supervised{done: make(chan struct{})}
	// Until an event is handled, the position is where the shard starts: the session
	// it resumes, or none when it identifies.
	if cfg.Resume.Resumable() {
		sv.handled.session, sv.handled.seq = cfg.Resume.SessionID, cfg.Resume.Seq
	}
	cfg.Dispatch = runDispatcher{c: c, sv: sv}
	sh, err := New(cfg)
	if err != nil {
		return fmt.Errorf("add shard %d: %w", cfg.ShardID, err)
	}
	ctx, cancel := context.WithCancel(c.ctx)
	sv.shard, sv.cancel = sh, cancel
	c.shards[cfg.ShardID] = sv
	go c.supervise(ctx, sv)
	return nil
}

// supervise runs a shard until it is stopped or fails fatally, restarting it after
// retryable failures with exponential backoff and jitter.
func (c *Cluster) supervise(ctx context.Context, sv *supervised) {
	defer close(sv.done)
	// Jitter in [wait/2, wait]: shards that failed together (a gateway outage) must
	// not retry together.
	bo := backoff.Backoff{Min: c.cfg.BackoffMin, Max: c.cfg.BackoffMax, Jitter: 0.5}
	for {
		before := sv.shard.establishedCount()
		err := sv.shard.Run(ctx)
		switch {
		case err == nil, errors.Is(err, ErrStopped), ctx.Err() != nil:
			return
		case errors.Is(err, ErrFatal):
			c.log.Error("shard stopped for good", "shard", sv.shard.ID(), "err", err)
			return
		}
		if sv.shard.establishedCount() > before {
			bo.Reset()
		}
		wait := bo.Next()
		c.log.Warn("shard failed, restarting", "shard", sv.shard.ID(), "in", wait, "err", err)
		if !backoff.Sleep(ctx, wait) {
			return
		}
	}
}

// Remove stops a shard with a resumable close, waits until every event it accepted
// went through the handler, and returns its final resume state: the state to hand to
// the shard's next owner. Its Seq is the last event handled (see
// ClusterConfig.Handler), so the next owner neither loses an event nor, unless the
// handler gave up on one, repeats one; when the shard is in a new session none of
// whose events was handled yet, it is that session with Seq 0, whose RESUME replays
// all of it. When ctx ends while the handler is still behind, the shard is removed
// all the same, its unhandled events are dropped, and the error says so; the state
// returned still names only handled events. Whatever Remove returns is final: no
// event the handler finishes afterwards moves the position.
func (c *Cluster) Remove(ctx context.Context, shardID int) (ResumeState, error) {
	c.mu.Lock()
	sv, ok := c.shards[shardID]
	c.mu.Unlock()
	if !ok {
		return ResumeState{}, fmt.Errorf("remove shard %d: %w", shardID, ErrUnknownShard)
	}
	if _, err := sv.shard.Stop(ctx); err != nil {
		return sv.final(), err
	}
	sv.cancel()
	select {
	case <-sv.done:
	case <-ctx.Done():
		return sv.final(), fmt.Errorf("remove shard %d: %w", shardID, ctx.Err())
	}
	err := c.flush(ctx)
	if err != nil {
		// The handler is stuck (a sink that keeps failing). The shard is gone all the
		// same; its events still queued are dropped rather than handled after the
		// caller took the shard's position as final.
		sv.removed.Store(true)
		err = fmt.Errorf("remove shard %d: flush events: %w; events not handled yet are dropped", shardID, err)
	}
	// Frozen before the shard leaves the map, so Handled never shows a position that
	// moved past the one returned here.
	rs := sv.final()
	c.mu.Lock()
	if c.shards[shardID] == sv {
		delete(c.shards, shardID)
	}
	c.mu.Unlock()
	return rs, err
}

// End ends a shard's session for good (Shard.End: close 1000) and removes it. Its
// events not handled yet are dropped, not handled: whoever ends a session takes its
// events from elsewhere (a reshard's new generation).
func (c *Cluster) End(ctx context.Context, shardID int) error {
	c.mu.Lock()
	sv, ok := c.shards[shardID]
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("end shard %d: %w", shardID, ErrUnknownShard)
	}
	sv.removed.Store(true)
	err := sv.shard.End(ctx)
	sv.cancel()
	select {
	case <-sv.done:
	case <-ctx.Done():
		err = errors.Join(err, fmt.Errorf("end shard %d: %w", shardID, ctx.Err()))
	}
	c.mu.Lock()
	if c.shards[shardID] == sv {
		delete(c.shards, shardID)
	}
	c.mu.Unlock()
	return err
}

// Send sends a gateway command on one of the cluster's shards.
func (c *Cluster) Send(ctx context.Context, shardID, op int, d any) error {
	c.mu.Lock()
	sv, ok := c.shards[shardID]
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("send to shard %d: %w", shardID, ErrUnknownShard)
	}
	return sv.shard.Send(ctx, op, d)
}

// Info returns a snapshot of every shard, by shard id.
func (c *Cluster) Info() []Info {
	c.mu.Lock()
	out := make([]Info, 0, len(c.shards))
	for _, sv := range c.shards {
		out = append(out, sv.shard.Info())
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b Info) int { return a.ShardID - b.ShardID })
	return out
}

// Close removes every shard (each with a resumable close, its events handled) and
// stops the handler. It returns the final resume state of each shard it stopped, by
// the same rule as Remove: the last handled event. Close is idempotent.
func (c *Cluster) Close(ctx context.Context) (map[int]ResumeState, error) {
	c.mu.Lock()
	c.closed = true
	ids := make([]int, 0, len(c.shards))
	for id := range c.shards {
		ids = append(ids, id)
	}
	c.mu.Unlock()

	var mu sync.Mutex
	states := make(map[int]ResumeState, len(ids))
	var errs []error
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs, err := c.Remove(ctx, id)
			mu.Lock()
			defer mu.Unlock()
			states[id] = rs
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	c.cancel()
	c.drain.Wait()
	return states, errors.Join(errs...)
}

// ResumeState returns a running shard's resume state (its Seq counts the events
// accepted into the queue, handled or not). A checkpoint wants Handled.
func (c *Cluster) ResumeState(shardID int) (ResumeState, bool) {
	c.mu.Lock()
	sv, ok := c.shards[shardID]
	c.mu.Unlock()
	if !ok {
		return ResumeState{}, false
	}
	return sv.shard.ResumeState(), true
}

// Handled returns a running shard's handled position: the session and seq of the
// last event the handler handled (see ClusterConfig.Handler), or the resume state the
// shard was added with while none was. That is what a checkpoint may write: resuming
// from it loses no event. ResumeURL is the shard's own when the shard is still in
// the handled session, else empty (the URL belongs to the shard's new session). ok
// is false for a shard the cluster does not run. Handled is safe to call from any
// goroutine while events are being handled.
func (c *Cluster) Handled(shardID int) (ResumeState, bool) {
	c.mu.Lock()
	sv, ok := c.shards[shardID]
	c.mu.Unlock()
	if !ok {
		return ResumeState{}, false
	}
	session, seq := sv.handled.get()
	hs := ResumeState{SessionID: session, Seq: seq}
	if rs := sv.shard.ResumeState(); rs.SessionID == session {
		hs.ResumeURL = rs.ResumeURL
	}
	return hs, true
}

// Kill drops every shard's connection without a close frame and stops the handler
// without draining the queue, as a crash of the process would. Sessions stay
// resumable on Discord's side. Kill exists for failure tests and for a node that must
// stop at once; Close is the orderly way.
func (c *Cluster) Kill() {
	c.mu.Lock()
	c.closed = true
	svs := make([]*supervised, 0, len(c.shards))
	for _, sv := range c.shards {
		svs = append(svs, sv)
	}
	c.mu.Unlock()
	c.cancel()
	for _, sv := range svs {
		<-sv.done
	}
	c.drain.Wait()
}
