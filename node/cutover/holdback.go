package cutover

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/discluster/discluster/shard"
)

var (
	// ErrFull is an event the Holdback could not take: it holds MaxEvents events or
	// MaxBytes of payload. Nothing was dropped: the caller holds the event back from
	// its read loop (back-pressure), calls Prune (before the switch) or Due (after
	// the release) as time passes, and adds it again.
	ErrFull = errors.New("cutover: hold-back full")
	// ErrReleased is a second Release.
	ErrReleased = errors.New("cutover: already released")
	// ErrNotSwitched is a Release before Switch: the cut of an old generation still
	// delivering is not final.
	ErrNotSwitched = errors.New("cutover: released before the switch")
)

// Config is the rule's bounds.
type Config struct {
	// Window is W. The new generation keeps what it received in the last W before the
	// switch; the old one remembers a guild for 2W after its last delivery. Exactly
	// once needs the two generations to see every event within W/2 of each other,
	// counted from each one's switch (see the package comment).
	Window time.Duration
	// MaxEvents and MaxBytes (of payload, d) bound one Holdback's memory; past them
	// Add refuses with ErrFull.
	MaxEvents int
	MaxBytes  int
}

// DefaultConfig is 30 s of events, up to 200,000 of them or 256 MiB per shard: a
// busy shard of 2,500 guilds sends a few hundred events a second.
func DefaultConfig() Config {
	return Config{Window: 30 * time.Second, MaxEvents: 200_000, MaxBytes: 256 << 20}
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Window <= 0:
		return fmt.Errorf("cutover: Window %v: must be positive", c.Window)
	case c.MaxEvents <= 0:
		return fmt.Errorf("cutover: MaxEvents %d: must be positive", c.MaxEvents)
	case c.MaxBytes <= 0:
		return fmt.Errorf("cutover: MaxBytes %d: must be positive", c.MaxBytes)
	}
	return nil
}

// Holdback holds one shard of the new generation's events until the old generation's
// cut says which of them it delivered. It is safe for concurrent use: Add from the
// shard's read path, Switch from the switch's apply, Release when the cut arrived,
// Due from a timer, Trailing from the checkpoint loop.
type Holdback struct {
	cfg Config

	mu         sync.Mutex
	q          []held // arrival order; q[head:] are held
	head       int
	bytes      int
	starting   bool // between a READY and GuildsArrived: GUILD_CREATE is session start
	switched   bool
	switchedAt time.Time
	released   bool
	// After the release: the guilds whose cut event has not arrived yet, with its
	// Key, until deadline(); and the old generation's earlier deliveries of the last
	// Window/2, which tell an event it delivered from one it did not.
	waiting map[uint64]Key
	earlier map[Key]struct{}
	session string // the session of the last event taken
	from    int    // index in q of the first held event of session
	lastSeq int64  // of session: the last event taken
	stats   HoldbackStats
}

type held struct {
	ev  shard.Event
	key Key
	at  time.Time
}

// HoldbackStats counts what a Holdback did.
type HoldbackStats struct {
	Held         int // events held now
	Bytes        int // their payload
	Pruned       int // dropped before the switch as older than Window: the old generation delivered them
	SessionStart int // READY, and the GUILD_CREATE burst after it: never delivered
	Dropped      int // dropped by the cut: the old generation delivered them
	Full         int // Adds refused with ErrFull
	GaveUp       int // waiting guilds whose cut event never came: their events delivered at the deadline
	// PreSession counts the waiting guilds whose cut event came before this session
	// started: an event of theirs after the switch that the old generation did not
	// deliver said so, and their held events were delivered with it.
	PreSession int
	// Released counts the held events given back to deliver after the switch (by
	// Release, or by Due for a guild that waited), and LongestHeld is the longest
	// any of them was held: from its arrival to the call that gave it back.
	Released    int
	LongestHeld time.Duration
}

