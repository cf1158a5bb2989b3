package cutover

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/discluster/discluster/shard"
	"pgregory.net/rapid"
)

// A reshard simulated end to end in virtual milliseconds: Discord emits each guild's
// events once; every shard of both generations receives its guilds' events with its
// own delay (in order per shard); the old shards deliver with their own lag; the
// switch applies on each shard at its own moment; each node's clock has its own
// offset. What the test checks is what a worker sees: per guild, the old
// generation's deliveries followed by the new one's, against what Discord emitted.
const simW = 1000 // ms

type simEvent struct {
	id    string
	guild uint64
	typ   string
	t     int // emitted
}

type simParams struct {
	oldTotal, newTotal int
	// Bounds of the delays: Discord to the old shard, the old shard's sink lag,
	// Discord to the new shard, the spread of the switch's apply.
	oldDelay, lag, newDelay, spread int
	// deadOld are old shards whose owner dies before giving its cut.
	deadOld map[int]bool
}

type simResult struct {
	emitted   map[uint64][]string // per guild, in Discord's order
	delivered map[uint64][]string // per guild: the old generation's, then the new one's
	startLeak []string            // session start events that reached the sink
}

// drawStream draws the guilds and Discord's events.
func drawStream(t *rapid.T) []simEvent {
	guilds := []uint64{}
	for range rapid.IntRange(1, 8).Draw(t, "guilds") {
		guilds = append(guilds, uint64(rapid.IntRange(1, 1<<20).Draw(t, "guild"))<<22|uint64(rapid.IntRange(0, 1<<22-1).Draw(t, "low")))
	}
	if rapid.Bool().Draw(t, "dms") {
		guilds = append(guilds, 0)
	}
	var evs []simEvent
	at := 0
	for i := range rapid.IntRange(1, 200).Draw(t, "events") {
		at += rapid.IntRange(0, 60).Draw(t, "gap")
		typ := "MESSAGE_CREATE"
		if rapid.IntRange(0, 9).Draw(t, "type") == 0 {
			typ = "GUILD_CREATE" // a guild joined: a guild event like any other
		}
		evs = append(evs, simEvent{id: fmt.Sprintf("e%d", i), guild: rapid.SampledFrom(guilds).Draw(t, "of"), typ: typ, t: at})
	}
	return evs
}

func (e simEvent) dispatch(seq int64) shard.Event {
	d := fmt.Sprintf(`{"id":%q,"content":"x"}`, e.id)
	if e.guild != 0 {
		d = fmt.Sprintf(`{"id":%q,"guild_id":"%d","content":"x"}`, e.id, e.guild)
	}
	return shard.Event{SessionID: "s", Seq: seq, Type: e.typ, Data: json.RawMessage(d)}
}

