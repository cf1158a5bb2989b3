package shard_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/discluster/discluster/shard"
	"github.com/discluster/discluster/shard/gatewaytest"
)

// gatedHandler is a cluster handler that records the events it handles and stalls at
// the ones its hold matches, until the test gives its verdict on each: nil handles it,
// an error means the handler gave up on it.
type gatedHandler struct {
	rec     *recorder
	mu      sync.Mutex
	hold    func(shard.Event) bool
	reached chan shard.Event
	verdict chan error
	done    chan struct{} // closed when the test ends: nothing stalls any more
}

// newGatedCluster starts a cluster whose handler is a gatedHandler. The handler is let
// go before the cluster is closed, so a failed test never leaves Close waiting on it.
func newGatedCluster(t *testing.T, rec *recorder, cfg shard.ClusterConfig) (*shard.Cluster, *gatedHandler) {
	t.Helper()
	g := &gatedHandler{rec: rec, reached: make(chan shard.Event, 1), verdict: make(chan error), done: make(chan struct{})}
	cfg.Handler = g.handle
	c := newCluster(t, cfg)
	t.Cleanup(func() { close(g.done) }) // runs before newCluster's Close
	return c, g
}

func (g *gatedHandler) setHold(hold func(shard.Event) bool) {
	g.mu.Lock()
	g.hold = hold
	g.mu.Unlock()
}

func (g *gatedHandler) handle(ev shard.Event) error {
	g.mu.Lock()
	hold := g.hold
	g.mu.Unlock()
	if hold != nil && hold(ev) {
		select {
		case g.reached <- ev:
		case <-g.done:
			return errors.New("test over")
		}
		select {
		case err := <-g.verdict:
			if err != nil {
				return err
			}
		case <-g.done:
			return errors.New("test over")
		}
	}
	return g.rec.handle(ev)
}

// await waits for the handler to stall at an event.
func (g *gatedHandler) await(t *testing.T, what string) shard.Event {
	t.Helper()
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	select {
	case ev := <-g.reached:
		return ev
	case <-deadline.C:
		t.Fatalf("timed out waiting for the handler to reach %s", what)
		return shard.Event{}
	}
}

func handledIs(t *testing.T, c *shard.Cluster, id int, want shard.ResumeState) {
	t.Helper()
	got, ok := c.Handled(id)
	if !ok {
		t.Fatalf("Handled(%d): unknown shard", id)
	}
	if got != want {
		t.Fatalf("Handled(%d) = %+v, want %+v", id, got, want)
	}
}

func clusterConfig(t *testing.T, srv *gatewaytest.Server, rec *recorder) shard.Config {
	cfg := baseConfig(t, srv, rec, 0, 1)
	cfg.Dispatch = nil
	return cfg
}