// NewHoldback returns an empty Holdback. The shard's session start (a READY, then a
// GUILD_CREATE for each of its guilds until the caller calls GuildsArrived) is
// recognised as it arrives.
func NewHoldback(cfg Config) (*Holdback, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Holdback{cfg: cfg}, nil
}

// Add takes an event the shard received at time at (this node's clock), with its Key,
// in arrival order, and returns the events to deliver now, in order.
//
// Before the release it holds the event and returns nothing; before the switch it
// first prunes what is older than Window. A READY is the start of a session and is
// not held; nor is a GUILD_CREATE from a READY until GuildsArrived: the workers know
// those guilds from the old generation.
//
// After the release, an event of a guild waiting for its cut event is: that event,
// dropped with the guild's held events (the old generation delivered them all); one
// of the old generation's earlier deliveries, held (this generation is behind);
// or neither, and then the cut event came before this session started: the guild's
// held events and this one are returned, and the guild waits no more. Any other
// event is returned at once. Past the deadline the waiting guilds' events come out
// first.
//
// A nil error means the event is taken: the shard may read on. Its position for a
// checkpoint is at most Trailing, not this event's seq. With an error there is
// nothing to deliver.
func (h *Holdback) Add(ev shard.Event, k Key, at time.Time) ([]shard.Event, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []shard.Event
	switch {
	case h.released:
		out = h.due(at)
	case !h.switched:
		h.prune(at)
	}
	if ev.SessionID != h.session {
		h.session, h.from, h.lastSeq = ev.SessionID, len(h.q), 0
	}
	switch {
	case ev.Type == "READY":
		h.starting = true
		h.stats.SessionStart++
		h.lastSeq = ev.Seq
		return out, nil
	case h.starting && ev.Type == "GUILD_CREATE":
		h.stats.SessionStart++
		h.lastSeq = ev.Seq
		return out, nil
	}
	if h.released {
		want, waiting := h.waiting[k.Guild]
		_, delivered := h.earlier[k]
		switch {
		case !waiting:
			h.lastSeq = ev.Seq
			return append(out, ev), nil
		case k == want: // the guild's cut event: it and all before it were delivered
			h.dropGuild(k.Guild)
			delete(h.waiting, k.Guild)
			h.stats.Dropped++
			h.lastSeq = ev.Seq
			return out, nil
		case !delivered:
			// Not one the old generation delivered in its last Window/2, so past its
			// cut event, which this session never received: held and new are later.
			out = append(out, h.giveGuild(k.Guild, at)...)
			delete(h.waiting, k.Guild)
			h.stats.PreSession++
			h.lastSeq = ev.Seq
			return append(out, ev), nil
		}
		// One the old generation delivered: held until its cut event comes.
	}
	if n := len(h.q) - h.head; n > 0 && (n >= h.cfg.MaxEvents || h.bytes+len(ev.Data) > h.cfg.MaxBytes) {
		h.stats.Full++
		return out, ErrFull
	}
	h.q = append(h.q, held{ev: ev, key: k, at: at})
	h.bytes += len(ev.Data)
	h.lastSeq = ev.Seq
	return out, nil
}

// GuildsArrived ends a session start: the shard has received a GUILD_CREATE for every
// guild its READY named, so a GUILD_CREATE from here on is a guild event (a guild
// joined, or back from an outage) and is held like any other.
func (h *Holdback) GuildsArrived() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.starting = false
}

// Prune drops, before the switch, the events received more than Window before now:
// the old generation delivered them. Add prunes too; a caller refused with ErrFull
// prunes as time passes until the event fits. After the switch nothing is pruned.
func (h *Holdback) Prune(now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.switched {
		h.prune(now)
	}
}

func (h *Holdback) prune(now time.Time) {
	for h.head < len(h.q) && now.Sub(h.q[h.head].at) >= h.cfg.Window {
		h.bytes -= len(h.q[h.head].ev.Data)
		h.q[h.head] = held{} // let the payload go
		h.head++
		h.stats.Pruned++
	}
	// Move the held events down once the pruned front is the larger part, so the
	// slice does not grow without bound: O(1) per event amortised.
	if h.head > 1024 && h.head > len(h.q)/2 {
		n := copy(h.q, h.q[h.head:])
		clear(h.q[n:])
		h.q = h.q[:n]
		h.from -= h.head
		h.head = 0
	}
	h.from = max(h.from, h.head)
}

