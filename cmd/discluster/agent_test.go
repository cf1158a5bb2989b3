package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discluster/discluster/internal/testlock"
	"github.com/discluster/discluster/node"
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/shard/gatewaytest"
)

func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	app := newApp(&out, &errOut)
	err := app.RunContext(ctx, flagsFirst(app, append([]string{"discluster"}, args...)))
	return out.String(), errOut.String(), err
}

func TestAgentRefusesBadInvocations(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty-token")
	os.WriteFile(empty, nil, 0o600)
	for _, tc := range []struct {
		name  string
		token string
		args  []string
		want  string
	}{
		{"no token", "", []string{"--data-dir", dir}, "DISCORD_TOKEN"},
		{"empty token file", "", []string{"--data-dir", dir, "--token-file", empty}, "is empty"},
		{"no data dir", "t", nil, "--data-dir is required"},
		{"bad shards", "t", []string{"--data-dir", dir, "--shards", "many"}, `--shards "many"`},
		{"bad timing", "t", []string{"--data-dir", dir, "--timing", "slow"}, "--timing"},
		{"bad sink", "t", []string{"--data-dir", dir, "--sink", "kafka"}, "--sink"},
		{"bad compression", "t", []string{"--data-dir", dir, "--compression", "gzip"}, "--compression"},
		{"bad address", "t", []string{"--data-dir", dir, "--http-addr", "nowhere"}, "--http-addr"},
		{"lease too short", "t", []string{"--data-dir", dir, "--lease", "1s"}, "--lease"},
		{"lease zero", "t", []string{"--data-dir", dir, "--lease", "0"}, "--lease 0s must be positive"},
		{"identify window negative", "t", []string{"--data-dir", dir, "--identify-window", "-5s"}, "--identify-window -5s must be positive"},
		{"identify window zero", "t", []string{"--data-dir", dir, "--identify-window", "0"}, "--identify-window 0s must be positive"},
		{"checkpoint interval zero", "t", []string{"--data-dir", dir, "--checkpoint-interval", "0"}, "--checkpoint-interval 0s must be positive"},
		{"bad gossip key", "t", []string{"--data-dir", dir, "--encrypt", "c2hvcnQ="}, "--encrypt: a gossip key is base64 of 16, 24 or 32"},
		{"api off loopback without a token", "t", []string{"--data-dir", dir, "--http-addr", "0.0.0.0:7948"}, "is not loopback"},
		{"api over TLS without a certificate", "t", []string{"--data-dir", dir, "--http-tls"}, "--http-tls serves the API with this node's certificate: it needs --tls-ca"},
		{"stray argument", "t", []string{"--data-dir", dir, "extra"}, "no arguments"},
		{"events in lower case", "t", []string{"--data-dir", dir, "--events", "MESSAGE_CREATE,message_update"}, `--events "message_update"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("DISCORD_TOKEN", tc.token)
			_, _, err := run(t, append([]string{"agent"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
			if tc.token != "" && strings.Contains(err.Error(), tc.token+"\"") {
				t.Fatalf("the error shows the token: %v", err)
			}
		})
	}
}

func TestStatusAndDrainNeedAnAgent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	for _, args := range [][]string{{"status", "--addr", addr}, {"drain", "--addr", addr, "node1"}} {
		if _, _, err := run(t, args...); err == nil || !strings.Contains(err.Error(), "cannot reach an agent") {
			t.Errorf("%v: err = %v", args, err)
		}
	}
	missing := filepath.Join(t.TempDir(), "no-ca.pem")
	if _, _, err := run(t, "status", "--addr", "https://"+addr, "--tls-ca", missing); err == nil || !strings.Contains(err.Error(), "--tls-ca") {
		t.Errorf("status with a missing --tls-ca: %v", err)
	}
	if _, _, err := run(t, "drain", "--addr", addr); err == nil || !strings.Contains(err.Error(), "one node name") {
		t.Errorf("drain without a node: %v", err)
	}
}

func TestDrainReportsTheAgentsError(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodDelete {
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(`{"error": "node1 is alive, not draining"}`))
			return
		}
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error": "no member \"ghost\""}`))
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, _, err = run(t, "drain", "--addr", ln.Addr().String(), "ghost")
	if err == nil || !strings.Contains(err.Error(), `no member "ghost"`) {
		t.Fatalf("err = %v", err)
	}
	_, _, err = run(t, "drain", "--cancel", "--addr", ln.Addr().String(), "node1")
	if err == nil || !strings.Contains(err.Error(), "not draining") {
		t.Fatalf("drain --cancel: err = %v", err)
	}
}

