package cutover

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/discluster/discluster/shard"
)

func mustHoldback(t *testing.T, cfg Config) *Holdback {
	t.Helper()
	h, err := NewHoldback(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func add(t *testing.T, h *Holdback, ev shard.Event, at time.Time) {
	t.Helper()
	if out, err := h.Add(ev, KeyOf(ev.Type, ev.Data), at); err != nil || out != nil {
		t.Fatalf("add %s seq %d: %v, %d to deliver", ev.Type, ev.Seq, err, len(out))
	}
}

func typed(typ string, seq int64, d string) shard.Event {
	return shard.Event{SessionID: "s1", Seq: seq, Type: typ, Data: json.RawMessage(d)}
}

func TestSessionStartIsNotDelivered(t *testing.T) {
	h := mustHoldback(t, testConfig())
	add(t, h, typed("READY", 1, `{"v":10,"session_id":"s1","guilds":[{"id":"4194304","unavailable":true}]}`), ms(0))
	add(t, h, typed("GUILD_CREATE", 2, `{"id":"4194304","name":"a"}`), ms(1))
	add(t, h, testEvent("a1", 3), ms(2)) // a guild's event amid the burst is held
	add(t, h, typed("GUILD_CREATE", 4, `{"id":"8388608","name":"b"}`), ms(3))
	h.GuildsArrived()
	add(t, h, typed("GUILD_CREATE", 5, `{"id":"12582912","name":"c joined"}`), ms(4))
	add(t, h, testEvent("a2", 6), ms(5))
	if got := h.Stats(); got.SessionStart != 3 || got.Held != 3 {
		t.Errorf("stats %+v: want 3 session start events and 3 held", got)
	}
	if got := h.Trailing(); got != 2 {
		t.Errorf("Trailing = %d: want 2, before the oldest held (a1, seq 3)", got)
	}
	h.Switch(ms(10))
	r, err := h.Release(nil, ms(1000))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(r.Events), []string{"a1", "12582912", "a2"}; !slices.Equal(got, want) {
		t.Errorf("released %v, want %v", got, want)
	}
}

// A re-identify during the hold-back: READY starts a new session start, and Trailing
// counts only the new session's events.
func TestReidentifyDuringHoldback(t *testing.T) {
	h := mustHoldback(t, testConfig())
	add(t, h, testEvent("a1", 7), ms(0))
	add(t, h, testEvent("a2", 8), ms(1))
	if got := h.Trailing(); got != 6 {
		t.Errorf("Trailing = %d, want 6", got)
	}
	ready := typed("READY", 1, `{"session_id":"s2"}`)
	ready.SessionID = "s2"
	add(t, h, ready, ms(2))
	if got := h.Trailing(); got != 1 {
		t.Errorf("Trailing after the new session's READY = %d, want 1", got)
	}
	gc := typed("GUILD_CREATE", 2, `{"id":"4194304"}`)
	gc.SessionID = "s2"
	add(t, h, gc, ms(3))
	h.GuildsArrived()
	a3 := testEvent("a3", 3)
	a3.SessionID = "s2"
	add(t, h, a3, ms(4))
	if got := h.Trailing(); got != 2 {
		t.Errorf("Trailing = %d, want 2 (before a3, the new session's oldest held)", got)
	}
	if got := h.Len(); got != 3 {
		t.Errorf("Len = %d, want 3", got)
	}
}

func TestTrailingFollowsPruning(t *testing.T) {
	h := mustHoldback(t, testConfig())
	if got := h.Trailing(); got != 0 {
		t.Errorf("Trailing of an empty Holdback = %d, want 0", got)
	}
	for i := range 5 {
		add(t, h, testEvent(fmt.Sprintf("a%d", i), int64(10+i)), ms(i*30)) // 0, 30, 60, 90, 120 ms
	}
	// At 120 ms the event of 0 ms is pruned (the old generation delivered it).
	if got := h.Trailing(); got != 10 {
		t.Errorf("Trailing = %d, want 10", got)
	}
	h.Prune(ms(200)) // keeps 120 only
	if got, st := h.Trailing(), h.Stats(); got != 13 || st.Held != 1 || st.Pruned != 4 {
		t.Errorf("Trailing = %d, stats %+v: want 13, 1 held, 4 pruned", got, st)
	}
	h.Prune(ms(300))
	if got := h.Trailing(); got != 14 {
		t.Errorf("Trailing with nothing held = %d, want 14, the last taken", got)
	}
	h.Switch(ms(300))
	add(t, h, testEvent("b1", 15), ms(301))
	h.Prune(ms(10_000)) // after the switch: nothing
	if got := h.Trailing(); got != 14 || h.Len() != 1 {
		t.Errorf("Trailing = %d, Len = %d after the switch: want 14, 1", got, h.Len())
	}
}

// Pruning a long stream keeps the slice compact: memory follows what is held.
func TestPruneCompacts(t *testing.T) {
	h := mustHoldback(t, Config{Window: 10 * time.Millisecond, MaxEvents: 100_000, MaxBytes: 1 << 30})
	ev := testEvent("a1", 0)
	for i := range 50_000 {
		ev.Seq = int64(i + 1)
		add(t, h, ev, t0.Add(time.Duration(i)*time.Millisecond))
	}
	if h.Len() != 10 {
		t.Errorf("Len = %d, want 10", h.Len())
	}
	if c := cap(h.q); c > 4096 {
		t.Errorf("the queue's capacity is %d for 10 held events", c)
	}
	if got := h.Trailing(); got != 49_990 {
		t.Errorf("Trailing = %d, want 49990", got)
	}
}

func TestHoldbackFull(t *testing.T) {
	h := mustHoldback(t, Config{Window: testWindow, MaxEvents: 3, MaxBytes: 1 << 20})
	for i := range 3 {
		add(t, h, testEvent(fmt.Sprintf("a%d", i), int64(i+1)), ms(i))
	}
	ev := testEvent("a9", 4)
	if _, err := h.Add(ev, KeyOf(ev.Type, ev.Data), ms(5)); !errors.Is(err, ErrFull) {
		t.Fatalf("Add past MaxEvents: %v, want ErrFull", err)
	}
	if got := h.Trailing(); got != 0 {
		t.Errorf("Trailing = %d, want 0: the refused event is not taken", got)
	}
	h.Prune(ms(100)) // the event of 0 ms goes
	add(t, h, ev, ms(100))
	if st := h.Stats(); st.Full != 1 || st.Held != 3 {
		t.Errorf("stats %+v, want 1 refusal and 3 held", st)
	}
	h.Switch(ms(100))
	ev2 := testEvent("a10", 5)
	if _, err := h.Add(ev2, KeyOf(ev2.Type, ev2.Data), ms(1000)); !errors.Is(err, ErrFull) {
		t.Fatalf("Add past MaxEvents after the switch: %v, want ErrFull (nothing is pruned now)", err)
	}
	r, err := h.Release(nil, ms(1000))
	if err != nil {
		t.Fatal(err)
	}
	if got := names(r.Events); !slices.Equal(got, []string{"a1", "a2", "a9"}) {
		t.Errorf("released %v", got)
	}

	hb := mustHoldback(t, Config{Window: testWindow, MaxEvents: 100, MaxBytes: 100})
	big := typed("MESSAGE_CREATE", 1, fmt.Sprintf(`{"guild_id":"4194304","content":%q}`, make([]byte, 200)))
	add(t, hb, big, ms(0)) // alone it is taken, or it would never be
	small := testEvent("a1", 2)
	if _, err := hb.Add(small, KeyOf(small.Type, small.Data), ms(1)); !errors.Is(err, ErrFull) {
		t.Errorf("Add past MaxBytes: %v, want ErrFull", err)
	}
}

func TestHoldbackOrderOfCalls(t *testing.T) {
	h := mustHoldback(t, testConfig())
	add(t, h, testEvent("a1", 1), ms(0))
	if _, err := h.Release(nil, ms(1000)); !errors.Is(err, ErrNotSwitched) {
		t.Errorf("Release before Switch: %v, want ErrNotSwitched", err)
	}
	h.Switch(ms(1))
	h.Switch(ms(500)) // again: no pruning
	if h.Len() != 1 {
		t.Errorf("a second Switch pruned: Len = %d", h.Len())
	}
	if _, err := h.Release(nil, ms(1000)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Release(nil, ms(1000)); !errors.Is(err, ErrReleased) {
		t.Errorf("second Release: %v, want ErrReleased", err)
	}
	ev := testEvent("a2", 2)
	if out, err := h.Add(ev, KeyOf(ev.Type, ev.Data), ms(2)); err != nil || len(out) != 1 || !h.Done() {
		t.Errorf("Add after Release: %v, %d events, Done %v: want the event back at once", err, len(out), h.Done())
	}
}

// A new owner that crashes after the switch, before Release, resumes at Trailing:
// Discord replays the window into a fresh Holdback. With the cut the outcome is the
// same as without the crash; with no cut (the old owner gone too) it delivers the
// window again: duplicates, no loss.
func TestCrashBeforeReleaseReplaysTheWindow(t *testing.T) {
	cfg := testConfig()
	stream := []string{"a1", "b1", "a2", "b2", "a3", "b3", "a4"}
	evs := make([]shard.Event, len(stream))
	for i, n := range stream {
		evs[i] = testEvent(n, int64(100+i))
	}
	tr, _ := NewTracker(cfg)
	for _, i := range []int{0, 1, 2, 3} { // old: a1 b1 a2 b2
		tr.Delivered(KeyOf(evs[i].Type, evs[i].Data), ms(10*i))
	}
	tr.Stop(ms(50))
	cut, _ := tr.Cut(Wanted(0, 0, 1))

	first := mustHoldback(t, cfg)
	for i, ev := range evs[:5] { // a1 .. a3 before the switch, 60 ms apart
		add(t, first, ev, ms(60*i))
	}
	first.Switch(ms(260))
	add(t, first, evs[5], ms(261))
	add(t, first, evs[6], ms(262))
	resumeAt := first.Trailing()
	if resumeAt != 102 { // a1, b1 and a2 were pruned, at 120, 180 and 240 ms
		t.Fatalf("Trailing = %d, want 102", resumeAt)
	}
	whole, err := first.Release(cut, ms(263))
	if err != nil {
		t.Fatal(err)
	}
	// a2, guild a's cut event, is younger than W/2 and not held (pruned, 140 ms
	// before the switch: past the rule's σ). a4, guild a's first event held from the
	// switch on, is not among the old shard's earlier deliveries, so guild a's cut
	// event is taken to have come before the session: all its held events go.
	if whole.PreSession != 1 || whole.Waiting != 0 {
		t.Errorf("pre-session %d, waiting %d guilds, want 1, 0", whole.PreSession, whole.Waiting)
	}
	whole.Events = append(whole.Events, first.Due(ms(310))...)

	replay := func() *Holdback {
		h := mustHoldback(t, cfg)
		h.Switch(ms(1000)) // the switch has applied: the fresh Holdback starts switched
		for _, ev := range evs {
			if ev.Seq > resumeAt {
				add(t, h, ev, ms(1001))
			}
		}
		return h
	}
	h := replay()
	again, err := h.Release(cut, ms(1002))
	if err != nil {
		t.Fatal(err)
	}
	// The same after the crash.
	if again.PreSession != 1 || again.Waiting != 0 {
		t.Errorf("pre-session %d, waiting %d guilds, want 1, 0", again.PreSession, again.Waiting)
	}
	again.Events = append(again.Events, h.Due(ms(2000))...)
	if got, want := sortedNames(again.Events), sortedNames(whole.Events); !slices.Equal(got, want) {
		t.Errorf("after a crash, with the cut: %v; without the crash: %v", got, want)
	}
	if want := []string{"a3", "b3", "a4"}; !slices.Equal(names(whole.Events), want) {
		t.Errorf("released %v, want %v", names(whole.Events), want)
	}
	noCut, err := replay().Release(nil, ms(1002))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(noCut.Events), []string{"b2", "a3", "b3", "a4"}; !slices.Equal(got, want) {
		t.Errorf("after a crash, with no cut: %v, want %v (b2 twice, nothing lost)", got, want)
	}
}

// An old shard that moved between nodes during the reshard has a Tracker on each,
// and both answer: each names its own last delivery of a guild. The younger one is
// the guild's cut event, whichever comes first in the cut; the older one is an
// earlier delivery.
func TestReleaseWithTwoTrackersOfOneShard(t *testing.T) {
	k := func(n string, age int) CutEntry {
		ev := testEvent(n, 0)
		return CutEntry{Key: KeyOf(ev.Type, ev.Data), Age: time.Duration(age) * time.Millisecond}
	}
	for _, cut := range [][]CutEntry{{k("a1", 30), k("a2", 5)}, {k("a2", 5), k("a1", 30)}} {
		h := mustHoldback(t, testConfig())
		for i, n := range []string{"a1", "a2", "a3"} {
			add(t, h, testEvent(n, int64(i+1)), ms(i))
		}
		h.Switch(ms(10))
		r, err := h.Release(cut, ms(11))
		if err != nil {
			t.Fatal(err)
		}
		if got := names(r.Events); !slices.Equal(got, []string{"a3"}) || r.Matched != 1 || r.Dropped != 2 {
			t.Errorf("cut %v: released %v, matched %d, dropped %d: want [a3], 1, 2", cut, got, r.Matched, r.Dropped)
		}
	}
}

// sortedNames compares what was delivered regardless of the order across guilds:
// only each guild's order is kept.
func sortedNames(evs []shard.Event) []string {
	n := names(evs)
	slices.Sort(n)
	return n
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig: %v", err)
	}
	for _, c := range []Config{
		{Window: 0, MaxEvents: 1, MaxBytes: 1},
		{Window: time.Second, MaxEvents: 0, MaxBytes: 1},
		{Window: time.Second, MaxEvents: 1, MaxBytes: -1},
	} {
		if _, err := NewHoldback(c); err == nil {
			t.Errorf("NewHoldback(%+v) took a bad config", c)
		}
		if _, err := NewTracker(c); err == nil {
			t.Errorf("NewTracker(%+v) took a bad config", c)
		}
	}
}

// Stats count what the release gave back and the longest any of it was held: a
// guild's events given back by the cut at once, another's held until the deadline
// because its cut event never came.
func TestHoldbackCountsWhatItGivesBack(t *testing.T) {
	h := mustHoldback(t, testConfig())
	for i, name := range []string{"a1", "b1", "b2", "a2"} {
		add(t, h, testEvent(name, int64(i+1)), ms(i*10)) // 0, 10, 20, 30 ms
	}
	h.Switch(ms(40)) // the deadline is W/2 later: 90 ms
	b9 := testEvent("b9", 0)
	r, err := h.Release([]CutEntry{
		{Key: KeyOf("MESSAGE_CREATE", testEvent("a1", 0).Data)}, // a1 was delivered: dropped
		{Key: KeyOf(b9.Type, b9.Data), Age: time.Millisecond},   // b's young cut event is not here: b waits
	}, ms(45))
	if err != nil {
		t.Fatal(err)
	}
	if got := names(r.Events); !slices.Equal(got, []string{"a2"}) {
		t.Fatalf("released %v, want [a2]", got)
	}
	if st := h.Stats(); st.Released != 1 || st.Dropped != 1 || st.LongestHeld != 15*time.Millisecond {
		t.Errorf("after the release: %+v, want 1 released, 1 dropped, held at most 15ms", st)
	}
	if got := names(h.Due(ms(90))); !slices.Equal(got, []string{"b1", "b2"}) {
		t.Fatalf("due %v, want [b1 b2]", got)
	}
	if st := h.Stats(); st.Released != 3 || st.Dropped != 1 || st.LongestHeld != 80*time.Millisecond {
		t.Errorf("after the deadline: %+v, want 3 released, 1 dropped, held at most 80ms (b1, from 10 to 90 ms)", st)
	}
}
