package runner

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discluster/discluster/internal/backoff"
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/cutover"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/node/sink"
	"github.com/discluster/discluster/shard"
)

// errGivenUp is a delivery the runner gave up on: the shard stops here, and whoever
// runs it next has Discord replay the event.
var errGivenUp = errors.New("delivery given up: the shard is stopping")

// sinkAttempt bounds one Deliver call, so that a sink that hangs (a paused broker)
// counts as failing, shows in status, and lets a stopping shard give up.
const sinkAttempt = 5 * time.Second

// deliverBatch hands a batch of one cluster's events to the sink and sets errs[i]
// for each event it did not deliver. A nil tells the cluster the event was handled,
// so a checkpoint never names an event the sink has not accepted. A failing sink is
// retried with backoff from the first event it did not accept, holding up this
// cluster's handler and so, through its queue, its shards' reads (the back-pressure
// of a slow handler). Only a shard being stopped here gives up on its events: its
// final position is the last delivered event; the other shards' events of the batch
// are still delivered.
func (r *Runner) deliverBatch(g *generation, cluster int, evs []shard.Event, errs []error) {
	pending := make([]int, 0, len(evs)) // indexes into evs, not delivered yet
	for i, ev := range evs {
		if r.cfg.Events == nil || r.cfg.Events[ev.Type] || ev.Type == "READY" || ev.Type == "GUILD_CREATE" {
			pending = append(pending, i)
		}
	}
	r.mu.Lock()
	holds := len(g.hold) > 0
	r.mu.Unlock()
	if holds {
		pending = r.holdBack(g, cluster, evs, pending, errs)
	}
	if r.cfg.Events != nil {
		// READY and GUILD_CREATE were kept only for a held shard's start.
		pending = slices.DeleteFunc(pending, func(i int) bool { return !r.cfg.Events[evs[i].Type] })
	}
	r.deliver(g, cluster, evs, pending, errs)
}

// deliver hands evs[pending] to the sink, in order, retrying from the first one it
// did not accept, and sets errs for those given up on (errs may be nil).
func (r *Runner) deliver(g *generation, cluster int, evs []shard.Event, pending []int, errs []error) {
	s := r.cfg.Sink
	if s == nil || len(pending) == 0 {
		return
	}
	giveUp := func(is []int) {
		for _, i := range is {
			if errs != nil {
				errs[i] = errGivenUp
			}
		}
	}
	batch := make([]sink.Delivery, 0, len(pending))
	bo := backoff.Backoff{Min: 50 * time.Millisecond, Max: 2 * time.Second}
	for {
		if r.ctx.Err() != nil {
			giveUp(pending)
			return
		}
		if g.anyAbandoned.Load() > 0 {
			pending = slices.DeleteFunc(pending, func(i int) bool {
				if r.isAbandoned(g, evs[i].ShardID) {
					giveUp([]int{i})
					return true
				}
				return false
			})
		}
		if len(pending) == 0 {
			return
		}
		batch = batch[:0]
		for _, i := range pending {
			batch = append(batch, sink.Delivery{Node: r.cfg.Name, Cluster: cluster, Event: evs[i]})
		}
		// A generation that ended (the switch made another current) delivers nothing
		// more: its successor delivers from the cut on.
		g.deliveries.RLock()
		if g.ending.Load() {
			g.deliveries.RUnlock()
			giveUp(pending)
			return
		}
		ctx, cancel := context.WithTimeout(r.ctx, sinkAttempt)
		err := s.Deliver(ctx, batch)
		cancel()
		n := sink.Accepted(err, len(batch))
		if g.tracking.Load() {
			r.track(g, evs, pending[:n])
		}
		g.deliveries.RUnlock()
		r.sinkHealth.record(err, r.now())
		pending = pending[n:]
		if err == nil {
			return
		}
		if n > 0 {
			bo.Reset()
		}
		wait := bo.Next()
		first := evs[pending[0]]
		if k := bo.Attempt(); k == 1 || k%20 == 0 {
			r.log.Error("sink failed; retrying, the shards' positions hold", "shard", first.ShardID, "seq", first.Seq,
				"events", len(pending), "attempt", k, "retry_in", wait, "err", err)
		}
		r.mu.Lock()
		for _, i := range pending {
			if id := evs[i].ShardID; g.stopping[id] && !g.abandoned[id] {
				// Nothing more of this shard is delivered from here: its position
				// stays at the last accepted event, where the next owner resumes, and
				// events after it would only reach the sink twice.
				g.abandoned[id] = true
				g.anyAbandoned.Add(1)
			}
		}
		r.mu.Unlock()
		if !backoff.Sleep(r.ctx, wait) {
			giveUp(pending)
			return
		}
	}
}

