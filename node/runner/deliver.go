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
func (r *Runner) deliverBatch(cluster int, evs []shard.Event, errs []error) {
	s := r.cfg.Sink
	if s == nil {
		return
	}
	pending := make([]int, 0, len(evs)) // indexes into evs, not delivered yet
	for i, ev := range evs {
		if r.cfg.Events == nil || r.cfg.Events[ev.Type] {
			pending = append(pending, i)
		}
	}
	batch := make([]sink.Delivery, 0, len(evs))
	bo := backoff.Backoff{Min: 50 * time.Millisecond, Max: 2 * time.Second}
	for {
		if r.ctx.Err() != nil {
			for _, i := range pending {
				errs[i] = errGivenUp
			}
			return
		}
		if r.anyAbandoned.Load() > 0 {
			pending = slices.DeleteFunc(pending, func(i int) bool {
				if r.isAbandoned(evs[i].ShardID) {
					errs[i] = errGivenUp
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
		ctx, cancel := context.WithTimeout(r.ctx, sinkAttempt)
		err := s.Deliver(ctx, batch)
		cancel()
		r.sinkHealth.record(err, r.now())
		n := sink.Accepted(err, len(batch))
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
			if id := evs[i].ShardID; r.stopping[id] && !r.abandoned[id] {
				// Nothing more of this shard is delivered from here: its position
				// stays at the last accepted event, where the next owner resumes, and
				// events after it would only reach the sink twice.
				r.abandoned[id] = true
				r.anyAbandoned.Add(1)
			}
		}
		r.mu.Unlock()
		if !backoff.Sleep(r.ctx, wait) {
			for _, i := range pending {
				errs[i] = errGivenUp
			}
			return
		}
	}
}

func (r *Runner) isAbandoned(id int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.abandoned[id]
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

func (r *Runner) observe(l shard.Lifecycle) {
	switch l.Kind {
	case shard.LifecycleReady, shard.LifecycleResumed:
		r.mu.Lock()
		started, ok := r.started[l.ShardID]
		delete(r.started, l.ShardID)
		r.mu.Unlock()
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
			r.fatalClose(l)
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