func TestRenderStatusFoldsRangesAndMarksTheLeader(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	st := api.Status{
		Node: "a", Cluster: "c1", Leader: "a", Term: 4, Lease: api.Lease{Held: true},
		Config: &api.ShardConfig{TotalShards: 8, MaxConcurrency: 1, Lease: 5 * time.Second, CheckpointInterval: time.Second},
		Budget: &api.Budget{Known: true, Total: 1000, Remaining: 40, Reserve: 50, ResetsAt: now.Add(2 * time.Hour), Low: true},
		Members: []api.MemberStatus{
			{ID: "a", State: "alive", Gossip: "alive", Raft: "voter", Leader: true, Weight: 1, Shards: 5, Lease: &api.Lease{Held: true}},
			{ID: "b", State: "failed", Gossip: "failed", Raft: "voter", Weight: 1, Shards: 2},
		},
		Shards: []api.ShardStatus{
			{Shard: 0, Node: "a", Phase: "assigned", Cluster: 0, State: "ready"},
			{Shard: 1, Node: "a", Phase: "assigned", Cluster: 0, State: "ready"},
			{Shard: 2, Node: "a", Phase: "assigned", Cluster: 0, State: "ready"},
			{Shard: 3, Node: "a", Phase: "assigned", Cluster: 0, State: "resuming"},
			{Shard: 4, Node: "a", Phase: "assigned", Cluster: 1, State: "ready"},
			{Shard: 5, Node: "b", Phase: "revoking", Cluster: 1, State: "unreachable"},
			{Shard: 6, Node: "b", Phase: "revoking", Cluster: 1, State: "unreachable"},
			{Shard: 7, State: "unassigned", Cluster: 1},
		},
	}
	var b bytes.Buffer
	renderStatus(&b, st, now)
	out := b.String()
	for _, want := range []string{
		"leader a", "a *", "0-2", "ready", "resuming", "5-6", "unreachable (revoking)", "(none)", "LOW",
		"40/1000 left", "resets in 2h0m0s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	// Shards of one node and cluster with one state share a line.
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "a ") && strings.Contains(line, " 0 ") && strings.Contains(line, "ready") && !strings.Contains(line, "0-2") {
			t.Errorf("cluster 0's ready shards not folded: %q", line)
		}
	}
	st.Lease = api.Lease{Reason: "no leader: quorum lost?"}
	b.Reset()
	renderStatus(&b, st, now)
	if !strings.Contains(b.String(), "HOLDS NO LEASE") || !strings.Contains(b.String(), "quorum lost?") {
		t.Errorf("a node without a lease must say so and why:\n%s", b.String())
	}
}

