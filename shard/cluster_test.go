package shard_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discluster/discluster/shard"
	"github.com/discluster/discluster/shard/gatewaytest"
)

func newCluster(t testing.TB, cfg shard.ClusterConfig) *shard.Cluster {
	t.Helper()
	c, err := shard.NewCluster(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := c.Close(ctx); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	return c
}

// A cluster runs several shards into one handler; Remove hands back a resume state
// only after every event the shard accepted was handled.
func TestClusterRunsShardsIntoOneHandler(t *testing.T) {
	const shards = 4
	srv := newFake(t, gatewaytest.Options{Shards: shards, MaxConcurrency: shards, EventRate: 100})
	rec := newRecorder()
	c := newCluster(t, shard.ClusterConfig{Handler: rec.handle, Observe: rec.observe, QueueSize: 8})
	gate, _ := shard.NewLocalGate(shards, 100*time.Millisecond)
	for id := range shards {
		cfg := baseConfig(t, srv, rec, id, shards)
		cfg.Dispatch, cfg.Observe, cfg.Gate = nil, nil, gate
		if err := c.Add(cfg); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Add(baseConfig(t, srv, rec, 0, shards)); err == nil {
		t.Fatal("a second shard 0 was accepted")
	}
	rec.waitFor(t, "events on every shard", func() bool {
		for id := range shards {
			if len(rec.delivered(id)) < 20 {
				return false
			}
		}
		return true
	})
	for id := range shards {
		rs, err := c.Remove(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		checkContiguous(t, rec.delivered(id), 1, rs.Seq)
		if life := rec.lifecycle(id); life[0] != "created" || life[len(life)-1] != "stopped" {
			t.Fatalf("shard %d lifecycle %v: want created first and stopped last", id, life)
		}
	}
	if len(c.Info()) != 0 {
		t.Fatalf("shards left after Remove: %+v", c.Info())
	}
}

// A slow handler back-pressures the shards: nothing is dropped, heartbeats go on, and
// no connection is mistaken for a zombie.
func TestClusterSlowHandlerLosesNothing(t *testing.T) {
	srv := newFake(t, gatewaytest.Options{EventRate: 200, HeartbeatInterval: 500 * time.Millisecond, HeartbeatTimeout: time.Second})
	rec := newRecorder()
	release := make(chan struct{})
	var held atomic.Int64
	c := newCluster(t, shard.ClusterConfig{QueueSize: 2, Handler: func(ev shard.Event) error {
		if ev.Seq == 20 {
			held.Store(1)
			<-release // the handler stalls for several heartbeat intervals
		}
		return rec.handle(ev)
	}})
	cfg := baseConfig(t, srv, rec, 0, 1)
	cfg.Dispatch = nil
	if err := c.Add(cfg); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 15*time.Second, "the handler to stall", nil, func() bool { return held.Load() == 1 })
	stalledAt := time.Now()
	waitUntil(t, 15*time.Second, "several heartbeat intervals", nil, func() bool { return time.Since(stalledAt) > 5*500*time.Millisecond })
	close(release)
	rec.waitFor(t, "events after the stall", func() bool { return len(rec.delivered(0)) >= 200 })
	rs, err := c.Remove(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	checkContiguous(t, rec.delivered(0), 1, rs.Seq)
	// A stall mistaken for a zombie would show as a resume; the fake's outbound queue
	// (thousands of events) is far from full after 2.5 s at 200 events/s, so no
	// resume has any other cause.
	if st := srv.Stats(); st.Identifies != 1 || st.Resumes != 0 || st.SlowClientDrops != 0 {
		t.Fatalf("identifies %d, resumes %d, slow-client drops %d: the stall cost a reconnect", st.Identifies, st.Resumes, st.SlowClientDrops)
	}
}

// A shard whose connections fail before a session is up is restarted with growing
// waits; one that fails fatally is reported once and not restarted.
func TestClusterBackoffAndFatal(t *testing.T) {
	// A gateway that accepts TCP and hangs up at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var attempts []time.Time
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			attempts = append(attempts, time.Now())
			mu.Unlock()
			conn.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })

	rec := newRecorder()
	c := newCluster(t, shard.ClusterConfig{Handler: rec.handle, Observe: rec.observe, BackoffMin: 40 * time.Millisecond, BackoffMax: 160 * time.Millisecond})
	gate, _ := shard.NewLocalGate(1, time.Millisecond)
	if err := c.Add(shard.Config{Token: testToken, ShardCount: 1, GatewayURL: "ws://" + ln.Addr().String() + "/", Gate: gate}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 15*time.Second, "five connection attempts", nil, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(attempts) >= 5
	})
	mu.Lock()
	gaps := []time.Duration{attempts[1].Sub(attempts[0]), attempts[4].Sub(attempts[3])}
	mu.Unlock()
	// Jitter keeps each wait in [backoff/2, backoff]: the first is at least 20 ms, the
	// fourth (capped at 160 ms) at least 80 ms.
	if gaps[0] < 20*time.Millisecond || gaps[1] < 80*time.Millisecond {
		t.Fatalf("waits %v: want >= 20ms then >= 80ms", gaps)
	}

	srv := newFake(t, gatewaytest.Options{})
	cfg := baseConfig(t, srv, rec, 0, 1)
	cfg.ShardID, cfg.Token, cfg.Dispatch, cfg.Observe = 0, "bad-token", nil, nil
	c2 := newCluster(t, shard.ClusterConfig{Handler: rec.handle, Observe: rec.observe, BackoffMin: time.Millisecond, BackoffMax: time.Millisecond})
	if err := c2.Add(cfg); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "the shard to fail", func() bool {
		info := c2.Info()
		return len(info) == 1 && info[0].State == shard.StateFailed
	})
	if info := c2.Info()[0]; info.Err == "" {
		t.Fatal("failed shard reports no error")
	}
	if n := srv.Stats().Closes[4004]; n != 1 {
		t.Fatalf("the gateway closed with 4004 %d times: a fatal shard was restarted", n)
	}
}