// Switch is the switch applied on this node at time at: what is older than Window is
// pruned one last time, and from here every event is held until Release, since the
// old generation no longer delivers. Switching again changes nothing.
func (h *Holdback) Switch(at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.switched {
		return
	}
	h.prune(at)
	h.switched, h.switchedAt = true, at
}

// Released is what a Release gives back.
type Released struct {
	// Events are the held events to deliver now, in arrival order.
	Events []shard.Event
	// Dropped are the held events up to and including each guild's cut event: the
	// old generation delivered them.
	Dropped int
	// Matched counts the guilds whose cut event was held. Older counts those whose
	// cut event is not held and older than Window/2: it was received before the
	// switch and pruned (or before the session), so every held event of theirs came
	// after it. PreSession counts those whose cut event is younger and not held, but
	// whose first event held from the switch on is none of the old generation's:
	// the cut event came before this session, so all held are later. Waiting counts
	// the rest: this generation may be behind the old one, and their events stay held
	// until the guild's next event tells (see Add), or until Window/2 after the
	// switch.
	Matched, Older, PreSession, Waiting int
}

// Release applies the cut, the union of the old shards' Cut for this shard, at time
// now (this node's clock). A guild may appear more than once; its earliest match
// counts. A nil cut (the old owners are gone) delivers everything held. From here the
// caller passes the shard's events through Add until Done, and calls Due on a timer
// until then.
func (h *Holdback) Release(cut []CutEntry, now time.Time) (Released, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.released:
		return Released{}, ErrReleased
	case !h.switched:
		return Released{}, ErrNotSwitched
	}
	h.released = true
	h.waiting = make(map[uint64]Key)
	h.earlier = make(map[Key]struct{})
	young := h.cfg.Window / 2
	// Each guild's cut event is the youngest of its entries not marked Earlier: an
	// old shard that moved between nodes during the reshard has a Tracker on each,
	// and each names its own last delivery. Every other entry within Window/2 is an
	// earlier delivery.
	last := make(map[uint64]CutEntry)
	for _, c := range cut {
		if !c.Earlier {
			l, ok := last[c.Guild]
			if !ok {
				last[c.Guild] = c
				continue
			}
			if c.Age < l.Age {
				last[c.Guild], c = c, l
			}
		}
		if c.Age < young {
			h.earlier[c.Key] = struct{}{}
		}
	}
	hold := h.q[h.head:]
	// match[g] is the index in hold of guild g's first event with its cut Key.
	match := make(map[uint64]int)
	for i, e := range hold {
		g := e.key.Guild
		if c, ok := last[g]; ok && c.Key == e.key {
			if _, found := match[g]; !found {
				match[g] = i
			}
		}
	}
	var r Released
	r.Matched = len(match)
	for g, c := range last {
		switch _, matched := match[g]; {
		case matched:
		case c.Age < young && now.Before(h.deadline()):
			h.waiting[g] = c.Key
		default:
			r.Older++
		}
	}
	// A waiting guild's first event held from the switch on tells which way it is:
	// received after the switch, an event the old generation delivered is at most σ
	// < Window/2 older than its Stop, so among the earlier deliveries; one that is
	// not there comes after the cut event, which then came before this session.
	decided := make(map[uint64]bool)
	for _, e := range hold {
		g := e.key.Guild
		if _, ok := h.waiting[g]; !ok || decided[g] || e.at.Before(h.switchedAt) {
			continue
		}
		decided[g] = true
		if _, delivered := h.earlier[e.key]; !delivered {
			delete(h.waiting, g)
			r.PreSession++
		}
	}
	h.stats.PreSession += r.PreSession
	r.Waiting = len(h.waiting)

	r.Events = make([]shard.Event, 0, len(hold))
	var keep []held
	for i, e := range hold {
		if m, ok := match[e.key.Guild]; ok && i <= m {
			r.Dropped++
			continue
		}
		if _, ok := h.waiting[e.key.Guild]; ok {
			keep = append(keep, e)
			continue
		}
		r.Events = append(r.Events, e.ev)
		h.given(e, now)
	}
	h.stats.Dropped += r.Dropped
	h.setHeld(keep)
	return r, nil
}

