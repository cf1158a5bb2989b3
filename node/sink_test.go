package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discluster/discluster/node/sink"
	"github.com/discluster/discluster/shard/gatewaytest"
)

// flakySink fails every delivery while failing is set, and passes the rest on.
type flakySink struct {
	inner   sink.Sink
	failing atomic.Bool
	refused atomic.Int64
}

var errSinkDown = errors.New("sink down (test)")

// top is the highest seq of session delivered so far.
func (e *events) top(session string) int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var top int64
	for s := range e.seen[session] {
		top = max(top, s)
	}
	return top
}

func (f *flakySink) Deliver(ctx context.Context, batch []sink.Delivery) error {
	if f.failing.Load() {
		f.refused.Add(1)
		return errSinkDown
	}
	return f.inner.Deliver(ctx, batch)
}

// A sink that fails holds its shards' positions: the checkpoint does not move past
// an event the sink refused, status shows the failure, and when the node is then
// killed its shards resume elsewhere from the last delivered event, so no seq is
// skipped. A drain while the sink fails hands off at the last delivered event too.
func TestFailingSinkNeverLosesAnEvent(t *testing.T) {
	for _, then := range []string{"kill", "drain"} {
		t.Run(then, func(t *testing.T) {
			c := newTestCluster(t, 8, gatewaytest.Options{})
			sinks := map[string]*flakySink{}
			nodes := c.startNWith(3, func(cfg *Config) {
				fs := &flakySink{inner: c.events}
				cfg.Sink = fs
				sinks[cfg.Name] = fs
			})
			c.waitLeader(20*time.Second, nodes...)
			c.allReady(30*time.Second, nodes[0])
			c.checkpointed(nodes[0])
			victim := c.nonLeader(nodes)
			survivors := without(nodes, victim)
			held := shardsOf(victim)
			if len(held) == 0 {
				t.Fatalf("%s holds no shards", victim.Name())
			}

			sinks[victim.Name()].failing.Store(true)
			waitFor(t, 10*time.Second, "status showing the failing sink and its backlog", func() error {
				st := survivors[0].Status(t.Context())
				for _, m := range st.Members {
					if m.ID == victim.Name() && (m.Sink == nil || m.Sink.Backlog == 0) {
						return fmt.Errorf("%s's sink: %+v, want a backlog", m.ID, m.Sink)
					}
				}
				for _, p := range st.Problems {
					if strings.Contains(p, victim.Name()+": sink failing") && strings.Contains(p, "events waiting") && strings.Contains(p, errSinkDown.Error()) {
						return nil
					}
				}
				return errors.New("no problem reported")
			})
			// Checkpoints stop where the sink stopped taking events: none names an event
			// the sink did not accept.
			refused := sinks[victim.Name()].refused.Load()
			waitFor(t, 10*time.Second, "more refused deliveries (retries)", func() error {
				if sinks[victim.Name()].refused.Load() < refused+10 {
					return errors.New("few retries yet")
				}
				return nil
			})
			for _, id := range held {
				r, _ := survivors[0].fsm.Resume(id)
				if got := c.events.top(r.SessionID); r.Seq > got {
					t.Errorf("shard %d: checkpoint at seq %d, but the sink accepted only up to %d", id, r.Seq, got)
				}
			}
			before := c.fake.Stats()

			switch then {
			case "kill":
				victim.Kill()
			case "drain":
				if _, err := httpPost("http://" + survivors[0].HTTPAddr() + "/v1/drain/" + victim.Name()); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, 40*time.Second, "the shards off "+victim.Name(), func() error {
				if k := len(survivors[0].fsm.ShardsOf(victim.Name())); k > 0 {
					return fmt.Errorf("%d shards still there", k)
				}
				return nil
			})
			per := c.allReady(40*time.Second, survivors[0])
			if per[victim.Name()] != 0 {
				t.Fatalf("%s still holds %d shards", victim.Name(), per[victim.Name()])
			}
			c.checkOneLive()
			waitFor(t, 10*time.Second, "events flowing after the move", func() error {
				if c.fake.Stats().EventsSent < before.EventsSent+40 {
					return errors.New("few events yet")
				}
				return nil
			})
			dups := c.events.check(t, c.fake.Stats(), false)
			t.Logf("%d shards moved after %d refused deliveries; %d events delivered twice", len(held), sinks[victim.Name()].refused.Load(), dups)
		})
	}
}
