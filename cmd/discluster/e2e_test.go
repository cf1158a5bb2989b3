package main

// End-to-end tests: the real binary, as processes, killed, paused and terminated.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/discluster/discluster/internal/proccluster"
	"github.com/discluster/discluster/internal/testlock"
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/shard/gatewaytest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds the discluster binary once per test run.
func binary(t *testing.T) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the end-to-end tests signal processes the Linux way")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "discluster-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "discluster")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

type e2e struct {
	t     *testing.T
	bin   string
	dir   string
	fake  *proccluster.Child
	fakeA string
	nodes []*agentProc
	// procs are the processes of the binary, which the test stops whatever happens.
	procs proccluster.Group
}

type agentProc struct {
	*proccluster.Child
	name     string
	http     string
	gossip   string
	events   string
	dataDir  string
	argsBase []string
}

func newE2E(t *testing.T, shards int) *e2e { return newE2EFake(t, shards) }

// newE2EFake is newE2E with fakeArgs added to (and, being later, overriding) the
// fake's flags.
func newE2EFake(t *testing.T, shards int, fakeArgs ...string) *e2e {
	t.Helper()
	testlock.Cluster(t)
	e := &e2e{t: t, bin: binary(t), dir: t.TempDir()}
	t.Cleanup(func() {
		if err := e.procs.Stop(); err != nil {
			t.Error(err)
		}
		// Whatever the test did, no process printed the bot token.
		for _, p := range e.procs.Children() {
			if strings.Contains(p.Output(), e2eToken) {
				t.Errorf("%s printed the bot token", p.Name())
			}
		}
		if t.Failed() {
			for _, p := range e.procs.Children() {
				t.Logf("--- %s output (last 3000 bytes):\n%s", p.Name(), p.Tail(3000))
			}
		}
	})
	ports, err := proccluster.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	e.fakeA = loop(ports[0])
	// Half the agents' identify window and a long heartbeat grace: the fake measures
	// arrivals, and on a loaded CI machine an IDENTIFY or a heartbeat can reach it
	// 100 ms late without any rule having been broken.
	args := []string{"fake-discord", "--addr", e.fakeA, "--shards", strconv.Itoa(shards), "--token", e2eToken,
		"--identify-window", "50ms", "--heartbeat-interval", "2s", "--heartbeat-timeout", "5s", "--event-rate", "20"}
	e.fake = e.start("fake", append(args, fakeArgs...)...)
	if err := e.fake.WaitHTTP(context.Background(), "http://"+e.fakeA+proccluster.FakeStatsPath, 15*time.Second); err != nil {
		t.Fatalf("the fake not up: %v", err)
	}
	return e
}

var loop = proccluster.Loopback

