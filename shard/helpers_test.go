package shard_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discluster/discluster/shard"
	"github.com/discluster/discluster/shard/gatewaytest"
)

const testToken = "test-token"

// newFake starts a fake Discord with test-sized timings and stops it with the test.
func newFake(t testing.TB, opts gatewaytest.Options) *gatewaytest.Server {
	t.Helper()
	if opts.Token == "" {
		opts.Token = testToken
	}
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = time.Second
	}
	// Clients gate identifies at 100 ms (baseConfig); the fake measures arrivals, so
	// it enforces half that, or a CI machine's scheduler stall between a grant and
	// its IDENTIFY reaching the fake would read as a violation.
	if opts.IdentifyWindow == 0 {
		opts.IdentifyWindow = 50 * time.Millisecond
	}
	// Likewise a heartbeat sent late by a stall must not close the connection;
	// the tests of zombie detection set their own timeout.
	if opts.HeartbeatTimeout == 0 {
		opts.HeartbeatTimeout = 2 * opts.HeartbeatInterval
	}
	if opts.Logger == nil {
		// The fake's warnings (a violation, a close it sent) show up with a failure.
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	srv, err := gatewaytest.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// recorder collects delivered dispatches and lifecycle events.
type recorder struct {
	mu      sync.Mutex
	seqs    map[int][]int64  // by shard, in delivery order
	types   map[string]int   // event type counts
	dBytes  map[int]uint64   // by shard, the bytes of the d delivered
	life    map[int][]string // lifecycle kinds by shard
	changed chan struct{}
}

func newRecorder() *recorder {
	return &recorder{seqs: map[int][]int64{}, types: map[string]int{}, dBytes: map[int]uint64{}, life: map[int][]string{}, changed: make(chan struct{}, 1)}
}

func (r *recorder) Dispatch(_ context.Context, ev shard.Event) error {
	return r.handle(ev)
}

// handle records ev; as a cluster handler it handles every event (returns nil).
func (r *recorder) handle(ev shard.Event) error {
	r.mu.Lock()
	r.seqs[ev.ShardID] = append(r.seqs[ev.ShardID], ev.Seq)
	r.types[ev.Type]++
	r.dBytes[ev.ShardID] += uint64(len(ev.Data))
	r.mu.Unlock()
	r.notify()
	return nil
}

func (r *recorder) observe(l shard.Lifecycle) {
	r.mu.Lock()
	r.life[l.ShardID] = append(r.life[l.ShardID], l.Kind.String())
	r.mu.Unlock()
	r.notify()
}

func (r *recorder) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// dataBytes is the length of every d delivered for a shard, summed.
func (r *recorder) dataBytes(shardID int) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dBytes[shardID]
}

func (r *recorder) delivered(shardID int) []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seqs[shardID])
}

func (r *recorder) lifecycle(shardID int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.life[shardID])
}

func (r *recorder) count(typ string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.types[typ]
}

// waitFor polls cond on every recorder change and at least every 10 ms, until it holds
// or the deadline passes.
func (r *recorder) waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	waitUntil(t, 15*time.Second, what, r.changed, cond)
}

func waitUntil(t testing.TB, timeout time.Duration, what string, wake <-chan struct{}, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-wake:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// awaitFake waits for a condition on the fake's counters.
func awaitFake(t testing.TB, srv *gatewaytest.Server, what string, cond func(gatewaytest.Stats) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Await(ctx, cond); err != nil {
		t.Fatalf("waiting for %s: %v (stats %+v)", what, err, srv.Stats())
	}
}

// checkContiguous asserts seqs is exactly first..last, each once, in order.
func checkContiguous(t testing.TB, seqs []int64, first, last int64) {
	t.Helper()
	if int64(len(seqs)) != last-first+1 {
		t.Fatalf("delivered %d events, want %d (seqs %d..%d): %v", len(seqs), last-first+1, first, last, abbreviate(seqs))
	}
	for i, s := range seqs {
		if s != first+int64(i) {
			t.Fatalf("event %d has seq %d, want %d: %v", i, s, first+int64(i), abbreviate(seqs))
		}
	}
}

func abbreviate(seqs []int64) string {
	if len(seqs) <= 40 {
		return fmt.Sprint(seqs)
	}
	return fmt.Sprint(seqs[:20], "...", seqs[len(seqs)-20:])
}

type testShard struct {
	*shard.Shard
	errc chan error
}

// startShard runs a shard until the test ends.
func startShard(t testing.TB, cfg shard.Config) *testShard {
	t.Helper()
	sh, err := shard.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testShard{Shard: sh, errc: make(chan error, 1)}
	go func() { ts.errc <- sh.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := sh.Stop(ctx); err != nil {
			t.Errorf("stop shard %d: %v", sh.ID(), err)
		}
		select {
		case <-ts.errc:
		case <-ctx.Done():
			t.Errorf("shard %d: Run did not return after Stop", sh.ID())
		}
	})
	return ts
}

// baseConfig is a shard config against srv with test-sized timings.
func baseConfig(t testing.TB, srv *gatewaytest.Server, rec *recorder, id, count int) shard.Config {
	t.Helper()
	gate, err := shard.NewLocalGate(1, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return shard.Config{
		Token:                  testToken,
		ShardID:                id,
		ShardCount:             count,
		Intents:                513,
		GatewayURL:             srv.GatewayURL(),
		APIBase:                srv.APIURL(),
		Gate:                   gate,
		Dispatch:               rec,
		Observe:                rec.observe,
		InvalidSessionDelayMin: 10 * time.Millisecond,
		InvalidSessionDelayMax: 50 * time.Millisecond,
		HandshakeTimeout:       5 * time.Second,
		HelloTimeout:           5 * time.Second,
	}
}

func stateIs(sh *shard.Shard, st shard.State) func() bool {
	return func() bool { return sh.Info().State == st }
}