// The handled position moves only once the handler returned nil for an event, however
// far ahead the shard's own (queued) seq is; it starts empty for a shard that
// identifies.
func TestClusterHandledAdvancesOnlyAfterHandler(t *testing.T) {
	srv := newFake(t, gatewaytest.Options{EventRate: 200})
	rec := newRecorder()
	c, g := newGatedCluster(t, rec, shard.ClusterConfig{})
	g.setHold(func(ev shard.Event) bool { return ev.Seq == 1 })
	if err := c.Add(clusterConfig(t, srv, rec)); err != nil {
		t.Fatal(err)
	}
	handledIs(t, c, 0, shard.ResumeState{})
	if _, ok := c.Handled(1); ok {
		t.Fatal("Handled of a shard not in the cluster: ok")
	}

	if ev := g.await(t, "READY"); ev.Type != "READY" {
		t.Fatalf("first event %s, want READY", ev.Type)
	}
	handledIs(t, c, 0, shard.ResumeState{}) // READY is in the handler, not handled yet
	g.setHold(func(ev shard.Event) bool { return ev.Seq == 20 })
	g.verdict <- nil

	ev := g.await(t, "seq 20")
	waitUntil(t, 15*time.Second, "the shard to queue seq 20", nil, func() bool {
		rs, _ := c.ResumeState(0)
		return rs.Seq >= 20
	})
	handledIs(t, c, 0, shard.ResumeState{SessionID: ev.SessionID, Seq: 19, ResumeURL: srv.ResumeURL()})
	g.setHold(nil)
	g.verdict <- nil

	waitUntil(t, 15*time.Second, "seq 50 handled", rec.changed, func() bool {
		hs, _ := c.Handled(0)
		return hs.Seq >= 50
	})
	rs, err := c.Remove(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if rs.SessionID != ev.SessionID || rs.ResumeURL != srv.ResumeURL() {
		t.Fatalf("Remove returned %+v: want session %s on %s", rs, ev.SessionID, srv.ResumeURL())
	}
	checkContiguous(t, rec.delivered(0), 1, rs.Seq)
	if _, ok := c.Handled(0); ok {
		t.Fatal("Handled of a removed shard: ok")
	}
}

// An event the handler gives up on freezes the position for the rest of the run: later
// events it handles do not move it, Remove returns it, and a shard resumed from it has
// the gateway replay the event given up on. The next run starts from its Resume and
// moves again.
func TestClusterHandlerErrorFreezesPosition(t *testing.T) {
	srv := newFake(t, gatewaytest.Options{EventRate: 200})
	rec := newRecorder()
	c, g := newGatedCluster(t, rec, shard.ClusterConfig{})
	g.setHold(func(ev shard.Event) bool { return ev.Seq == 10 })
	cfg := clusterConfig(t, srv, rec)
	if err := c.Add(cfg); err != nil {
		t.Fatal(err)
	}
	ev := g.await(t, "seq 10")
	frozen := shard.ResumeState{SessionID: ev.SessionID, Seq: 9, ResumeURL: srv.ResumeURL()}
	handledIs(t, c, 0, frozen)
	g.setHold(nil)
	g.verdict <- errors.New("sink gave up")

	rec.waitFor(t, "20 events handled after the one given up on", func() bool {
		seqs := rec.delivered(0)
		return len(seqs) > 0 && seqs[len(seqs)-1] >= 30
	})
	handledIs(t, c, 0, frozen)
	rs, err := c.Remove(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if rs != frozen {
		t.Fatalf("Remove returned %+v, want the frozen position %+v", rs, frozen)
	}

	// The next run, in the same cluster, resumes from there.
	before := len(rec.delivered(0))
	g.setHold(func(shard.Event) bool { return true })
	cfg.Resume = rs
	if err := c.Add(cfg); err != nil {
		t.Fatal(err)
	}
	handledIs(t, c, 0, frozen)
	ev = g.await(t, "the first event after the resume")
	if ev.SessionID != rs.SessionID || ev.Seq != 10 {
		t.Fatalf("first event after the resume: session %s seq %d, want %s seq 10", ev.SessionID, ev.Seq, rs.SessionID)
	}
	handledIs(t, c, 0, frozen)
	g.setHold(nil)
	g.verdict <- nil
	waitUntil(t, 15*time.Second, "the new run's position to move", rec.changed, func() bool {
		hs, _ := c.Handled(0)
		return hs.Seq >= 40
	})
	rs, err = c.Remove(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if rs.SessionID != frozen.SessionID {
		t.Fatalf("session changed from %s to %s", frozen.SessionID, rs.SessionID)
	}
	checkContiguous(t, rec.delivered(0)[before:], 10, rs.Seq)
}

// When the shard moves to a new session, its position stays at the old session's last
// handled event (Handled) and, for its next owner (Remove), is the new session from
// seq 0 until an event of the new session is handled.
func TestClusterNewSessionStartsAtZero(t *testing.T) {
	for _, tt := range []struct {
		name    string
		verdict error // on the new session's READY
	}{
		{"handled", nil},
		{"given up on", errors.New("sink gave up")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFake(t, gatewaytest.Options{EventRate: 200})
			rec := newRecorder()
			c, g := newGatedCluster(t, rec, shard.ClusterConfig{})
			var first string // the handler goroutine's alone
			g.setHold(func(ev shard.Event) bool {
				if first == "" {
					first = ev.SessionID
				}
				return ev.SessionID != first
			})
			if err := c.Add(clusterConfig(t, srv, rec)); err != nil {
				t.Fatal(err)
			}
			rec.waitFor(t, "10 events", func() bool { return len(rec.delivered(0)) >= 10 })
			if err := srv.InvalidateSession(0, false); err != nil {
				t.Fatal(err)
			}
			ev := g.await(t, "the new session's first event")
			if ev.Type != "READY" || ev.Seq != 1 {
				t.Fatalf("new session's first event %s seq %d, want READY seq 1", ev.Type, ev.Seq)
			}
			seqs := rec.delivered(0)
			old, _ := c.Handled(0)
			if old.SessionID == ev.SessionID || old.SessionID == "" {
				t.Fatalf("handled session %q, new session %q: want the old session", old.SessionID, ev.SessionID)
			}
			// The old session's URL is gone with it: none is reported.
			handledIs(t, c, 0, shard.ResumeState{SessionID: old.SessionID, Seq: seqs[len(seqs)-1]})
			if rs, _ := c.ResumeState(0); rs.SessionID != ev.SessionID {
				t.Fatalf("shard's session %s, want the new %s", rs.SessionID, ev.SessionID)
			}
			before := len(seqs)
			g.setHold(nil)
			g.verdict <- tt.verdict

			if tt.verdict == nil {
				waitUntil(t, 15*time.Second, "new session events handled", rec.changed, func() bool {
					hs, _ := c.Handled(0)
					return hs.SessionID == ev.SessionID && hs.Seq >= 5
				})
				if hs, _ := c.Handled(0); hs.ResumeURL != srv.ResumeURL() {
					t.Fatalf("Handled %+v: want resume URL %s", hs, srv.ResumeURL())
				}
				rs, err := c.Remove(context.Background(), 0)
				if err != nil {
					t.Fatal(err)
				}
				if rs.SessionID != ev.SessionID || rs.ResumeURL != srv.ResumeURL() {
					t.Fatalf("Remove returned %+v: want session %s on %s", rs, ev.SessionID, srv.ResumeURL())
				}
				checkContiguous(t, rec.delivered(0)[before:], 1, rs.Seq)
				return
			}
			rec.waitFor(t, "later events of the new session", func() bool { return len(rec.delivered(0)) >= before+10 })
			handledIs(t, c, 0, shard.ResumeState{SessionID: old.SessionID, Seq: old.Seq})
			rs, err := c.Remove(context.Background(), 0)
			if err != nil {
				t.Fatal(err)
			}
			if want := (shard.ResumeState{SessionID: ev.SessionID, ResumeURL: srv.ResumeURL()}); rs != want {
				t.Fatalf("Remove returned %+v, want %+v", rs, want)
			}
		})
	}
}

// Handled may be called from any goroutine while events flow; what it reports never
// goes back within a session, and Close hands back the last handled positions.
func TestClusterHandledConcurrent(t *testing.T) {
	const shards = 4
	srv := newFake(t, gatewaytest.Options{Shards: shards, MaxConcurrency: shards, EventRate: 500})
	rec := newRecorder()
	c := newCluster(t, shard.ClusterConfig{Handler: rec.handle, QueueSize: 4})
	gate, _ := shard.NewLocalGate(shards, 100*time.Millisecond)
	for id := range shards {
		cfg := baseConfig(t, srv, rec, id, shards)
		cfg.Dispatch, cfg.Observe, cfg.Gate = nil, nil, gate
		if err := c.Add(cfg); err != nil {
			t.Fatal(err)
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last [shards]shard.ResumeState
			for {
				select {
				case <-stop:
					return
				default:
				}
				for id := range shards {
					hs, ok := c.Handled(id)
					if !ok {
						t.Errorf("Handled(%d): unknown shard", id)
						return
					}
					if hs.SessionID == last[id].SessionID && hs.Seq < last[id].Seq {
						t.Errorf("shard %d: handled seq went back from %d to %d", id, last[id].Seq, hs.Seq)
						return
					}
					last[id] = hs
				}
				if _, ok := c.Handled(shards); ok {
					t.Errorf("Handled(%d): ok for a shard not in the cluster", shards)
					return
				}
				runtime.Gosched()
			}
		}()
	}
	rec.waitFor(t, "events on every shard", func() bool {
		for id := range shards {
			if len(rec.delivered(id)) < 100 {
				return false
			}
		}
		return true
	})
	close(stop)
	wg.Wait()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	states, err := c.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != shards {
		t.Fatalf("Close returned %d states, want %d", len(states), shards)
	}
	for id := range shards {
		rs := states[id]
		if rs.SessionID == "" || rs.ResumeURL != srv.ResumeURL() {
			t.Fatalf("shard %d: Close returned %+v", id, rs)
		}
		checkContiguous(t, rec.delivered(id), 1, rs.Seq)
		if _, ok := c.Handled(id); ok {
			t.Fatalf("Handled(%d): ok after Close", id)
		}
	}
}