// End closes a shard's session with 1000, which ends it at Discord, drops the events
// it had not handled, and takes the shard out of the cluster.
func TestClusterEndClosesTheSessionForGood(t *testing.T) {
	srv := newFake(t, gatewaytest.Options{EventRate: 200})
	rec := newRecorder()
	block := make(chan struct{})
	c := newCluster(t, shard.ClusterConfig{QueueSize: 64, Observe: rec.observe, Handler: func(ev shard.Event) error {
		if ev.Seq > 20 {
			<-block // from here the handler holds: events queue up
		}
		return rec.handle(ev)
	}})
	defer close(block)
	cfg := baseConfig(t, srv, rec, 0, 1)
	cfg.Dispatch, cfg.Observe = nil, nil
	if err := c.Add(cfg); err != nil {
		t.Fatal(err)
	}
	awaitFake(t, srv, "events queued behind the handler", func(s gatewaytest.Stats) bool { return s.EventsSent > 40 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.End(ctx, 0); err != nil {
		t.Fatal(err)
	}
	awaitFake(t, srv, "the client's 1000 close", func(s gatewaytest.Stats) bool {
		return s.ClientCloses[shard.CloseSessionEnded] == 1 && s.Shards[0].Live == 0
	})
	if len(c.Info()) != 0 {
		t.Fatalf("shards left after End: %+v", c.Info())
	}
	if err := c.End(ctx, 0); !errors.Is(err, shard.ErrUnknownShard) {
		t.Fatalf("a second End: %v", err)
	}
}

// Do runs on the handler's goroutine after the events queued before it.
func TestClusterDoRunsAfterTheEventsBefore(t *testing.T) {
	srv := newFake(t, gatewaytest.Options{EventRate: 300})
	rec := newRecorder()
	var handled atomic.Int64
	block := make(chan struct{})
	c := newCluster(t, shard.ClusterConfig{QueueSize: 256, Observe: rec.observe, Handler: func(ev shard.Event) error {
		if handled.Add(1) == 10 {
			<-block // events queue up behind the handler meanwhile
		}
		return rec.handle(ev)
	}})
	cfg := baseConfig(t, srv, rec, 0, 1)
	cfg.Dispatch, cfg.Observe = nil, nil
	if err := c.Add(cfg); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Queued() < 5 {
		if time.Now().After(deadline) {
			t.Fatal("no events queued behind the blocked handler")
		}
		time.Sleep(time.Millisecond)
	}
	queued := int64(c.Queued()) // all of them are before the Do below
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	at := make(chan int64, 1)
	done := make(chan error, 1)
	go func() { done <- c.Do(ctx, func() { at <- handled.Load() }) }()
	close(block)
	if got := <-at; got < 10+queued {
		t.Fatalf("Do ran after %d events; %d were queued before it", got, 10+queued)
	}
	// Do returns once fn has run; waited for here, before the deferred cancel ends
	// its context (which would race with its return and fail it now and then).
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