// track records deliveries for the cut, while a successor generation starts.
func (r *Runner) track(g *generation, evs []shard.Event, delivered []int) {
	now := r.now()
	g.trackMu.Lock()
	defer g.trackMu.Unlock()
	for _, i := range delivered {
		ev := evs[i]
		if cutover.SessionEvent(ev.Type) {
			continue
		}
		t := g.trackers[ev.ShardID]
		if t == nil {
			var err error
			if t, err = cutover.NewTracker(cutoverConfig); err != nil {
				panic(err) // cutoverConfig is a constant
			}
			g.trackers[ev.ShardID] = t
		}
		t.Delivered(cutover.KeyOf(ev.Type, ev.Data), now)
	}
}

func (r *Runner) isAbandoned(g *generation, id int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return g.abandoned[id]
}

// holdBack takes the events of a new generation's shards out of pending and passes
// them through their Holdback: before the release they are held (or dropped, the
// session's start); from the release until it is done, what the Holdback gives back
// is delivered, in order. It returns what is left to deliver as usual. Every release
// runs on the cluster's handler goroutine, so a shard's events reach the sink in
// order.
func (r *Runner) holdBack(g *generation, cluster int, evs []shard.Event, pending []int, errs []error) []int {
	rest := pending[:0:0]
	byShard := map[int][]int{}
	r.mu.Lock()
	holds := make(map[int]*heldShard, len(g.hold))
	for _, i := range pending {
		id := evs[i].ShardID
		h, ok := g.hold[id]
		if !ok {
			rest = append(rest, i)
			continue
		}
		holds[id] = h
		byShard[id] = append(byShard[id], i)
	}
	r.mu.Unlock()
shards:
	for id, is := range byShard {
		h := holds[id]
		r.releaseShard(g, cluster, id, h) // when its cut came meanwhile
		var out []shard.Event
		for k, i := range is {
			for {
				got, full := r.holdEvent(h, evs[i], r.now())
				out = append(out, got...)
				if !full {
					break
				}
				// Full before the switch: the handler waits, so the shard stops
				// reading and Discord buffers, as with a slow sink.
				r.mu.Lock()
				stopping := g.stopping[id]
				r.mu.Unlock()
				if stopping || !backoff.Sleep(r.ctx, 100*time.Millisecond) {
					for _, j := range is[k:] {
						errs[j] = errGivenUp
					}
					r.deliverHeld(g, cluster, id, h, out)
					continue shards
				}
			}
		}
		r.deliverHeld(g, cluster, id, h, out)
	}
	return rest
}

// releaseShard applies a held shard's cut once it is known, and delivers what the
// Holdback gives back. Only the cluster's handler goroutine calls it.
func (r *Runner) releaseShard(g *generation, cluster, id int, h *heldShard) {
	h.mu.Lock()
	if h.released || h.cut == nil {
		h.mu.Unlock()
		return
	}
	rel, err := h.hb.Release(h.cut, r.now())
	h.released = true
	h.mu.Unlock()
	if err != nil {
		r.log.Error("reshard: releasing held events", "shard", id, "generation", g.gen, "err", err)
	}
	r.log.Info("reshard: held events released past the old generation's cut", "shard", id, "generation", g.gen,
		"delivered", len(rel.Events), "dropped", rel.Dropped, "guilds_matched", rel.Matched, "older", rel.Older, "pre_session", rel.PreSession, "waiting", rel.Waiting)
	r.deliverHeld(g, cluster, id, h, rel.Events)
}

