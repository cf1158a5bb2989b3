package cutover

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/discluster/discluster/shard"
)

// The rule's cases, one old shard and one new shard with W = 100 ms. Events are named
// by their guild's letter and a number ("a1"; "dm1" has no guild); the same name twice
// is the same payload. Times are milliseconds on each node's own clock: the two
// clocks are never compared, only each one's times against its own switch.
const testWindow = 100 * time.Millisecond

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func ms(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }

type timed struct {
	ev string
	ms int
}

// testEvent is the dispatch an event name stands for, as both generations receive it.
func testEvent(name string, seq int64) shard.Event {
	var d string
	switch {
	case strings.HasPrefix(name, "dm"):
		d = fmt.Sprintf(`{"id":%q,"channel_id":"9","content":"hi"}`, name)
	default:
		d = fmt.Sprintf(`{"id":%q,"guild_id":"%d","content":"hi"}`, name, uint64(name[0]-'a'+1)<<22)
	}
	return shard.Event{SessionID: "s1", Seq: seq, Type: "MESSAGE_CREATE", Data: json.RawMessage(d)}
}

func testConfig() Config {
	return Config{Window: testWindow, MaxEvents: 1000, MaxBytes: 1 << 20}
}

func TestRule(t *testing.T) {
	for _, tc := range []struct {
		name string
		// The old shard delivered these, then stopped at stop.
		old  []timed
		stop int
		// The new shard received these, applied the switch at sw, and had the cut at
		// rel (0: after everything it received).
		recv []timed
		sw   int
		rel  int
		// noCut: the old owner died before it gave its cut.
		noCut bool
		want  []string
		// What Release reports.
		dropped, older, preSession, waiting int
	}{
		{
			name: "the new generation receives first, the old one delivers before its stop",
			recv: []timed{{"a1", 0}, {"a2", 10}}, sw: 40,
			old: []timed{{"a1", 20}, {"a2", 30}}, stop: 50,
			want: nil, dropped: 2,
		},
		{
			name: "the new generation receives first, the old one stops before delivering",
			recv: []timed{{"a1", 0}, {"a2", 10}, {"a3", 20}}, sw: 25,
			old: []timed{{"a1", 15}}, stop: 18,
			want: []string{"a2", "a3"}, dropped: 1,
		},
		{
			name: "the new generation lags: it receives after the old one delivered, before its switch",
			old:  []timed{{"a1", 0}, {"a2", 5}}, stop: 50,
			recv: []timed{{"a1", 30}, {"a2", 40}}, sw: 60,
			want: nil, dropped: 2,
		},
		{
			name: "received after the switch, delivered by an old shard that applied it later",
			recv: []timed{{"a1", 20}}, sw: 10,
			old: []timed{{"a1", 25}}, stop: 30,
			want: nil, dropped: 1,
		},
		{
			name: "received after the switch, never delivered by the old shard",
			recv: []timed{{"a1", 20}, {"a2", 30}}, sw: 10,
			old: []timed{{"a1", 25}}, stop: 28,
			want: []string{"a2"}, dropped: 1,
		},
		{
			name: "after the switch nothing is pruned, however long the cut takes",
			recv: []timed{{"a1", 20}, {"a2", 500}, {"a3", 900}}, sw: 10,
			old: []timed{{"a1", 25}}, stop: 28,
			want: []string{"a2", "a3"}, dropped: 1,
		},
		{
			name: "guilds interleaved differently in each generation: only each guild's order counts",
			recv: []timed{{"a1", 0}, {"b1", 1}, {"a2", 2}, {"b2", 3}, {"c1", 4}}, sw: 50,
			old: []timed{{"b1", 0}, {"a1", 1}, {"b2", 2}}, stop: 50,
			want: []string{"a2", "c1"}, dropped: 3,
		},
		{
			name: "a guild the old shard never delivered: all its held events",
			recv: []timed{{"a1", 3}, {"b1", 4}, {"b2", 10}}, sw: 20,
			old: []timed{{"a1", 5}}, stop: 20,
			want: []string{"b1", "b2"}, dropped: 1,
		},
		{
			name: "the cut's event was pruned: everything held is after it",
			old:  []timed{{"a1", 0}}, stop: 150,
			recv: []timed{{"a1", 0}, {"a2", 120}}, sw: 150,
			want: []string{"a2"}, older: 1,
		},
		{
			name: "a guild the tracker forgot (2W quiet): its held events all came later",
			old:  []timed{{"a1", 0}}, stop: 250,
			recv: []timed{{"a1", 0}, {"a2", 200}}, sw: 250,
			want: []string{"a2"},
		},
		{
			name: "the new generation lags by almost W: the tracker's 2W still has the event",
			old:  []timed{{"a1", 0}}, stop: 100,
			recv: []timed{{"a1", 95}}, sw: 100,
			want: nil, dropped: 1,
		},
		{
			name: "DMs are guild 0, shard 0 in both generations",
			recv: []timed{{"dm1", 0}, {"a1", 1}, {"dm2", 2}}, sw: 20,
			old: []timed{{"dm1", 5}, {"a1", 6}}, stop: 20,
			want: []string{"dm2"}, dropped: 2,
		},
		{
			name: "the new generation is behind: the cut event arrives after the release, other guilds flow meanwhile",
			old:  []timed{{"a1", 0}, {"a2", 10}}, stop: 20,
			recv: []timed{{"a1", 15}, {"b1", 30}, {"a2", 40}, {"a3", 45}}, sw: 20, rel: 25,
			want: []string{"b1", "a3"}, waiting: 1,
		},
		{
			name: "a cut event that came before the session: the guild's next event is none of the old generation's, and ends the wait",
			old:  []timed{{"a8", 5}, {"a9", 10}}, stop: 20, // neither reaches the new shard
			recv: []timed{{"a1", 15}, {"a2", 30}, {"a3", 80}}, sw: 20, rel: 25,
			want: []string{"a1", "a2", "a3"}, waiting: 1,
		},
		{
			name: "a cut event that came before the session, told at the release by an event held since the switch",
			old:  []timed{{"a8", 5}, {"a9", 10}}, stop: 20,
			recv: []timed{{"a1", 15}, {"a2", 22}, {"a3", 80}}, sw: 20, rel: 25,
			want: []string{"a1", "a2", "a3"}, preSession: 1,
		},
		{
			name: "the new generation is behind, told by earlier deliveries arriving after the switch: held until the cut event",
			old:  []timed{{"a1", 0}, {"a2", 5}, {"a3", 10}}, stop: 20,
			recv: []timed{{"a1", 22}, {"b1", 23}, {"a2", 30}, {"a3", 35}, {"a4", 40}}, sw: 20, rel: 25,
			want: []string{"b1", "a4"}, waiting: 1,
		},
		{
			name: "a cut event that never comes, in a guild quiet after the switch: its held events go at the deadline, W/2 after the switch",
			old:  []timed{{"a9", 10}}, stop: 20,
			recv: []timed{{"a1", 15}, {"b1", 30}}, sw: 20, rel: 25,
			want: []string{"b1", "a1"}, waiting: 1,
		},
		{
			name: "a cut that arrives after the deadline waits for nothing",
			old:  []timed{{"a1", 10}}, stop: 20,
			recv: []timed{{"a2", 90}}, sw: 20, rel: 80,
			want: []string{"a2"}, older: 1,
		},
		{
			name: "limit: the same event twice within W repeats the second and what is between",
			recv: []timed{{"a1", 0}, {"a2", 10}, {"a1", 20}, {"a3", 30}}, sw: 40,
			old: []timed{{"a1", 0}, {"a2", 10}, {"a1", 20}}, stop: 40,
			want: []string{"a2", "a1", "a3"}, dropped: 1,
		},
		{
			name: "limit: an old owner that died gave no cut: the whole window again",
			recv: []timed{{"a1", 0}, {"a2", 10}, {"a3", 20}}, sw: 30,
			old: []timed{{"a1", 5}, {"a2", 15}}, stop: 30, noCut: true,
			want: []string{"a1", "a2", "a3"},
		},
		{
			name: "limit: an old shard lagging past W loses what the new one pruned",
			recv: []timed{{"a1", 0}, {"a2", 10}, {"a3", 190}}, sw: 200,
			old: []timed{{"a1", 150}}, stop: 160,
			want: []string{"a3"}, waiting: 1, // a2: never delivered; a1 (pruned) awaited until the deadline
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := NewTracker(testConfig())
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range tc.old {
				ev := testEvent(e.ev, 0)
				tr.Delivered(KeyOf(ev.Type, ev.Data), ms(e.ms))
			}
			tr.Stop(ms(tc.stop))
			cut, err := tr.Cut(Wanted(0, 0, 1))
			if err != nil {
				t.Fatal(err)
			}
			if tc.noCut {
				cut = nil
			}

			h, err := NewHoldback(testConfig())
			if err != nil {
				t.Fatal(err)
			}
			rel := tc.rel
			if rel == 0 {
				rel = tc.sw
				for _, e := range tc.recv {
					rel = max(rel, e.ms+1)
				}
			}
			var got []shard.Event
			var r Released
			phase := 0
			for i, e := range slices.Concat(tc.recv, []timed{{"", 1 << 30}}) {
				if phase == 0 && e.ms >= tc.sw {
					h.Switch(ms(tc.sw))
					phase = 1
				}
				if phase == 1 && e.ms >= rel {
					if r, err = h.Release(cut, ms(rel)); err != nil {
						t.Fatal(err)
					}
					got = append(got, r.Events...)
					phase = 2
				}
				if e.ev == "" {
					break
				}
				ev := testEvent(e.ev, int64(i+1))
				out, err := h.Add(ev, KeyOf(ev.Type, ev.Data), ms(e.ms))
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, out...)
			}
			got = append(got, h.Due(ms(1<<30))...)
			if !h.Done() {
				t.Error("not Done after the deadline")
			}
			if got := names(got); !slices.Equal(got, tc.want) {
				t.Errorf("delivered %v, want %v", got, tc.want)
			}
			if r.Dropped != tc.dropped || r.Older != tc.older || r.PreSession != tc.preSession || r.Waiting != tc.waiting {
				t.Errorf("release: dropped %d, older %d, pre-session %d, waiting %d; want %d, %d, %d, %d",
					r.Dropped, r.Older, r.PreSession, r.Waiting, tc.dropped, tc.older, tc.preSession, tc.waiting)
			}
		})
	}
}