// e2eToken is the bot token of every end-to-end cluster: long and unlike any other
// text, so that finding it anywhere (a log, a file, an answer) is a leak.
const e2eToken = "e2e-bot-token-9c1b2d4e7f3a-NEVER-PRINTED"

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// start starts the binary with args, its output kept to show if the test fails.
func (e *e2e) start(name string, args ...string) *proccluster.Child {
	e.t.Helper()
	p, err := e.procs.Start(proccluster.Spec{Name: name, Path: e.bin, Args: args, Env: []string{"DISCORD_TOKEN=" + e2eToken}})
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// exited waits up to d for p, which was told to exit, and fails the test if it runs on.
func exited(t *testing.T, p *proccluster.Child, d time.Duration) {
	t.Helper()
	if !p.Wait(d) {
		t.Fatalf("%s still running %v after it was told to exit", p.Name(), d)
	}
}

// startAgents starts n agents with bootstrap-expect n.
func (e *e2e) startAgents(n int) { e.startAgentsWith(n, nil) }

// startAgentsWith starts n agents with bootstrap-expect n; extra, when set, gives
// the flags that agent i adds to (and, being later, overrides) the common ones.
func (e *e2e) startAgentsWith(n int, extra func(i int) []string) {
	for i := range n {
		var more []string
		if extra != nil {
			more = extra(i)
		}
		e.addAgent(n, more...)
	}
}

// addAgent starts one more agent, n<k> for the k-th, joining the first.
func (e *e2e) addAgent(expect int, extra ...string) *agentProc {
	e.t.Helper()
	ports, err := proccluster.FreePorts(3)
	if err != nil {
		e.t.Fatal(err)
	}
	name := fmt.Sprintf("n%d", len(e.nodes)+1)
	a := &agentProc{name: name, gossip: loop(ports[0]), http: loop(ports[2]),
		dataDir: filepath.Join(e.dir, name), events: filepath.Join(e.dir, name+".ndjson")}
	join := a.gossip
	if len(e.nodes) > 0 {
		join = e.nodes[0].gossip
	}
	a.argsBase = []string{"agent", "--name", name, "--data-dir", a.dataDir,
		"--gossip-addr", a.gossip, "--cluster-addr", loop(ports[1]), "--http-addr", a.http,
		"--join", join, "--bootstrap-expect", strconv.Itoa(expect), "--shards", "auto",
		"--identify-window", "100ms", "--lease", "3s", "--checkpoint-interval", "200ms", "--timing", "fast",
		"--api-base", "http://" + e.fakeA + "/api/v10", "--sink", "file:" + a.events, "--log-level", "info", "--http-insecure-loopback"}
	a.argsBase = append(a.argsBase, extra...)
	a.Child = e.start(name, a.argsBase...)
	e.nodes = append(e.nodes, a)
	return a
}

// restart starts a stopped agent again with its data dir and ports.
func (e *e2e) restart(a *agentProc) {
	a.Child = e.start(a.name, a.argsBase...)
}

func (e *e2e) waitFor(d time.Duration, what string, cond func() error) {
	e.t.Helper()
	if err := proccluster.Poll(context.Background(), d, 50*time.Millisecond, cond); err != nil {
		e.t.Fatalf("after %v, still not %s: %v", d, what, err)
	}
}

func (e *e2e) stats() (gatewaytest.Stats, error) {
	var st gatewaytest.Stats
	return st, proccluster.FakeStats(context.Background(), e.fakeA, &st)
}

func (e *e2e) mustStats() gatewaytest.Stats {
	e.t.Helper()
	st, err := e.stats()
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// status runs `discluster status --json` against a, as a user would.
func (e *e2e) status(a *agentProc) (api.Status, error) {
	var st api.Status
	out, err := exec.Command(e.bin, "status", "--json", "--addr", a.http).Output()
	if err != nil {
		return st, fmt.Errorf("status via %s: %v", a.name, err)
	}
	return st, json.Unmarshal(out, &st)
}

// allReady waits until every shard is ready on the given agents, spread ±1, with one
// live connection each at the fake and a checkpoint in the replicated state.
func (e *e2e) allReady(d time.Duration, on ...*agentProc) api.Status {
	e.t.Helper()
	var last api.Status
	e.waitFor(d, "every shard ready", func() error {
		st, err := e.status(on[0])
		if err != nil {
			return err
		}
		if st.Config == nil {
			return errors.New("no config yet")
		}
		names := make([]string, len(on))
		for i, a := range on {
			names[i] = a.name
		}
		if err := proccluster.ReadyAndSpread(st, names); err != nil {
			return err
		}
		fs, err := e.stats()
		if err != nil {
			return err
		}
		for id := range st.Config.TotalShards {
			if l := fs.Shards[id].Live; l != 1 {
				return fmt.Errorf("shard %d: %d live connections", id, l)
			}
		}
		last = st
		return nil
	})
	return last
}

func (e *e2e) leader(among ...*agentProc) *agentProc {
	e.t.Helper()
	var l *agentProc
	e.waitFor(30*time.Second, "a leader", func() error {
		st, err := e.status(among[0])
		if err != nil {
			return err
		}
		for _, a := range among {
			if a.name == st.Leader {
				l = a
				return nil
			}
		}
		return fmt.Errorf("leader %q", st.Leader)
	})
	return l
}

func (e *e2e) others(not *agentProc) []*agentProc {
	var out []*agentProc
	for _, a := range e.nodes {
		if a != not {
			out = append(out, a)
		}
	}
	return out
}

// checkEvents reads every agent's sink file and compares it with what the fake sent:
// no seq lost in any session, and, when exactlyOnce, none delivered twice.
func (e *e2e) checkEvents(exactlyOnce bool) (dups int) {
	e.t.Helper()
	seen := map[string]map[int64]int{}
	for _, a := range e.nodes {
		f, err := os.Open(a.events)
		if err != nil {
			e.t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var l struct {
				Session string `json:"session"`
				Seq     int64  `json:"seq"`
			}
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				continue // a line cut short by SIGKILL
			}
			if seen[l.Session] == nil {
				seen[l.Session] = map[int64]int{}
			}
			seen[l.Session][l.Seq]++
		}
		f.Close()
	}
	st := e.mustStats()
	for sid, ss := range st.Sessions {
		got := seen[sid]
		var top int64
		for s := range got {
			top = max(top, s)
		}
		for s := ss.FirstSeq; s <= top; s++ {
			switch n := got[s]; {
			case n == 0:
				e.t.Errorf("session of shard %d: seq %d lost (delivered up to %d)", ss.ShardID, s, top)
			case n > 1:
				dups += n - 1
				if exactlyOnce {
					e.t.Errorf("session of shard %d: seq %d delivered %d times", ss.ShardID, s, n)
				}
			}
		}
	}
	return dups
}

func sendSignal(t *testing.T, p *proccluster.Child, sig syscall.Signal) {
	t.Helper()
	if err := p.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

func TestE2EKillRestartAndKillTheLeader(t *testing.T) {
	e := newE2E(t, 9)
	e.startAgents(3)
	e.allReady(60*time.Second, e.nodes...)
	identifies := e.mustStats().Identifies
	leader := e.leader(e.nodes...)

	victim := e.others(leader)[0]
	sendSignal(t, victim.Child, syscall.SIGKILL)
	exited(t, victim.Child, 30*time.Second)
	e.allReady(30*time.Second, e.others(victim)...)
	if st := e.mustStats(); st.Identifies != identifies || st.Resumes < 3 {
		t.Fatalf("after SIGKILL: identifies %d→%d, resumes %d: the shards should have resumed", identifies, st.Identifies, st.Resumes)
	}

	e.restart(victim)
	e.allReady(60*time.Second, e.nodes...)

	leader = e.leader(e.nodes...)
	sendSignal(t, leader.Child, syscall.SIGKILL)
	exited(t, leader.Child, 30*time.Second)
	rest := e.others(leader)
	e.leader(rest...)
	e.allReady(30*time.Second, rest...)
	if st := e.mustStats(); st.Identifies != identifies || st.IdentifyViolations != 0 {
		t.Fatalf("after killing the leader: identifies %d→%d, violations %d", identifies, st.Identifies, st.IdentifyViolations)
	}
	dups := e.checkEvents(false)
	t.Logf("no seq lost; %d events delivered twice (replayed since a checkpoint)", dups)
}

func TestE2ETermHandsOffThenPauseIsFenced(t *testing.T) {
	e := newE2E(t, 9)
	// Four, so that after one leaves, pausing another still leaves a majority.
	e.startAgents(4)
	e.allReady(60*time.Second, e.nodes...)
	identifies := e.mustStats().Identifies

	// SIGTERM: a planned handoff, exactly once, and exit 0.
	leaver := e.others(e.leader(e.nodes...))[0]
	sendSignal(t, leaver.Child, syscall.SIGTERM)
	if !leaver.Wait(60 * time.Second) {
		t.Fatal("agent still running 60s after SIGTERM")
	}
	if err := leaver.Err(); err != nil {
		t.Fatalf("agent exited with %v after SIGTERM", err)
	}
	rest := e.others(leaver)
	e.allReady(30*time.Second, rest...)
	if dups := e.checkEvents(true); dups != 0 {
		t.Fatalf("%d duplicates in a SIGTERM handoff", dups)
	}
	for id, s := range e.mustStats().Shards {
		if s.MaxLive > 1 {
			t.Errorf("shard %d had %d live connections during the handoff", id, s.MaxLive)
		}
	}

	// SIGSTOP: the others move its shards; after SIGCONT it must not reconnect them.
	paused := e.others(e.leader(rest...))
	paused = slices.DeleteFunc(paused, func(a *agentProc) bool { return a == leaver })
	p := paused[0]
	sendSignal(t, p.Child, syscall.SIGSTOP)
	running := slices.DeleteFunc(slices.Clone(rest), func(a *agentProc) bool { return a == p })
	e.allReady(40*time.Second, running...)
	sendSignal(t, p.Child, syscall.SIGCONT)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st := e.mustStats()
		for id, s := range st.Shards {
			if s.Live > 1 {
				t.Fatalf("after SIGCONT shard %d has %d live connections", id, s.Live)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.leaseBack(p, 30*time.Second)
	e.allReady(60*time.Second, rest...)
	if st := e.mustStats(); st.Identifies != identifies {
		t.Errorf("identifies %d→%d", identifies, st.Identifies)
	}
	e.checkEvents(false)
}

func TestE2EBadInvocations(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	run := func(env []string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), env...)
		cmd.SysProcAttr = proccluster.SysProcAttr()
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	ports, err := proccluster.FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	local := []string{"--gossip-addr", loop(ports[0]), "--cluster-addr", loop(ports[1]), "--http-addr", loop(ports[2]), "--timing", "fast", "--lease", "3s", "--shards", "2"}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"missing token", []string{"DISCORD_TOKEN="}, []string{"agent", "--data-dir", dir}, "no bot token"},
		{"bad flag value", []string{"DISCORD_TOKEN=t"}, append([]string{"agent", "--data-dir", dir, "--voters", "0"}, local...), "--voters"},
		{"unknown flag", nil, []string{"agent", "--shrads", "3"}, "shrads"},
		{"unresolvable join", []string{"DISCORD_TOKEN=t"}, append([]string{"agent", "--data-dir", dir, "--join", "no-such-host.invalid"}, local...), "cannot resolve"},
		{"unreachable join", []string{"DISCORD_TOKEN=t"}, append([]string{"agent", "--data-dir", filepath.Join(dir, "j"), "--join", "127.0.0.1:1", "--join-timeout", "2s", "--api-base", "http://127.0.0.1:1/api"}, local...), "could not join"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(tc.env, tc.args...)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("exit %v, want non-zero; output:\n%s", err, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Fatalf("output does not say %q:\n%s", tc.want, out)
			}
		})
	}
}