// dueShard delivers the events of a released shard's guilds that waited past the
// deadline for their cut event. Only the cluster's handler goroutine calls it.
func (r *Runner) dueShard(g *generation, cluster, id int, h *heldShard) {
	h.mu.Lock()
	var evs []shard.Event
	if h.released {
		evs = h.hb.Due(r.now())
	}
	h.mu.Unlock()
	r.deliverHeld(g, cluster, id, h, evs)
}

// deliverHeld delivers what a held shard's Holdback gave back, and once its release
// is done, ends the shard's holding: from then on its events go to the sink as any.
func (r *Runner) deliverHeld(g *generation, cluster, id int, h *heldShard, evs []shard.Event) {
	if len(evs) > 0 {
		pending := make([]int, 0, len(evs))
		for i, ev := range evs {
			if r.cfg.Events == nil || r.cfg.Events[ev.Type] {
				pending = append(pending, i)
			}
		}
		errs := make([]error, len(evs))
		r.deliver(g, cluster, evs, pending, errs)
		if i := slices.IndexFunc(errs, func(err error) bool { return err != nil }); i >= 0 {
			// Given up (the shard is stopping): its position stays before the first
			// event not delivered, so its next owner has Discord replay it.
			h.mu.Lock()
			if h.lostFrom == 0 {
				h.lostFrom = evs[i].Seq
			}
			h.mu.Unlock()
			return
		}
	}
	h.mu.Lock()
	done := h.released && h.lostFrom == 0 && h.hb.Done()
	h.mu.Unlock()
	if done {
		r.mu.Lock()
		ended := g.hold[id] == h
		if ended {
			delete(g.hold, id)
		}
		r.mu.Unlock()
		if ended {
			st := h.hb.Stats()
			r.heldReleased(g.gen, st.Released, st.Dropped, st.LongestHeld)
		}
	}
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

func (h *sinkHealth) status() api.Sink {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := api.Sink{Failing: h.failing.Load(), Failures: h.failures}
	if st.Failing {
		st.Since, st.Error = h.since, h.lastErr
	}
	return st
}

func (r *Runner) observe(g *generation, l shard.Lifecycle) {
	switch l.Kind {
	case shard.LifecycleReady, shard.LifecycleResumed:
		r.mu.Lock()
		started, ok := g.started[l.ShardID]
		delete(g.started, l.ShardID)
		h := g.hold[l.ShardID]
		r.mu.Unlock()
		if h != nil && l.Kind == shard.LifecycleResumed {
			// A resumed session had its READY before: its guilds are known.
			h.mu.Lock()
			h.ready, h.readyAt = true, r.now()
			h.mu.Unlock()
		}
		if ok {
			took := r.now().Sub(started).Round(time.Millisecond)
			r.log.Info("shard "+l.Kind.String(), "shard", l.ShardID, "took", took)
			if l.Kind == shard.LifecycleResumed {
				r.noteResumed(l.ShardID, took)
			}
		}
	case shard.LifecycleInvalidated, shard.LifecycleFailed:
		r.log.Warn("shard "+l.Kind.String(), "shard", l.ShardID, "reason", l.Reason)
		if l.Kind == shard.LifecycleFailed {
			r.fatalClose(g, l)
		}
	}
}

type resumedShard struct {
	id   int
	took time.Duration
}

// resumeBatch gathers the resumes of this long into one event: a failover resumes
// hundreds of shards at once, and one event each would push everything else out of
// the recent events.
const resumeBatch = 250 * time.Millisecond

func (r *Runner) noteResumed(id int, took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resumed = append(r.resumed, resumedShard{id, took})
	if len(r.resumed) > 1 {
		return
	}
	time.AfterFunc(resumeBatch, func() {
		r.mu.Lock()
		batch := r.resumed
		r.resumed = nil
		r.mu.Unlock()
		ids := make(event.Shards, len(batch))
		tooks := make([]time.Duration, len(batch))
		for i, b := range batch {
			ids[i], tooks[i] = b.id, b.took
		}
		slices.Sort(tooks)
		r.deps.Notify.Notify(event.Event{Kind: event.Resumed, Shards: ids, Duration: tooks[len(tooks)/2], Max: tooks[len(tooks)-1]})
	})
}