func simulate(t *rapid.T, evs []simEvent, p simParams) simResult {
	cfg := Config{Window: simW * time.Millisecond, MaxEvents: 1 << 20, MaxBytes: 1 << 30}
	clock := func(off, at int) time.Time { return t0.Add(time.Duration(off+at) * time.Millisecond) }
	last := evs[len(evs)-1].t
	switchAt := rapid.IntRange(simW+1, max(simW+1, last+simW/2)).Draw(t, "switch")

	res := simResult{emitted: map[uint64][]string{}, delivered: map[uint64][]string{}}
	for _, e := range evs {
		res.emitted[e.guild] = append(res.emitted[e.guild], e.id)
	}

	// The old generation: each shard receives, delivers in order, and stops at its
	// own moment of the switch. A shard may move to another node on the way (a
	// handoff): from there that node's Tracker records it, and both answer the cut.
	// It moves between two deliveries further apart than the switch's spread: a
	// handoff's resume takes longer than one Raft apply's spread over the nodes.
	type oldTracker struct {
		*Tracker
		shard int
	}
	var trackers []oldTracker
	latestStop := 0
	for k := range p.oldTotal {
		node := func() (*Tracker, int, int) {
			tr, err := NewTracker(cfg)
			if err != nil {
				t.Fatal(err)
			}
			trackers = append(trackers, oldTracker{tr, k})
			stop := switchAt + rapid.IntRange(0, p.spread).Draw(t, "oldSwitch")
			latestStop = max(latestStop, stop)
			return tr, rapid.IntRange(-100_000, 100_000).Draw(t, "oldClock"), stop
		}
		tr, off, stop := node()
		movesAt := rapid.IntRange(-1, len(evs)).Draw(t, "moveAt") // an event index, or none
		deliveredAt := 0
		for i, e := range evs {
			if ShardOf(e.guild, p.oldTotal) != k {
				continue
			}
			previous := deliveredAt
			deliveredAt = max(deliveredAt, e.t+rapid.IntRange(0, p.oldDelay).Draw(t, "oldDelay")+rapid.IntRange(0, p.lag).Draw(t, "lag"))
			if i >= movesAt && movesAt >= 0 && deliveredAt-previous > p.spread {
				tr.Stop(clock(off, stop)) // the previous node stops it at its switch
				tr, off, stop = node()
				movesAt = -1
			}
			if deliveredAt >= stop {
				break // delivery is in order: nothing after this one either
			}
			ev := e.dispatch(0)
			tr.Delivered(KeyOf(ev.Type, ev.Data), clock(off, deliveredAt))
			res.delivered[e.guild] = append(res.delivered[e.guild], e.id)
		}
		tr.Stop(clock(off, stop))
	}

	// The new generation: each shard's session starts (READY and a GUILD_CREATE
	// burst) before the switch, early enough that the old generation delivers what
	// was sent before it (the leader switches once every new shard is READY, and
	// the old generation's lag is within σ), holds back, switches, and releases once
	// every old shard has stopped and the cut has travelled.
	for s := range p.newTotal {
		h, err := NewHoldback(cfg)
		if err != nil {
			t.Fatal(err)
		}
		off := rapid.IntRange(-100_000, 100_000).Draw(t, "newClock")
		// Early (the rule's easy case: W before the switch) or late (just before it,
		// so that some guilds' cut events came before the session).
		latest := switchAt - p.oldDelay - p.lag - 1
		start := rapid.IntRange(0, switchAt-simW-1).Draw(t, "newStartEarly")
		if rapid.Bool().Draw(t, "late") {
			start = latest - rapid.IntRange(0, latest).Draw(t, "newStartLate")
		}
		sw := switchAt + rapid.IntRange(0, p.spread).Draw(t, "newSwitch")
		release := max(sw, latestStop) + rapid.IntRange(0, 2*simW).Draw(t, "cutTravel")
		var cut []CutEntry
		for _, tr := range trackers {
			if p.deadOld[tr.shard] {
				continue
			}
			c, err := tr.Cut(Wanted(tr.shard, s, p.newTotal))
			if err != nil {
				t.Fatal(err)
			}
			cut = append(cut, c...)
		}

		seq := int64(0)
		deliver := func(ev shard.Event) {
			var d struct{ ID string }
			_ = json.Unmarshal(ev.Data, &d)
			if strings.HasPrefix(d.ID, "start") || ev.Type == "READY" {
				res.startLeak = append(res.startLeak, ev.Type+" "+d.ID)
				return
			}
			g := KeyOf(ev.Type, ev.Data).Guild
			res.delivered[g] = append(res.delivered[g], d.ID)
		}
		take := func(ev shard.Event, at int) {
			seq++
			ev.Seq = seq
			out, err := h.Add(ev, KeyOf(ev.Type, ev.Data), clock(off, at))
			if err != nil {
				t.Fatalf("new shard %d: add: %v", s, err)
			}
			for _, ev := range out {
				deliver(ev)
			}
		}
		take(shard.Event{SessionID: "s", Type: "READY", Data: json.RawMessage(`{"session_id":"s"}`)}, start)
		for g := range res.emitted {
			if ShardOf(g, p.newTotal) == s && g != 0 {
				take(shard.Event{SessionID: "s", Type: "GUILD_CREATE", Data: json.RawMessage(fmt.Sprintf(`{"id":"start-%d","guild_id":"%d"}`, g, g))}, start)
			}
		}
		h.GuildsArrived()

		// Holding, then switched, then released: from there events pass through Add
		// (which holds a guild still waiting for its cut event) until Done, and a
		// timer calls Due every tick.
		phase, tick := 0, rapid.IntRange(1, simW).Draw(t, "tick")
		nextTick, lastReceived := 0, start
		for _, e := range slices.Concat(evs, []simEvent{{t: 1 << 30}}) {
			if e.id != "" && (ShardOf(e.guild, p.newTotal) != s || e.t < start) {
				continue
			}
			receivedAt := 1 << 30
			if e.id != "" {
				receivedAt = max(lastReceived, e.t+rapid.IntRange(0, p.newDelay).Draw(t, "newDelay"))
				lastReceived = receivedAt
			}
			if phase == 0 && receivedAt >= sw {
				h.Switch(clock(off, sw))
				phase = 1
			}
			if phase == 1 && receivedAt >= release {
				r, err := h.Release(cut, clock(off, release))
				if err != nil {
					t.Fatal(err)
				}
				for _, ev := range r.Events {
					deliver(ev)
				}
				phase, nextTick = 2, release+tick
			}
			for phase == 2 && !h.Done() && nextTick <= receivedAt {
				for _, ev := range h.Due(clock(off, nextTick)) {
					deliver(ev)
				}
				nextTick += tick
			}
			switch {
			case e.id == "":
			case phase == 2 && h.Done():
				deliver(e.dispatch(0))
			default:
				take(e.dispatch(0), receivedAt)
			}
		}
		if !h.Done() {
			t.Fatalf("new shard %d: not done after every event and the deadline", s)
		}
	}
	return res
}