func TestE2EDataDirOfAnotherCluster(t *testing.T) {
	e := newE2E(t, 2)
	ports, err := proccluster.FreePorts(6)
	if err != nil {
		t.Fatal(err)
	}
	agent := func(name string, p []int, extra ...string) []string {
		return append([]string{"agent", "--name", name, "--data-dir", filepath.Join(e.dir, name),
			"--gossip-addr", loop(p[0]), "--cluster-addr", loop(p[1]), "--http-addr", loop(p[2]),
			"--shards", "2", "--identify-window", "100ms", "--lease", "3s", "--timing", "fast",
			"--api-base", "http://" + e.fakeA + "/api/v10", "--sink", "none"}, extra...)
	}
	a := &agentProc{name: "a", http: loop(ports[2])}
	a.Child = e.start("a", agent("a", ports[0:3])...)
	b := &agentProc{name: "b", http: loop(ports[5])}
	b.Child = e.start("b", agent("b", ports[3:6])...)
	for _, x := range []*agentProc{a, b} {
		e.waitFor(30*time.Second, x.name+" bootstrapped", func() error {
			st, err := e.status(x)
			if err != nil || st.Cluster == "" || st.Leader != x.name {
				return fmt.Errorf("%v %+v", err, st.Cluster)
			}
			return nil
		})
	}
	// b's data dir belongs to b's cluster: told to join a's, it must refuse and exit.
	sendSignal(t, b.Child, syscall.SIGKILL)
	exited(t, b.Child, 30*time.Second)
	b.Child = e.start("b", agent("b", ports[3:6], "--join", loop(ports[0]))...)
	if !b.Wait(30 * time.Second) {
		t.Fatal("an agent of another cluster joined and kept running")
	}
	var ee *exec.ExitError
	if !errors.As(b.Err(), &ee) || ee.ExitCode() == 0 {
		t.Fatalf("exit %v, want non-zero", b.Err())
	}
	if out := b.Output(); !strings.Contains(out, "never merge") || !strings.Contains(out, "empty --data-dir") {
		t.Fatalf("the error does not say what to do:\n%s", b.Tail(2000))
	}
}