func names(evs []shard.Event) []string {
	var out []string
	for _, ev := range evs {
		var d struct{ ID string }
		if err := json.Unmarshal(ev.Data, &d); err != nil || d.ID == "" {
			out = append(out, ev.Type)
			continue
		}
		out = append(out, d.ID)
	}
	return out
}

// A guild waiting for a cut event that came before the new session waits only until
// its next event: Add gives back its held events and that one at once, long before
// the deadline, while a guild that is behind keeps holding.
func TestAWaitEndsAtTheGuildsNextEvent(t *testing.T) {
	tr := mustTracker(t)
	for i, n := range []string{"a8", "a9", "b1", "b2"} {
		tr.Delivered(keyOf(n), ms(i))
	}
	tr.Stop(ms(10))
	cut, _ := tr.Cut(Wanted(0, 0, 1))

	h := mustHoldback(t, testConfig())
	add(t, h, testEvent("a1", 1), ms(5)) // a8 and a9 came before this session
	add(t, h, testEvent("b1", 2), ms(6))
	h.Switch(ms(10))
	r, err := h.Release(cut, ms(11))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Events) != 0 || r.Waiting != 2 || r.Dropped != 0 {
		t.Fatalf("release: %v, waiting %d, dropped %d: want nothing, 2, 0", names(r.Events), r.Waiting, r.Dropped)
	}
	out, err := h.Add(testEvent("a2", 3), keyOf("a2"), ms(12))
	if err != nil {
		t.Fatal(err)
	}
	if got := names(out); !slices.Equal(got, []string{"a1", "a2"}) {
		t.Errorf("guild a's next event gave back %v, want [a1 a2]", got)
	}
	// b2 is the old generation's cut event for guild b: b1 and b2 were delivered.
	if out, _ := h.Add(testEvent("b2", 4), keyOf("b2"), ms(13)); len(out) != 0 || !h.Done() {
		t.Errorf("b2 gave back %v, done %v: want nothing, done", names(out), h.Done())
	}
	st := h.Stats()
	if st.PreSession != 1 || st.GaveUp != 0 || st.LongestHeld != 7*time.Millisecond {
		t.Errorf("stats %+v: want 1 pre-session guild, none given up, a1 held 7 ms", st)
	}
}
