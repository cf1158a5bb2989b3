package cutover

import (
	"cmp"
	"errors"
	"slices"
	"sync"
	"time"
)

// ErrNotStopped is a cut asked of a Tracker whose generation has not stopped
// delivering yet: its last deliveries are not known.
var ErrNotStopped = errors.New("cutover: the old generation has not stopped delivering: its cut is not final")

// Tracker remembers, for one shard of the old generation, the Key of the last event
// it delivered per guild, and every event it delivered in the last Window/2, while a
// reshard is under way. It is safe for concurrent use: Delivered comes from the
// delivery path, Stop from the switch, Cut from the new owners' requests.
type Tracker struct {
	remember time.Duration // 2 × Config.Window: see the package comment
	young    time.Duration // Config.Window / 2
	maxCount int           // Config.MaxEvents: the bound of recent

	mu        sync.Mutex
	last      map[uint64]delivered
	recent    []delivered // the deliveries of the last young, in order; recent[head:] are kept
	head      int
	count     uint64    // deliveries recorded: each one's n
	swept     time.Time // when entries past remember were last deleted
	stopped   bool
	stoppedAt time.Time
	late      int
}

type delivered struct {
	guild uint64
	hash  uint64
	at    time.Time
	n     uint64 // which delivery: tells a guild's last apart from an identical earlier one
}

// NewTracker returns a Tracker for one old shard. Start it before the new
// generation's sessions start, so that no event they hold was delivered untracked.
func NewTracker(cfg Config) (*Tracker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Tracker{remember: 2 * cfg.Window, young: cfg.Window / 2, maxCount: cfg.MaxEvents, last: make(map[uint64]delivered)}, nil
}

// Delivered records that the sink accepted the event with Key k at time at (this
// node's clock). Call it for every dispatch delivered, in delivery order, except
// session events (SessionEvent): they never reach the other generation.
//
// A call after Stop is a delivery after the switch, which the new generation will
// deliver again: it is recorded, so that a cut asked for later still names it, and
// counted in Stats.Late.
func (t *Tracker) Delivered(k Key, at time.Time) {
	t.mu.Lock()
	t.count++
	d := delivered{guild: k.Guild, hash: k.Hash, at: at, n: t.count}
	t.last[k.Guild] = d
	t.recent = append(t.recent, d)
	// Keep the last Window/2 of deliveries, at most MaxEvents of them: a busier shard
	// forgets its oldest, which can only make a new shard deliver them again (see
	// Earlier), never lose one.
	for t.head < len(t.recent) && (at.Sub(t.recent[t.head].at) >= t.young || len(t.recent)-t.head > t.maxCount) {
		t.recent[t.head] = delivered{}
		t.head++
	}
	if t.head > 1024 && t.head > len(t.recent)/2 {
		n := copy(t.recent, t.recent[t.head:])
		clear(t.recent[n:])
		t.recent, t.head = t.recent[:n], 0
	}
	if t.stopped {
		t.late++
	}
	// Forget the guilds quiet for longer than remember, once per half of it: the
	// map's size stays within the guilds active in 1.5 × remember, for O(1) per
	// delivery amortised.
	if at.Sub(t.swept) >= t.remember/2 {
		for g, e := range t.last {
			if at.Sub(e.at) >= t.remember {
				delete(t.last, g)
			}
		}
		t.swept = at
	}
	t.mu.Unlock()
}

// Stop marks the moment the switch applied on this node and this shard stopped
// delivering: the cut is final from here, and its window is measured back from at,
// however late the new generation asks for it. The caller stops only once the batch
// it had in flight at the sink was accepted (and recorded) or refused. Stopping
// again changes nothing.
func (t *Tracker) Stop(at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		t.stopped, t.stoppedAt = true, at
	}
}

// CutEntry is one event of a cut: the Key of an event the old shard delivered, and
// how long before its Stop it did (a duration, so no clock needs to agree with
// another node's). Each guild has one entry for its last delivery, and one marked
// Earlier for each delivery before it within Window/2 of the Stop: those let a new
// shard that never received the last one tell what the old generation delivered
// from what it did not (see the package comment).
type CutEntry struct {
	Key
	Age     time.Duration
	Earlier bool
}

// Cut returns, sorted by guild, then from the oldest delivery to the last, the
// entries of every guild for which want is true: its last delivery, if within 2 ×
// Window before Stop, and the earlier ones within Window/2. Ask with
// Wanted(oldShard, newShard, newTotal) for one new shard's part.
func (t *Tracker) Cut(want func(guild uint64) bool) ([]CutEntry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		return nil, ErrNotStopped
	}
	var cut []CutEntry
	for g, e := range t.last {
		if age := t.stoppedAt.Sub(e.at); age < t.remember && want(g) {
			cut = append(cut, CutEntry{Key: Key{Guild: g, Hash: e.hash}, Age: max(age, 0)})
		}
	}
	for _, e := range t.recent[t.head:] {
		if age := t.stoppedAt.Sub(e.at); age < t.young && t.last[e.guild].n != e.n && want(e.guild) {
			cut = append(cut, CutEntry{Key: Key{Guild: e.guild, Hash: e.hash}, Age: max(age, 0), Earlier: true})
		}
	}
	// By guild, then oldest first; a guild's last delivery is its youngest entry.
	slices.SortStableFunc(cut, func(a, b CutEntry) int {
		return cmp.Or(cmp.Compare(a.Guild, b.Guild), cmp.Compare(b.Age, a.Age), cmp.Compare(boolInt(b.Earlier), boolInt(a.Earlier)))
	})
	return cut, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TrackerStats is what a Tracker holds.
type TrackerStats struct {
	Guilds  int // guilds remembered (some may be past the window until the next sweep)
	Recent  int // deliveries of the last Window/2 remembered
	Stopped bool
	Late    int // deliveries recorded after Stop: the new generation repeats them
}

func (t *Tracker) Stats() TrackerStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return TrackerStats{Guilds: len(t.last), Recent: len(t.recent) - t.head, Stopped: t.stopped, Late: t.late}
}

// Wanted is the filter of old shard oldShard's cut for new shard newShard of a
// generation of newTotal: the guilds the new shard receives. Guild 0 is kept only
// from old shard 0: on the other shards the events without a guild are the
// session's own (READY, RESUMED, and whatever Discord sends every shard), which the
// new shard 0's stream of DMs does not contain, so their key would match nothing
// there and make shard 0 deliver its held DMs again.
func Wanted(oldShard, newShard, newTotal int) func(guild uint64) bool {
	return func(g uint64) bool {
		if g == 0 {
			return oldShard == 0 && newShard == 0
		}
		return ShardOf(g, newTotal) == newShard
	}
}

// SessionEvent reports whether a dispatch type belongs to one session, not to a
// guild's stream: the Tracker never records it, and the Holdback never holds a
// READY.
func SessionEvent(t string) bool { return t == "READY" || t == "RESUMED" }
