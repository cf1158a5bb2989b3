package runner

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/node/cutover"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/shard"
)

// A generation is this node's shards of one shard count: its own clusters (a shard
// id is in both generations during a reshard) and its own tables of what runs,
// what was released and checkpointed.
//
// During a reshard the current generation delivers and remembers, per guild, the
// last event it delivered (its tracker); the new one runs beside it, identifies,
// and holds its events back. At the switch the old one stops delivering and its
// tracker's cut becomes final; the new one fetches the cuts of its shards from
// every node, delivers what it held past them, and delivers from then on. The old
// one's sessions are then ended with 1000. The rule and its limits are cutover's.
type generation struct {
	gen   uint64
	total int

	// The run goroutine's, but clusters, which it writes under the runner's mu.
	clusters   map[int]*shard.Cluster
	running    map[int]uint64         // shard → the epoch it runs under
	suspended  map[int]suspendedShard // stopped here while still assigned here
	releases   map[int]fsm.Release    // waiting to be written
	released   map[int]uint64         // written, by shard, at the epoch: until this replica applies it
	checkpoint map[int]fsm.ResumeData // last written, by shard

	// Under the runner's mu.
	stopping  map[int]bool // being stopped here: a failing sink may give up on them
	abandoned map[int]bool // stopping, and an event was not delivered: deliver no more
	clusterOf map[int]int
	epochOf   map[int]uint64
	started   map[int]time.Time // when a shard was started here, for the resume event
	// holding: a reshard's generation before its switch; hold has an entry for each
	// of its shards started here until it released what it held.
	holding bool
	hold    map[int]*heldShard
	// tracking is set while a successor starts: each shard's tracker (under trackMu)
	// remembers what it delivered, for the cut at the switch.
	tracking atomic.Bool
	trackMu  sync.Mutex
	trackers map[int]*cutover.Tracker

	// anyAbandoned counts abandoned's entries, so that the delivery of each event
	// looks at the map only while a shard is being given up on.
	anyAbandoned atomic.Int32
	// ending is set once the state no longer runs this generation: it delivers no
	// more. deliveries is held (read) around each delivery, so that the end can wait
	// for the one under way before it takes the cut.
	ending     atomic.Bool
	deliveries sync.RWMutex
}

type suspendedShard struct {
	epoch uint64
	state shard.ResumeState
}

func newGeneration(gen uint64, total int) *generation {
	return &generation{
		gen: gen, total: total,
		clusters: make(map[int]*shard.Cluster), running: make(map[int]uint64),
		suspended: make(map[int]suspendedShard), releases: make(map[int]fsm.Release), released: make(map[int]uint64),
		checkpoint: make(map[int]fsm.ResumeData),
		stopping:   make(map[int]bool), abandoned: make(map[int]bool),
		clusterOf: make(map[int]int), epochOf: make(map[int]uint64), started: make(map[int]time.Time),
		hold: make(map[int]*heldShard), trackers: make(map[int]*cutover.Tracker),
	}
}

// cutoverConfig is the cut's window and a held shard's bounds (see cutover): the
// new generation holds 30 s back before the switch; a shard past the bounds stops
// reading (the handler waits), as with a slow sink.
var cutoverConfig = cutover.DefaultConfig()

// warmTimeout is how long after READY a new generation's shard waits for guilds
// Discord announced but has not sent (an outage) before it counts as warm anyway.
const warmTimeout = time.Minute

// heldShard is a new generation's shard holding its events back.
type heldShard struct {
	mu sync.Mutex // held by whoever adds to or releases hb
	hb *cutover.Holdback
	// ready: READY or RESUMED seen; expect: the guilds READY announced that have not
	// arrived yet (their GUILD_CREATE is the session's start, not a guild's event).
	ready   bool
	readyAt time.Time
	expect  map[uint64]bool
	// cut is the switch's cut for this shard, once fetched (non-nil, maybe empty);
	// released once hb was delivered.
	cut      []cutover.CutEntry
	released bool
	// lostFrom is the first released event the sink did not take (the shard was
	// stopping): its position may not pass it. 0: none.
	lostFrom int64
}

func newHeldShard() *heldShard {
	hb, err := cutover.NewHoldback(cutoverConfig)
	if err != nil {
		panic(err) // cutoverConfig is a constant
	}
	return &heldShard{hb: hb, expect: map[uint64]bool{}}
}

// warm reports a new generation's shard READY with all its guilds: the switch may
// make it deliver. Under the runner's mu.
func (g *generation) warm(id int, now time.Time) bool {
	h := g.hold[id]
	if h == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ready && len(h.expect) > 0 && now.Sub(h.readyAt) > warmTimeout {
		clear(h.expect) // the rest are in an outage: their GUILD_CREATE is a guild event
		h.hb.GuildsArrived()
	}
	return h.ready && len(h.expect) == 0
}