// demoPIDs reads the children's PIDs from the demo's process table.
func demoPIDs(out string) []int {
	var pids []int
	inTable := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "PROCESS":
			inTable = true
			continue
		case len(f) == 0:
			inTable = false
		}
		if inTable && len(f) > 2 {
			if pid, err := strconv.Atoi(f[1]); err == nil && !slices.Contains(pids, pid) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestE2EDemo(t *testing.T) {
	testlock.Cluster(t)
	for _, how := range []syscall.Signal{syscall.SIGINT, syscall.SIGHUP, syscall.SIGKILL} {
		t.Run(how.String(), func(t *testing.T) {
			e := &e2e{t: t, bin: binary(t)}
			t.Cleanup(func() {
				if err := e.procs.Stop(); err != nil {
					t.Error(err)
				}
			})
			// The demo's folder under the test's own: a SIGKILLed demo cannot remove
			// it, and the test's cleanup does.
			tmp := t.TempDir()
			d, err := e.procs.Start(proccluster.Spec{Name: "demo", Path: e.bin, Env: []string{"DISCORD_TOKEN=tok", "TMPDIR=" + tmp},
				Args: []string{"demo", "--nodes", "3", "--shards", "4", "--identify-window", "100ms", "--interval", "300ms"}})
			if err != nil {
				t.Fatal(err)
			}
			out := d.Output
			e.waitFor(60*time.Second, "the demo's cluster ready", func() error {
				if !strings.Contains(out(), "4/4 shards ready") {
					return errors.New("not yet")
				}
				return nil
			})
			pids := demoPIDs(out())
			if len(pids) != 4 {
				t.Fatalf("found PIDs %v in the demo's output, want 4", pids)
			}
			for _, want := range []string{"kill -9 ", "kill -STOP ", "status --addr 127.0.0.1:", "open http://127.0.0.1:", "drain node-", "data, logs and delivered events: " + tmp} {
				if !strings.Contains(out(), want) {
					t.Errorf("the demo does not suggest %q", want)
				}
			}
			if k, s := suggestedPID(out(), "kill -9 "), suggestedPID(out(), "kill -STOP "); k == s {
				t.Errorf("the demo suggests to kill and to pause the same process %d", k)
			}
			if how == syscall.SIGINT {
				// Do as it says: kill a node, then run the command it prints to start it
				// again; the node comes back with its data dir.
				if err := syscall.Kill(suggestedPID(out(), "kill -9 "), syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				var line string
				e.waitFor(30*time.Second, "the demo printing how to start the killed node again", func() error {
					_, after, ok := strings.Cut(out(), "exited; to start it again with its data dir:\n")
					if !ok {
						return errors.New("not yet")
					}
					line = strings.TrimSpace(strings.SplitN(after, "\n", 2)[0])
					return nil
				})
				f := strings.Fields(line)
				if len(f) < 3 || !strings.HasPrefix(f[0], "DISCORD_TOKEN=") || f[1] != e.bin {
					t.Fatalf("the restart command %q is not DISCORD_TOKEN=... %s agent ...", line, e.bin)
				}
				again, err := e.procs.Start(proccluster.Spec{Name: "restarted", Path: f[1], Args: f[2:], Env: []string{f[0]}})
				if err != nil {
					t.Fatal(err)
				}
				httpAddr := f[slices.Index(f, "--http-addr")+1]
				if _, err := again.WaitAPI(context.Background(), httpAddr, 30*time.Second); err != nil {
					t.Fatalf("the node started by the demo's command: %v", err)
				}
				e.waitFor(30*time.Second, "the restarted node back in the cluster with shards", func() error {
					st, err := api.NewClient(httpAddr).Status(context.Background())
					if err != nil {
						return err
					}
					for _, m := range st.Members {
						if m.HTTP == httpAddr && m.State == "alive" && m.Shards > 0 {
							return nil
						}
					}
					return fmt.Errorf("members %+v", st.Members)
				})
			}
			sendSignal(t, d, how)
			if !d.Wait(30 * time.Second) {
				t.Fatal("demo still running 30s after the signal")
			}
			e.waitFor(10*time.Second, "every child gone", func() error {
				for _, pid := range pids {
					if alive(pid) {
						return fmt.Errorf("child %d still running", pid)
					}
				}
				return nil
			})
			if how != syscall.SIGKILL {
				i := strings.Index(out(), "removed ")
				if i < 0 {
					t.Fatalf("the demo did not say it removed its folder:\n%s", d.Tail(500))
				}
				dir := strings.TrimSpace(strings.SplitN(out()[i+len("removed "):], "\n", 2)[0])
				if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s still exists: %v", dir, err)
				}
			}
		})
	}
}

// smallBench runs one bench scenario at S = 2, once, with a 200 ms identify window,
// and returns its table's rows by their scenario column (and the whole output).
func smallBench(t *testing.T, scenario string) (map[string][]string, []byte) {
	t.Helper()
	testlock.Cluster(t)
	bin := binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "bench", "--sizes", "2", "--runs", "1", "--scenarios", scenario,
		"--identify-window", "200ms")
	cmd.SysProcAttr = proccluster.SysProcAttr()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bench: %v\nstdout:\n%s\nstderr:\n%s", err, out, tail(stderr.String(), 3000))
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(string(out), "\n") {
		f := regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1)
		if len(f) == 7 && f[0] == "2" {
			rows[f[1]] = f
		}
	}
	return rows, out
}

