package proccluster

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/discluster/discluster/node/api"
)

func TestFreePortsAreDistinctAndBindable(t *testing.T) {
	ports, err := FreePorts(8)
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 8 {
		t.Fatalf("%d ports, want 8", len(ports))
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Fatalf("ports %v: not distinct and positive", ports)
		}
		seen[p] = true
		l, err := net.Listen("tcp", Loopback(p))
		if err != nil {
			t.Fatalf("port %d of %v is not bindable: %v", p, ports, err)
		}
		l.Close()
	}
	if got := Loopback(80); got != "127.0.0.1:80" {
		t.Errorf("Loopback(80) = %q", got)
	}
}

func sh(t *testing.T) string {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("needs sh")
	}
	p, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	return p
}

// A child that exits before its HTTP API answers ends the wait at once, saying so
// with its output, long before the deadline.
func TestWaitHTTPFailsPromptlyWhenTheChildExits(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec func(Spec) Spec
	}{
		{"in memory", func(s Spec) Spec { return s }},
		{"log file", func(s Spec) Spec { s.LogFile = filepath.Join(t.TempDir(), "boom.log"); return s }},
		{"writer", func(s Spec) Spec { s.Output = &bytes.Buffer{}; return s }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var g Group
			defer g.Stop()
			c, err := g.Start(tc.spec(Spec{Name: "boom", Path: sh(t), Args: []string{"-c", "echo boom; exit 3"}}))
			if err != nil {
				t.Fatal(err)
			}
			ports, err := FreePorts(1)
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			err = c.WaitHTTP(context.Background(), "http://"+Loopback(ports[0])+"/", time.Minute)
			if took := time.Since(t0); took > 10*time.Second {
				t.Errorf("the wait took %v for a child that exited at once", took)
			}
			if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "exit status 3") {
				t.Fatalf("err = %v, want it to say the child exited with status 3 and its output", err)
			}
			var ee *exec.ExitError
			if c.Running() || !errors.As(c.Err(), &ee) || ee.ExitCode() != 3 {
				t.Fatalf("running %v, err %v: want exited with 3", c.Running(), c.Err())
			}
			if !strings.Contains(c.Output(), "boom") || c.Tail(3) != "om\n" {
				t.Errorf("output %q, tail %q", c.Output(), c.Tail(3))
			}
			if w, ok := c.spec.Output.(*bytes.Buffer); ok && w.String() != "boom\n" {
				t.Errorf("the writer got %q", w.String())
			}
		})
	}
}

// A running child whose URL answers ends the wait; one that never answers ends it
// at the deadline; Stop leaves nothing running, even a stopped child.
func TestWaitHTTPAnswerDeadlineAndStop(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable) // any answer counts
	}))
	defer srv.Close()
	var g Group
	c, err := g.Start(Spec{Name: "sleeper", Path: sh(t), Args: []string{"-c", "echo up; exec sleep 60"}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	ctx := context.Background()
	if err := c.WaitHTTP(ctx, srv.URL, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ports, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	err = c.WaitHTTP(ctx, "http://"+Loopback(ports[0])+"/", 300*time.Millisecond)
	if err == nil || errors.Is(err, ErrExited) || time.Since(t0) > 5*time.Second {
		t.Fatalf("err = %v after %v, want a timeout after 300ms", err, time.Since(t0))
	}
	if c.Wait(100*time.Millisecond) || !c.Running() || c.PID() <= 0 {
		t.Fatal("the sleeper is not running")
	}
	if err := c.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := g.Stop(); err != nil {
		t.Fatal(err)
	}
	if c.Running() || len(g.Children()) != 1 {
		t.Fatalf("running %v after Stop; children %d", c.Running(), len(g.Children()))
	}
	if syscall.Kill(c.PID(), 0) == nil {
		t.Errorf("pid %d still exists after Stop", c.PID())
	}
	if err := c.Stop(); err != nil {
		t.Errorf("a second Stop: %v", err)
	}
}

func TestWaitAPIReadsTheStatus(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if calls++; calls < 3 || r.URL.Path != "/v1/status" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte(`{"node":"n1","leader":"n1"}`))
	}))
	defer srv.Close()
	var g Group
	defer g.Stop()
	c, err := g.Start(Spec{Name: "sleeper", Path: sh(t), Args: []string{"-c", "exec sleep 60"}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.WaitAPI(context.Background(), strings.TrimPrefix(srv.URL, "http://"), 10*time.Second)
	if err != nil || st.Node != "n1" {
		t.Fatalf("status %+v, err %v", st, err)
	}
}

func TestStartRefusesAnythingButLoopback(t *testing.T) {
	agent := func(extra ...string) []string {
		return append([]string{"agent", "--api-base", "http://127.0.0.1:1/api/v10", "--gossip-addr", "127.0.0.1:2",
			"--cluster-addr=127.0.0.1:3", "--http-addr", "127.0.0.1:4", "--exit-with-parent"}, extra...)
	}
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{agent(), true},
		{agent("--join", "127.0.0.1:5", "--join", "127.0.0.1"), true},
		{[]string{"fake-discord", "--addr", "127.0.0.1:6", "--shards", "2"}, true},
		{[]string{"status", "--addr", "10.0.0.1:1"}, true}, // not a child that binds or calls Discord
		{[]string{"agent", "--gossip-addr", "127.0.0.1:2", "--cluster-addr", "127.0.0.1:3", "--http-addr", "127.0.0.1:4"}, false},
		{agent("--api-base", "https://discord.com/api/v10"), false},
		{agent("--gateway-url", "wss://gateway.discord.gg"), false},
		{agent("--join", "10.0.0.2:7946"), false},
		{agent("--http-addr", "0.0.0.0:4"), false},
		{[]string{"fake-discord", "--shards", "2"}, false},
		{[]string{"fake-discord", "--addr", ":7080"}, false},
		{agent("--join"), false},
		{agent("--name=n1", "--http-insecure-loopback=false"), true},
		{agent("--join=10.0.0.2:7946"), false},
	} {
		err := checkArgs(tc.args)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v, want ok %v", tc.args, err, tc.ok)
		}
	}
	if _, err := Start(Spec{Name: "real", Path: "/nonexistent", Args: agent("--api-base", "https://discord.com/api")}); err == nil {
		t.Error("Start took an agent for real Discord")
	}
	t.Setenv("DISCLUSTER_GATEWAY_URL", "wss://gateway.discord.gg")
	env, err := childEnv([]string{"DISCORD_TOKEN=tok"})
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, "DISCLUSTER_GATEWAY_URL=") {
			t.Errorf("the child inherits %s", kv)
		}
	}
	if _, err := childEnv([]string{"DISCLUSTER_API_BASE=https://discord.com/api"}); err == nil {
		t.Error("childEnv took DISCLUSTER_API_BASE for real Discord")
	}
}