// Due returns, once the deadline (Window/2 after the switch) has passed at now, the
// events of the guilds still waiting for their cut event, in arrival order: the
// event is not coming (this generation never received it, or is more than Window/2
// behind the old one, past the rule's limits), so every held event is delivered.
func (h *Holdback) Due(now time.Time) []shard.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.released {
		return nil
	}
	return h.due(now)
}

func (h *Holdback) due(now time.Time) []shard.Event {
	if len(h.waiting) == 0 || now.Before(h.deadline()) {
		return nil
	}
	out := make([]shard.Event, 0, len(h.q)-h.head)
	for _, e := range h.q[h.head:] {
		out = append(out, e.ev)
		h.given(e, now)
	}
	h.stats.GaveUp += len(h.waiting)
	clear(h.waiting)
	h.setHeld(nil)
	return out
}

// deadline is when the guilds still waiting for their cut event stop waiting:
// Window/2 after the switch.
func (h *Holdback) deadline() time.Time { return h.switchedAt.Add(h.cfg.Window / 2) }

// given counts a held event given back at now.
func (h *Holdback) given(e held, now time.Time) {
	h.stats.Released++
	h.stats.LongestHeld = max(h.stats.LongestHeld, now.Sub(e.at))
}

// dropGuild drops the held events of guild g: they come before its cut event.
func (h *Holdback) dropGuild(g uint64) {
	h.stats.Dropped += len(h.takeGuild(g))
}

// giveGuild returns the held events of guild g, in order, to deliver at now.
func (h *Holdback) giveGuild(g uint64, now time.Time) []shard.Event {
	evs := h.takeGuild(g)
	out := make([]shard.Event, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.ev)
		h.given(e, now)
	}
	return out
}

// takeGuild takes guild g's events out of those held after the release.
func (h *Holdback) takeGuild(g uint64) []held {
	var keep, taken []held
	for _, e := range h.q[h.head:] {
		if e.key.Guild == g {
			taken = append(taken, e)
			continue
		}
		keep = append(keep, e)
	}
	h.setHeld(keep)
	return taken
}

// setHeld replaces the held events after the release, keeping Trailing right: the
// current session's events are the tail of what is held.
func (h *Holdback) setHeld(keep []held) {
	h.q, h.head, h.bytes = keep, 0, 0
	h.from = len(keep)
	for i := len(keep) - 1; i >= 0 && keep[i].ev.SessionID == h.session; i-- {
		h.from = i
	}
	for _, e := range keep {
		h.bytes += len(e.ev.Data)
	}
}

// Done reports whether the release is over: released, and no guild waiting. From
// here the caller delivers the shard's events itself.
func (h *Holdback) Done() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.released && len(h.waiting) == 0
}

// Trailing is the seq of the shard's current session a checkpoint may name while
// events are held: the one just before the oldest event still held, or, with nothing
// held, the last event taken. A crash then replays the held window from Discord into
// a fresh Holdback. Events held from an earlier session (before a re-identify) cannot
// be replayed and are not counted.
func (h *Holdback) Trailing() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.from < len(h.q) {
		return h.q[h.from].ev.Seq - 1
	}
	return h.lastSeq
}

// Len is the number of events held.
func (h *Holdback) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.q) - h.head
}

// Stats returns what the Holdback counted.
func (h *Holdback) Stats() HoldbackStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.stats
	s.Held, s.Bytes = len(h.q)-h.head, h.bytes
	return s
}