func TestFoldRanges(t *testing.T) {
	for _, tc := range []struct {
		in   []int
		want string
	}{
		{nil, ""}, {[]int{3}, "3"}, {[]int{0, 1, 2, 3}, "0-3"}, {[]int{5, 1, 2, 9, 3, 10}, "1-3,5,9-10"}, {[]int{1, 1, 2}, "1-2"},
	} {
		if got := event.FoldRanges(tc.in); got != tc.want {
			t.Errorf("FoldRanges(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestAgentRunsShardsAndLeavesOnSignal(t *testing.T) {
	testlock.Cluster(t)
	fake := startFake(t, 4)
	dir := t.TempDir()
	httpAddr := freeAddr(t)
	t.Setenv("DISCORD_TOKEN", "tok")
	events := filepath.Join(dir, "events.ndjson")
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- newApp(&out, &errOut).RunContext(ctx, []string{"discluster", "agent",
			"--name", "solo", "--data-dir", filepath.Join(dir, "data"), "--gossip-addr", "127.0.0.1:0",
			"--cluster-addr", "127.0.0.1:0", "--http-addr", httpAddr, "--shards", "4", "--max-concurrency", "1",
			"--identify-window", "100ms", "--lease", "3s", "--timing", "fast", "--checkpoint-interval", "200ms",
			"--api-base", fake.APIURL(), "--sink", "file:" + events})
	}()
	exited := false
	defer func() {
		if !exited {
			cancel()
			<-done
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	var status string
	for {
		// Not through run(): urfave/cli writes package-level flags while parsing, so
		// two apps must not parse at once.
		s, err := statusText(httpAddr)
		if err == nil && strings.Count(s, "ready") > 0 && strings.Contains(s, "0-3") {
			status = s
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no agent with 4 ready shards after 30s: %v\n%s\n%s", err, s, errOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(status, "solo *") {
		t.Errorf("status does not mark the leader:\n%s", status)
	}
	cancel() // as SIGTERM: hand off (nowhere to go), checkpoint, leave
	select {
	case err := <-done:
		exited = true
		if err != nil {
			t.Fatalf("agent exited with %v\n%s", err, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not stop within 30s of the signal")
	}
	b, err := os.ReadFile(events)
	if err != nil || !bytes.Contains(b, []byte(`"t":"READY"`)) {
		t.Fatalf("sink file: %v, %.200s", err, b)
	}
	if strings.Contains(errOut.String(), "tok\"") || strings.Contains(errOut.String(), "Bot tok") {
		t.Fatal("the log shows the token")
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startFake(t *testing.T, shards int) *gatewaytest.Server {
	t.Helper()
	srv, err := gatewaytest.NewServer(gatewaytest.Options{
		Token: "tok", Shards: shards, IdentifyWindow: 100 * time.Millisecond,
		HeartbeatInterval: time.Second, EventRate: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func statusText(addr string) (string, error) {
	body, err := api.NewClient(addr).Do(context.Background(), http.MethodGet, "/v1/status")
	if err != nil {
		return "", err
	}
	var st api.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return "", err
	}
	var b bytes.Buffer
	renderStatus(&b, st, time.Now())
	return b.String(), nil
}

func TestWatchRedrawsTheLiveView(t *testing.T) {
	st := api.Status{
		Node: "a", Leader: "a", Lease: api.Lease{Held: true},
		Config:  &api.ShardConfig{TotalShards: 4, MaxConcurrency: 1, IdentifyWindow: time.Second},
		Members: []api.MemberStatus{{ID: "a", State: "alive", Gossip: "alive", Leader: true, Shards: 4}},
		Events:  []event.Event{{At: time.Now(), Node: "a", Kind: event.Failover, Subject: "b", Shards: event.Shards{2, 3}, Duration: 12 * time.Millisecond, Cause: "lease expired"}},
	}
	for i := range 4 {
		state := "ready"
		if i >= 2 {
			state = "identifying"
		}
		st.Shards = append(st.Shards, api.ShardStatus{Shard: i, Node: "a", Phase: "assigned", State: state})
	}
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		json.NewEncoder(w).Encode(st)
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- watch(ctx, &out, []string{"127.0.0.1:1", strings.TrimPrefix(srv.URL, "http://")}, "", 100*time.Millisecond, nil)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for calls.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if calls.Load() < 3 {
		t.Fatalf("%d redraws in 10s", calls.Load())
	}
	for _, want := range []string{"2/4 shards ready", "2 to identify, at most ~2s by the identify schedule", "RECENT", "reassigned 12ms after it failed"} {
		if !strings.Contains(got, want) {
			t.Errorf("live view lacks %q:\n%s", want, got)
		}
	}
}

// While a failed node's shards wait for its lease, the live view says so, and does
// not count them as waiting for identifies.
func TestLiveViewSaysWhatAFailoverWaitsFor(t *testing.T) {
	now := time.Now()
	st := api.Status{
		Node: "a", Leader: "a", Lease: api.Lease{Held: true},
		Config:  &api.ShardConfig{TotalShards: 4, MaxConcurrency: 1, IdentifyWindow: time.Second},
		Members: []api.MemberStatus{{ID: "a", State: "alive", Gossip: "alive", Leader: true, Shards: 2}, {ID: "b", State: "failed", Gossip: "failed", Shards: 2}},
		Fences:  []api.Fence{{Node: "b", Shards: 2, Until: now.Add(2500 * time.Millisecond)}},
	}
	for i := range 4 {
		s := api.ShardStatus{Shard: i, Node: "a", Phase: "assigned", State: "ready", Checkpoint: 10}
		if i >= 2 {
			s.Node, s.Phase, s.State, s.Checkpoint = "b", "revoking", "unreachable", 0
		}
		st.Shards = append(st.Shards, s)
	}
	var b strings.Builder
	renderLive(&b, st, now)
	out := b.String()
	if !strings.Contains(out, "2 shards of b wait for its last lease to run out") || !strings.Contains(out, "(2.5s)") {
		t.Errorf("the live view does not say what the failover waits for:\n%s", out)
	}
	if strings.Contains(out, "identify schedule") {
		t.Errorf("the live view counts fenced shards as identifying:\n%s", out)
	}
}

// Flags may follow a subcommand's arguments, as the demo prints them.
func TestFlagsAfterArguments(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	for _, tc := range []struct{ in, want []string }{
		{[]string{"d", "drain", "node-2", "--addr", "h:1"}, []string{"d", "drain", "--addr", "h:1", "node-2"}},
		{[]string{"d", "drain", "node-2", "--cancel", "--addr=h:1"}, []string{"d", "drain", "--cancel", "--addr=h:1", "node-2"}},
		{[]string{"d", "status", "--json", "--addr", "h:1"}, []string{"d", "status", "--json", "--addr", "h:1"}},
		{[]string{"d", "drain", "--", "-odd-name", "--addr"}, []string{"d", "drain", "--", "-odd-name", "--addr"}},
		{[]string{"d", "nosuch", "x", "--y"}, []string{"d", "nosuch", "x", "--y"}},
	} {
		if got := flagsFirst(app, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("flagsFirst(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// And end to end: the node name after the flags' values, and a flag after it.
	_, _, err := run(t, "drain", "ghost", "--addr", "127.0.0.1:1")
	if err == nil || !strings.Contains(err.Error(), "cannot reach an agent at 127.0.0.1:1") {
		t.Fatalf("drain NODE --addr: %v, want it to try the given address", err)
	}
}

// keygen prints a key the agent takes; keyring refuses two changes at once and a
// malformed key before it calls anything.
func TestKeygenAndKeyringFlags(t *testing.T) {
	out, _, err := run(t, "keygen")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := node.ParseGossipKey(strings.TrimSpace(out)); err != nil {
		t.Fatalf("keygen printed %q: %v", out, err)
	}
	key := strings.TrimSpace(out)
	if _, _, err := run(t, "keyring", "--install", key, "--use", key); err == nil || !strings.Contains(err.Error(), "one of") {
		t.Errorf("two changes at once: %v", err)
	}
	if _, _, err := run(t, "keyring", "--install", "bad"); err == nil || !strings.Contains(err.Error(), "--install") {
		t.Errorf("a bad key: %v", err)
	}
}
