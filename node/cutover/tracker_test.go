package cutover

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

func mustTracker(t *testing.T) *Tracker {
	t.Helper()
	tr, err := NewTracker(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func keyOf(name string) Key {
	ev := testEvent(name, 0)
	return KeyOf(ev.Type, ev.Data)
}

func TestTrackerCut(t *testing.T) {
	tr := mustTracker(t)
	tr.Delivered(keyOf("a1"), ms(0))
	tr.Delivered(keyOf("b1"), ms(10))
	tr.Delivered(keyOf("a2"), ms(20))
	tr.Delivered(keyOf("dm1"), ms(30))
	if _, err := tr.Cut(Wanted(0, 0, 1)); !errors.Is(err, ErrNotStopped) {
		t.Fatalf("Cut before Stop: %v, want ErrNotStopped", err)
	}
	tr.Stop(ms(50))
	tr.Stop(ms(5000)) // again: the first counts
	cut, err := tr.Cut(Wanted(0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	want := []CutEntry{
		{Key: keyOf("dm1"), Age: 20 * time.Millisecond},
		{Key: keyOf("a2"), Age: 30 * time.Millisecond},
		{Key: keyOf("b1"), Age: 40 * time.Millisecond},
	}
	if !slices.Equal(cut, want) {
		t.Errorf("cut %v, want %v", cut, want)
	}
	// Guild b only, from old shard 3 of 4 to a new shard of 8 that gets it.
	b := keyOf("b1").Guild
	part, _ := tr.Cut(Wanted(3, ShardOf(b, 8), 8))
	if len(part) != 1 || part[0].Guild != b {
		t.Errorf("cut for guild b's new shard: %v", part)
	}
	tr.Delivered(keyOf("a3"), ms(60))
	if st := tr.Stats(); st.Late != 1 || !st.Stopped || st.Guilds != 3 {
		t.Errorf("stats %+v, want 1 late delivery, stopped, 3 guilds", st)
	}
	// a3 is guild a's last delivery now, and a2, 30 ms before the Stop (within W/2),
	// an earlier one; a1 (50 ms) is past W/2.
	cut, _ = tr.Cut(Wanted(0, 0, 1))
	want = []CutEntry{
		{Key: keyOf("dm1"), Age: 20 * time.Millisecond},
		{Key: keyOf("a2"), Age: 30 * time.Millisecond, Earlier: true},
		{Key: keyOf("a3"), Age: 0},
		{Key: keyOf("b1"), Age: 40 * time.Millisecond},
	}
	if !slices.Equal(cut, want) {
		t.Errorf("after a late delivery, cut %v, want %v", cut, want)
	}
}

// The earlier deliveries of the last W/2, an identical payload twice among them,
// and how many are kept when a shard delivers more than MaxEvents in W/2.
func TestTrackerEarlierDeliveries(t *testing.T) {
	tr := mustTracker(t) // W/2 = 50 ms
	for i, n := range []string{"a1", "a2", "a3", "a2", "a4"} {
		tr.Delivered(keyOf(n), ms(60+10*i))
	}
	tr.Stop(ms(110))
	cut, _ := tr.Cut(Wanted(0, 0, 1))
	want := []CutEntry{
		{Key: keyOf("a2"), Age: 40 * time.Millisecond, Earlier: true},
		{Key: keyOf("a3"), Age: 30 * time.Millisecond, Earlier: true},
		{Key: keyOf("a2"), Age: 20 * time.Millisecond, Earlier: true},
		{Key: keyOf("a4"), Age: 10 * time.Millisecond},
	}
	if !slices.Equal(cut, want) {
		t.Errorf("cut %v, want %v (a1 is 50 ms old: past W/2)", cut, want)
	}

	cfg := testConfig()
	cfg.MaxEvents = 3
	small, _ := NewTracker(cfg)
	for i := range 10 {
		small.Delivered(Key{Guild: 1 << 22, Hash: uint64(i)}, ms(i))
	}
	if st := small.Stats(); st.Recent != 3 {
		t.Errorf("remembers %d recent deliveries, want MaxEvents = 3", st.Recent)
	}
	small.Stop(ms(10))
	cut, _ = small.Cut(func(uint64) bool { return true })
	if len(cut) != 3 || cut[2].Hash != 9 || cut[2].Earlier || !cut[0].Earlier || cut[0].Hash != 7 {
		t.Errorf("cut %v, want 7 and 8 earlier, 9 last", cut)
	}
}

// The window is measured back from Stop, however late the cut is asked for; guilds
// quiet for 2W are out of the cut and, after a sweep, out of memory.
func TestTrackerForgets(t *testing.T) {
	tr := mustTracker(t) // W = 100 ms: remembers 200 ms
	for i := range 100 {
		tr.Delivered(Key{Guild: uint64(i+1) << 22, Hash: 1}, ms(i))
	}
	tr.Delivered(Key{Guild: 7 << 22, Hash: 2}, ms(250))
	// The sweep at 250 ms forgot the guilds last delivered at or before 50 ms: 49
	// remain, and guild 7, delivered again.
	if st := tr.Stats(); st.Guilds != 50 {
		t.Errorf("remembers %d guilds after the sweep, want 50", st.Guilds)
	}
	tr.Stop(ms(260))
	cut, _ := tr.Cut(func(uint64) bool { return true })
	var guilds []uint64
	for _, c := range cut {
		guilds = append(guilds, c.Guild>>22)
	}
	// Delivered at 61..99 ms (within 200 ms of the Stop at 260), and guild 7 again.
	want := []uint64{7}
	for g := 62; g <= 100; g++ {
		want = append(want, uint64(g))
	}
	if !slices.Equal(guilds, want) {
		t.Errorf("cut guilds %v, want %v", guilds, want)
	}
}

func TestWanted(t *testing.T) {
	g := uint64(5)<<22 | 99
	for _, tc := range []struct {
		guild              uint64
		old, new, newTotal int
		want               bool
	}{
		{0, 0, 0, 4, true},
		{0, 1, 0, 4, false}, // another old shard's events without a guild are its session's
		{0, 0, 1, 4, false},
		{g, 1, 1, 4, true},
		{g, 1, 2, 4, false},
		{g, 0, 5, 8, true},
	} {
		if got := Wanted(tc.old, tc.new, tc.newTotal)(tc.guild); got != tc.want {
			t.Errorf("Wanted(%d, %d, %d)(%d) = %v, want %v", tc.old, tc.new, tc.newTotal, tc.guild, got, tc.want)
		}
	}
}

// The documented concurrency, under -race: deliveries, a Stop and cuts at once on a
// Tracker; adds, a Switch, Trailing and a Release at once on a Holdback.
func TestConcurrentUse(t *testing.T) {
	tr := mustTracker(t)
	h := mustHoldback(t, testConfig())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 1000 {
			ev := testEvent(fmt.Sprintf("a%d", i), int64(i+1))
			tr.Delivered(KeyOf(ev.Type, ev.Data), ms(i))
			if _, err := h.Add(ev, KeyOf(ev.Type, ev.Data), ms(i)); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Go(func() {
		for range 100 {
			tr.Cut(Wanted(0, 0, 1))
			h.Trailing()
			h.Stats()
		}
		tr.Stop(ms(500))
		h.Switch(ms(500))
		cut, _ := tr.Cut(Wanted(0, 0, 1))
		if _, err := h.Release(cut, ms(500)); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
}