// trail is a shard's position to hand on: for a shard holding events back, the one
// before the oldest it holds, so whoever runs it next receives them again. Under
// the runner's mu.
func (g *generation) trail(id int, pos shard.ResumeState) shard.ResumeState {
	h := g.hold[id]
	if h == nil || !pos.Resumable() {
		return pos
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.released || !h.hb.Done() {
		pos.Seq = min(pos.Seq, h.hb.Trailing())
	}
	if h.lostFrom > 0 {
		pos.Seq = min(pos.Seq, h.lostFrom-1)
	}
	return pos
}

// setRole applies what the state makes of a generation: a reshard's generation
// holds back until its switch, when it starts releasing; the current one tracks
// what it delivers while a successor starts.
func (r *Runner) setRole(g *generation, role generationRole) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case role.next && !g.holding && len(g.running) == 0:
		g.holding = true
	case !role.next && g.holding:
		g.holding = false
		now := r.now()
		for _, h := range g.hold {
			h.hb.Switch(now)
		}
		r.log.Info("reshard switched: fetching the cuts of the old generation", "generation", g.gen, "held_shards", len(g.hold))
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.release(g)
		}()
	}
	switch {
	case role.succeeded:
		g.tracking.Store(true)
	case !g.ending.Load() && g.tracking.Load():
		// A cancelled reshard: nothing to track.
		g.tracking.Store(false)
		g.trackMu.Lock()
		clear(g.trackers)
		g.trackMu.Unlock()
	}
}

// endGeneration ends a generation the state no longer runs: after a switch (old),
// its deliveries stop, its cut becomes final for the new generation's owners to
// fetch, and its sessions end with 1000; after a cancel, its sessions end.
func (r *Runner) endGeneration(g *generation, old bool) {
	g.ending.Store(true)
	g.deliveries.Lock() // the delivery under way, if any, has finished
	if old && g.tracking.Load() {
		now := r.now()
		g.trackMu.Lock()
		trackers := maps.Clone(g.trackers)
		g.trackMu.Unlock()
		for _, t := range trackers {
			t.Stop(now)
		}
		r.mu.Lock()
		r.cuts[g.gen] = &endedCut{trackers: trackers, at: now}
		r.mu.Unlock()
	}
	g.deliveries.Unlock()
	ids := make([]int, 0, len(g.running))
	for id := range g.running {
		ids = append(ids, id)
	}
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.mu.Lock()
			c := g.clusters[g.clusterOf[id]]
			r.mu.Unlock()
			ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
			defer cancel()
			if err := c.End(ctx, id); err != nil {
				r.log.Warn("ending shard", "shard", id, "generation", g.gen, "err", err)
			}
		}()
	}
	wg.Wait()
	for _, c := range g.clusters {
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		c.Close(ctx)
		cancel()
	}
	r.mu.Lock()
	delete(r.gens, g.gen)
	r.mu.Unlock()
	why := "the reshard was cancelled"
	if old {
		why = "the new generation took over"
	}
	r.log.Info("generation ended: its sessions closed with 1000", "generation", g.gen, "shards", len(ids), "why", why)
	if len(ids) > 0 {
		r.deps.Notify.Notify(event.Event{Kind: event.SessionsEnded, Shards: event.Shards(ids), Cause: "generation " + strconv.FormatUint(g.gen, 10) + " ended: " + why})
	}
}

// holdEvent passes an event of a new generation's shard through its Holdback: the
// session's start (READY, the GUILD_CREATEs of the guilds READY announced) is noted,
// and dropped there; guild events are held until the release, and after it come back
// when they are to be delivered. full reports the hold full: the caller waits and
// offers the event again.
func (r *Runner) holdEvent(h *heldShard, ev shard.Event, now time.Time) (out []shard.Event, full bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := cutover.KeyOf(ev.Type, ev.Data)
	switch ev.Type {
	case "READY":
		h.ready, h.readyAt = true, now
		clear(h.expect)
		for _, id := range readyGuilds(ev.Data) {
			h.expect[id] = true
		}
	case "GUILD_CREATE":
		if len(h.expect) > 0 {
			delete(h.expect, guildCreated(ev.Data))
		}
	}
	out, err := h.hb.Add(ev, k, now)
	if h.ready && len(h.expect) == 0 {
		h.hb.GuildsArrived()
	}
	switch {
	case errors.Is(err, cutover.ErrFull):
		h.hb.Prune(now)
		return out, true
	case err != nil:
		r.log.Error("reshard: holding an event", "shard", ev.ShardID, "seq", ev.Seq, "err", err)
	}
	return out, false
}

// guildCreated is the id of the guild a GUILD_CREATE brings (d.id: d is the guild).
func guildCreated(d json.RawMessage) uint64 {
	var g struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(d, &g) != nil {
		return 0
	}
	id, _ := strconv.ParseUint(g.ID, 10, 64)
	return id
}

// readyGuilds are the ids of the guilds a READY announces (d.guilds[].id).
func readyGuilds(d json.RawMessage) []uint64 {
	var ready struct {
		Guilds []struct {
			ID string `json:"id"`
		} `json:"guilds"`
	}
	if json.Unmarshal(d, &ready) != nil {
		return nil
	}
	out := make([]uint64, 0, len(ready.Guilds))
	for _, g := range ready.Guilds {
		if id, err := strconv.ParseUint(g.ID, 10, 64); err == nil {
			out = append(out, id)
		}
	}
	return out
}