func TestPoll(t *testing.T) {
	ctx := context.Background()
	n := 0
	if err := Poll(ctx, 10*time.Second, time.Millisecond, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || n != 3 {
		t.Fatalf("err %v after %d calls", err, n)
	}
	t0 := time.Now()
	err := Poll(ctx, 100*time.Millisecond, 10*time.Millisecond, func() error { return errors.New("never") })
	if err == nil || err.Error() != "never" || time.Since(t0) > 5*time.Second {
		t.Fatalf("err %v after %v, want cond's last error at the deadline", err, time.Since(t0))
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := Poll(cctx, time.Minute, time.Millisecond, func() error { return errors.New("x") }); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want canceled", err)
	}
}

func TestFakeStats(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != FakeStatsPath {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"identifies":7}`))
	}))
	defer srv.Close()
	var st struct {
		Identifies int `json:"identifies"`
	}
	if err := FakeStats(context.Background(), strings.TrimPrefix(srv.URL, "http://"), &st); err != nil || st.Identifies != 7 {
		t.Fatalf("stats %+v, err %v", st, err)
	}
}

func shard(id int, node, state, phase string, cp int64) api.ShardStatus {
	return api.ShardStatus{Shard: id, Node: node, State: state, Phase: phase, Checkpoint: cp}
}

func TestReadinessRule(t *testing.T) {
	good := func() api.Status {
		var st api.Status
		for i, n := range []string{"a", "b", "c", "a", "b", "c", "a"} {
			st.Shards = append(st.Shards, shard(i, n, "ready", "assigned", 5))
		}
		return st
	}
	abc := []string{"a", "b", "c"}
	if err := ReadyAndSpread(good(), abc); err != nil {
		t.Fatalf("3/2/2 over a, b, c: %v", err)
	}
	for _, tc := range []struct {
		name  string
		st    func() api.Status
		names []string
		want  string
	}{
		{"resuming", func() api.Status { st := good(); st.Shards[2].State = "resuming"; return st }, abc, "shard 2"},
		{"revoking", func() api.Status { st := good(); st.Shards[1].Phase = "revoking"; return st }, abc, "revoking"},
		{"unassigned", func() api.Status { st := good(); st.Shards[0] = shard(0, "", "unassigned", "", 0); return st }, abc, "shard 0"},
		{"no checkpoint", func() api.Status { st := good(); st.Shards[6].Checkpoint = 0; return st }, abc, "checkpoint 0"},
		{"uneven", func() api.Status { st := good(); st.Shards[1].Node = "a"; return st }, abc, "shards per node"},
		{"on a node not named", good, []string{"a", "b"}, "shards per node"},
		{"a named node empty", good, []string{"a", "b", "c", "d"}, "shards per node"},
	} {
		err := ReadyAndSpread(tc.st(), tc.names)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want it to say %q", tc.name, err, tc.want)
		}
	}
	// Ready alone does not look at the spread.
	st := good()
	st.Shards[1].Node = "a"
	if err := Ready(st); err != nil {
		t.Errorf("Ready: %v", err)
	}
	if err := Spread(api.Status{}, nil); err != nil {
		t.Errorf("no shards on no node: %v", err)
	}
	if err := Spread(good(), nil); err == nil {
		t.Error("shards spread over no node named")
	}
}