// drawParams splits the skew budget: with oldDelay + lag + spread < W/2 and newDelay
// + spread < W/2, every event is seen by the two generations within W/2 of each
// other, counted from each one's switch (σ < W/2).
func drawParams(t *rapid.T) simParams {
	p := simParams{
		oldTotal: rapid.IntRange(1, 4).Draw(t, "oldTotal"),
		newTotal: rapid.IntRange(1, 6).Draw(t, "newTotal"),
	}
	budget := simW/2 - 1
	// rapid draws small values most often: draw what is left over, so that most cases
	// use most of the budget.
	p.spread = rapid.IntRange(0, budget/2).Draw(t, "spread")
	p.lag = budget - p.spread - rapid.IntRange(0, budget-p.spread).Draw(t, "lagSlack")
	p.oldDelay = budget - p.spread - p.lag - rapid.IntRange(0, budget-p.spread-p.lag).Draw(t, "oldDelaySlack")
	p.newDelay = budget - p.spread - rapid.IntRange(0, budget-p.spread).Draw(t, "newDelaySlack")
	return p
}

// TestExactlyOnceProperty: with σ < W, a worker sees every event exactly once, and
// each guild's events in Discord's order; no session start event reaches it.
func TestExactlyOnceProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		evs := drawStream(t)
		p := drawParams(t)
		res := simulate(t, evs, p)
		if len(res.startLeak) > 0 {
			t.Fatalf("session start events delivered: %v", res.startLeak)
		}
		for g, want := range res.emitted {
			if got := res.delivered[g]; !slices.Equal(got, want) {
				t.Fatalf("guild %d (old shard %d, new shard %d): delivered %v, Discord sent %v (params %+v)",
					g, ShardOf(g, p.oldTotal), ShardOf(g, p.newTotal), got, want, p)
			}
		}
	})
}

// TestNeverLosesProperty: past the limits that only repeat (a new generation lagging
// by more than W, old owners that die before giving their cut), every event is still
// delivered, and each guild's deliveries end with Discord's last events in order.
func TestNeverLosesProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		evs := drawStream(t)
		p := drawParams(t)
		p.newDelay = rapid.IntRange(0, 3*simW).Draw(t, "newDelayPastW")
		p.deadOld = map[int]bool{}
		for k := range p.oldTotal {
			p.deadOld[k] = rapid.IntRange(0, 3).Draw(t, "dead") == 0
		}
		res := simulate(t, evs, p)
		if len(res.startLeak) > 0 {
			t.Fatalf("session start events delivered: %v", res.startLeak)
		}
		for g, want := range res.emitted {
			got := res.delivered[g]
			for _, id := range want {
				if !slices.Contains(got, id) {
					t.Fatalf("guild %d: %s lost: delivered %v, Discord sent %v (params %+v)", g, id, got, want, p)
				}
			}
			// Repeats only ever go back: the guild's stream is some prefixes of
			// Discord's order, each one restarting earlier, ending with all of it.
			last := want[len(want)-1]
			if got[len(got)-1] != last {
				t.Fatalf("guild %d: the last delivered is %s, not Discord's last %s: %v", g, got[len(got)-1], last, got)
			}
		}
	})
}