// The bench command runs its whole cycle (cold start, drain, SIGKILL, SIGSTOP) at the
// smallest size and prints a table whose loss and duplicate columns are zero.
func TestE2EBenchSmallRun(t *testing.T) {
	rows, out := smallBench(t, "moves")
	for _, name := range []string{"cold start 6 shards", "drain handoff, per shard", "failover after SIGKILL", "failover after SIGSTOP"} {
		r, ok := rows[name]
		if !ok {
			t.Fatalf("no %q row in:\n%s", name, out)
		}
		if r[5] != "0" {
			t.Errorf("%s: %s seqs lost", name, r[5])
		}
	}
	if d := rows["drain handoff, per shard"][6]; d != "0" {
		t.Errorf("drain: %s duplicates", d)
	}
	if !strings.Contains(rows["cold start 6 shards"][2], "× floor") {
		t.Errorf("cold start row: %q", rows["cold start 6 shards"])
	}
}

func TestBenchRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--runs", "0"}, "--runs 0"},
		{[]string{"bench", "--sizes", "0"}, "--sizes"},
		{[]string{"bench", "--scenarios", "warp"}, `unknown "warp"`},
		{[]string{"bench", "extra"}, "no arguments"},
	} {
		if _, _, err := run(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
}

// suggestedPID is the PID after the first prefix in the demo's output, -1 if none.
func suggestedPID(out, prefix string) int {
	i := strings.Index(out, prefix)
	if i < 0 {
		return -1
	}
	f := strings.Fields(out[i+len(prefix):])
	if len(f) == 0 {
		return -1
	}
	pid, err := strconv.Atoi(strings.TrimSuffix(f[0], ";"))
	if err != nil {
		return -1
	}
	return pid
}
