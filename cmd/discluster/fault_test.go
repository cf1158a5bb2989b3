package main

// Fault tests of the promise "no shard ever runs twice", on real processes: a paused
// leader, agents that disagree on the lease, and a seeded chaos run.

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/discluster/discluster/internal/certs"
	"github.com/discluster/discluster/internal/proccluster"
	"github.com/discluster/discluster/node/api"
)

// maxLive fails the test when the fake ever saw two live connections for a shard.
func (e *e2e) maxLive(when string) {
	e.t.Helper()
	for id, s := range e.mustStats().Shards {
		if s.MaxLive > 1 {
			e.t.Errorf("%s: shard %d had %d live connections at once", when, id, s.MaxLive)
		}
	}
}

// pause stops a for d, then continues it. The pause is the fault under test, so
// its length is the point, not a wait for a condition.
func (e *e2e) pause(a *agentProc, d time.Duration) {
	e.t.Helper()
	sendSignal(e.t, a.Child, syscall.SIGSTOP)
	timer := time.NewTimer(d)
	defer timer.Stop()
	<-timer.C
	sendSignal(e.t, a.Child, syscall.SIGCONT)
}

// leaseBack waits until a holds a lease again.
func (e *e2e) leaseBack(a *agentProc, d time.Duration) {
	e.t.Helper()
	e.waitFor(d, a.name+" holding a lease again", func() error {
		st, err := e.status(a)
		if err != nil {
			return err
		}
		if !st.Lease.Held {
			return fmt.Errorf("no lease: %s", st.Lease.Reason)
		}
		return nil
	})
}

// A leader paused for longer than its lease is replaced; its shards resume elsewhere.
// When it continues, it must not renew its own lease on a stale view, nor re-identify
// the shards Discord closed under it: three times in a row, with events flowing, no
// shard has two live connections and no shard identifies again.
func TestE2ELeaderPausedPastItsLease(t *testing.T) {
	e := newE2E(t, 12)
	e.startAgents(3)
	e.allReady(60*time.Second, e.nodes...)
	identifies := e.mustStats().Identifies
	const lease = 3 * time.Second // startAgents' --lease
	for round := range 3 {
		l := e.leader(e.nodes...)
		rest := e.others(l)
		t.Logf("round %d: pausing the leader %s for %v", round+1, l.name, lease+3*time.Second)
		sendSignal(t, l.Child, syscall.SIGSTOP)
		paused := time.Now()
		e.leader(rest...)
		e.allReady(40*time.Second, rest...)
		if left := lease + 3*time.Second - time.Since(paused); left > 0 {
			timer := time.NewTimer(left)
			<-timer.C
		}
		sendSignal(t, l.Child, syscall.SIGCONT)
		e.leaseBack(l, 30*time.Second)
		e.allReady(60*time.Second, e.nodes...)
		e.maxLive(fmt.Sprintf("round %d", round+1))
		if st := e.mustStats(); st.Identifies != identifies || st.IdentifyViolations != 0 {
			t.Fatalf("round %d: identifies %d→%d, violations %d: every move should have resumed", round+1, identifies, st.Identifies, st.IdentifyViolations)
		}
	}
	dups := e.checkEvents(false)
	t.Logf("no seq lost; %d events delivered twice (replayed since a checkpoint)", dups)
}

// The lease is one cluster-wide value. Agents started with a longer --lease than the
// cluster's follow the cluster's and say so; paused for longer than the cluster's
// lease (shorter than their own flag), such an agent must not keep or re-identify
// shards that moved while it was stopped.
func TestE2EAgentsFollowTheClustersLease(t *testing.T) {
	e := newE2E(t, 9)
	first := e.addAgent(1) // the cluster's lease: 3s, from its --lease
	e.waitFor(30*time.Second, "the cluster configured", func() error {
		st, err := e.status(first)
		if err != nil {
			return err
		}
		if st.Config == nil {
			return fmt.Errorf("no configuration yet")
		}
		return nil
	})
	e.addAgent(1, "--lease", "10s")
	e.addAgent(1, "--lease", "10s")
	e.allReady(60*time.Second, e.nodes...)
	st, err := e.status(first)
	if err != nil {
		t.Fatal(err)
	}
	if st.Config.Lease != 3*time.Second {
		t.Fatalf("the cluster's lease is %v, want the first agent's 3s", st.Config.Lease)
	}
	var victim *agentProc
	for _, a := range e.nodes[1:] {
		if a.name != st.Leader {
			victim = a
		}
	}
	e.waitFor(10*time.Second, victim.name+" saying it follows the cluster's lease", func() error {
		if !strings.Contains(victim.Output(), "--lease differs from the cluster's lease") {
			return fmt.Errorf("no warning in its log")
		}
		return nil
	})
	vs, err := e.status(victim)
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(vs.Lease.Until); left > 3*time.Second+500*time.Millisecond {
		t.Fatalf("%s holds a lease for %v more: it times its lease by its own flag, not the cluster's", victim.name, left)
	}
	identifies := e.mustStats().Identifies

	t.Logf("pausing %s (--lease 10s, cluster's 3s)", victim.name)
	sendSignal(t, victim.Child, syscall.SIGSTOP)
	paused := time.Now()
	rest := e.others(victim)
	e.allReady(40*time.Second, rest...)
	// Continue it well inside its own flag's 10 s: the old lease would still hold.
	if left := 6*time.Second - time.Since(paused); left > 0 {
		timer := time.NewTimer(left)
		<-timer.C
	}
	sendSignal(t, victim.Child, syscall.SIGCONT)
	e.leaseBack(victim, 30*time.Second)
	e.allReady(60*time.Second, e.nodes...)
	e.maxLive("after the pause")
	if st := e.mustStats(); st.Identifies != identifies {
		t.Errorf("identifies %d→%d: every move should have resumed", identifies, st.Identifies)
	}
	e.checkEvents(false)
}

var (
	chaosEvents = flag.Int("chaos.events", 8, "faults in TestE2EChaos (200 for the long run the README quotes); a step recovers an agent or faults one")
	chaosSeed   = flag.Uint64("chaos.seed", 1, "seed of TestE2EChaos's fault sequence: the same seed, the same faults")
)

// chaosAgent is an agent and what the chaos run did to it.
type chaosAgent struct {
	*agentProc
	down string // "", "killed", "paused", "terminated"
}

// A seeded sequence of SIGKILLs, SIGSTOP…SIGCONTs and SIGTERM…restarts over five
// agents, never more than two down at once, then quiet. Whatever the sequence, the
// fake never saw two live connections for a shard, no identify broke the window,
// every shard resumed rather than identified, and no seq was lost; duplicates are
// counted (events replayed since a checkpoint after a kill).
func TestE2EChaos(t *testing.T) {
	e := newE2E(t, 20)
	e.startAgents(5)
	e.allReady(90*time.Second, e.nodes...)
	start := e.mustStats()
	rng := rand.New(rand.NewPCG(*chaosSeed, 0))
	agents := make([]*chaosAgent, len(e.nodes))
	for i, a := range e.nodes {
		agents[i] = &chaosAgent{agentProc: a}
	}
	// A restarted agent joins every other, so that it finds the cluster whoever is down.
	restart := func(a *chaosAgent) {
		args := slices.Clone(a.argsBase)
		for _, o := range agents {
			if o != a {
				args = append(args, "--join", o.gossip)
			}
		}
		a.Child = e.start(a.name, args...)
		a.down = ""
	}
	recoverAgent := func(a *chaosAgent) {
		t.Logf("  %s back (was %s)", a.name, a.down)
		switch a.down {
		case "paused":
			sendSignal(t, a.Child, syscall.SIGCONT)
			a.down = ""
		default:
			restart(a)
		}
	}
	counts := map[string]int{}
	for i := range *chaosEvents {
		var up, down []*chaosAgent
		for _, a := range agents {
			if a.down == "" {
				up = append(up, a)
			} else {
				down = append(down, a)
			}
		}
		if len(down) == 2 || len(down) > 0 && rng.IntN(3) == 0 {
			recoverAgent(down[rng.IntN(len(down))])
		} else {
			a := up[rng.IntN(len(up))]
			switch f := rng.IntN(3); f {
			case 0:
				sendSignal(t, a.Child, syscall.SIGKILL)
				exited(t, a.Child, 30*time.Second)
				a.down = "killed"
			case 1:
				sendSignal(t, a.Child, syscall.SIGSTOP)
				a.down = "paused"
			case 2:
				sendSignal(t, a.Child, syscall.SIGTERM)
				if !a.Wait(60 * time.Second) {
					t.Fatalf("%s still running 60s after SIGTERM", a.name)
				}
				a.down = "terminated"
			}
			counts[a.down]++
			t.Logf("step %d: %s %s", i+1, a.name, a.down)
		}
		// The gap between faults is part of the sequence: from no time for the
		// cluster to settle to more than a lease.
		timer := time.NewTimer(time.Duration(200+rng.IntN(4000)) * time.Millisecond)
		<-timer.C
	}
	for _, a := range agents {
		if a.down != "" {
			recoverAgent(a)
		}
	}
	e.allReady(120*time.Second, e.nodes...)
	st := e.mustStats()
	e.maxLive("after the chaos")
	if st.IdentifyViolations != 0 {
		t.Errorf("%d identify violations", st.IdentifyViolations)
	}
	if st.Identifies != start.Identifies {
		t.Errorf("identifies %d→%d: every move should have resumed", start.Identifies, st.Identifies)
	}
	dups := e.checkEvents(false)
	t.Logf("seed %d, %d steps (faults: %v): %d resumes, %d identifies after the cold start, 0 violations, no seq lost, %d duplicates of %d events",
		*chaosSeed, *chaosEvents, counts, st.Resumes-start.Resumes, st.Identifies-start.Identifies, dups, st.EventsSent)
}

// Stopping the whole cluster: SIGTERM to every agent at once. With nowhere to hand
// off, each stops its shards resumably, writes their final positions if a quorum is
// still there, and exits 0 within seconds; started again, every shard RESUMEs (no
// session start) and no seq is lost.
func TestE2EStopTheWholeCluster(t *testing.T) {
	e := newE2E(t, 9)
	e.startAgents(3)
	e.allReady(60*time.Second, e.nodes...)
	identifies := e.mustStats().Identifies
	start := time.Now()
	for _, a := range e.nodes {
		sendSignal(t, a.Child, syscall.SIGTERM)
	}
	for _, a := range e.nodes {
		if !a.Wait(20 * time.Second) {
			t.Fatalf("%s still running %v after SIGTERM to every agent", a.name, time.Since(start).Round(time.Millisecond))
		}
		if err := a.Err(); err != nil {
			t.Errorf("%s exited with %v after SIGTERM", a.name, err)
		}
	}
	took := time.Since(start)
	t.Logf("every agent exited %v after SIGTERM", took.Round(time.Millisecond))
	if st := e.mustStats(); st.Shards[0].Live != 0 {
		t.Fatalf("a shard is still connected after every agent exited: %+v", st.Shards[0])
	}
	for _, a := range e.nodes {
		e.restart(a)
	}
	e.allReady(60*time.Second, e.nodes...)
	if got := e.mustStats().Identifies; got != identifies {
		t.Errorf("identifies %d→%d: a shard was not resumed after the restart", identifies, got)
	}
	e.maxLive("a whole-cluster stop and start")
	e.checkEvents(false)
}

// A damaged data dir is refused with one line that names the file, says what is
// wrong and what to do, and a non-zero exit: no SIGBUS, no bbolt panic, no silent
// start from nothing.
func TestE2EDamagedDataDirIsRefused(t *testing.T) {
	e := newE2E(t, 2)
	ports, err := proccluster.FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	agent := func(dir string) []string {
		return []string{"agent", "--name", "solo", "--data-dir", dir,
			"--gossip-addr", loop(ports[0]), "--cluster-addr", loop(ports[1]), "--http-addr", loop(ports[2]),
			"--shards", "2", "--identify-window", "100ms", "--lease", "3s", "--timing", "fast",
			"--api-base", "http://" + e.fakeA + "/api/v10", "--sink", "none"}
	}
	good := filepath.Join(e.dir, "good")
	a := &agentProc{name: "solo", http: loop(ports[2])}
	a.Child = e.start("solo", agent(good)...)
	e.waitFor(30*time.Second, "the agent leading with its shards assigned", func() error {
		st, err := e.status(a)
		if err != nil || st.Leader != "solo" || len(st.Shards) != 2 || st.Shards[1].Node != "solo" {
			return fmt.Errorf("%v %+v", err, st.Shards)
		}
		return nil
	})
	sendSignal(t, a.Child, syscall.SIGTERM)
	exited(t, a.Child, 30*time.Second)

	db := filepath.Join("raft", "raft.db")
	for _, tc := range []struct {
		name, want string
		damage     func(path string) error
	}{
		{"truncated", "truncated", func(p string) error {
			fi, err := os.Stat(p)
			if err != nil {
				return err
			}
			return os.Truncate(p, fi.Size()/2)
		}},
		{"random bytes in a page", "consistency check", func(p string) error {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			junk := make([]byte, 3*os.Getpagesize())
			crand.Read(junk)
			_, err = f.WriteAt(junk, 2*int64(os.Getpagesize())+1)
			return err
		}},
		{"emptied", "empty", func(p string) error { return os.Truncate(p, 0) }},
		{"removed", "empty or missing", os.Remove},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(e.dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.CopyFS(dir, os.DirFS(good)); err != nil {
				t.Fatal(err)
			}
			if err := tc.damage(filepath.Join(dir, db)); err != nil {
				t.Fatal(err)
			}
			c := e.start("solo", agent(dir)...)
			if !c.Wait(20 * time.Second) {
				t.Fatal("the agent runs on a damaged data dir")
			}
			var ee *exec.ExitError
			if !errors.As(c.Err(), &ee) || ee.ExitCode() == 0 {
				t.Fatalf("exit %v, want non-zero", c.Err())
			}
			out := c.Output()
			for _, want := range []string{tc.want, "Move the data dir away", dir} {
				if !strings.Contains(out, want) {
					t.Errorf("the error does not say %q:\n%s", want, c.Tail(2000))
				}
			}
			for _, bad := range []string{"panic", "SIGBUS", "SIGSEGV", "goroutine "} {
				if strings.Contains(out, bad) {
					t.Errorf("the agent died with %q instead of an error:\n%s", bad, c.Tail(3000))
				}
			}
		})
	}
}

// The bot token never leaves the process that holds it: after a cluster's life (a
// drain, a kill, a restart), it is in no log, no sink file, no file of any data dir
// (Raft's log and snapshots, the identity, gossip's snapshot) and no API answer.
func TestE2ETokenNeverLeaves(t *testing.T) {
	e := newE2E(t, 6)
	e.startAgents(3)
	e.allReady(60*time.Second, e.nodes...)
	drained, killed := e.nodes[1], e.nodes[2]
	if _, err := api.NewClient(e.nodes[0].http).Drain(context.Background(), drained.name); err != nil {
		t.Fatal(err)
	}
	e.waitFor(30*time.Second, "the drained node empty", func() error {
		st, err := e.status(e.nodes[0])
		if err != nil {
			return err
		}
		for _, m := range st.Members {
			if m.ID == drained.name && m.Shards > 0 {
				return fmt.Errorf("%s holds %d", m.ID, m.Shards)
			}
		}
		return nil
	})
	sendSignal(t, killed.Child, syscall.SIGKILL)
	exited(t, killed.Child, 30*time.Second)
	e.restart(killed)
	if err := api.NewClient(e.nodes[0].http).Undrain(context.Background(), drained.name); err != nil {
		t.Fatal(err)
	}
	e.allReady(60*time.Second, e.nodes...)

	var answers []string
	for _, a := range e.nodes {
		for _, path := range []string{"/v1/status", "/v1/status?all=true", "/healthz"} {
			b, err := api.NewClient(a.http).Do(context.Background(), http.MethodGet, path)
			if err != nil {
				t.Fatal(err)
			}
			answers = append(answers, a.name+path+": "+string(b))
		}
	}
	for _, ans := range answers {
		if strings.Contains(ans, e2eToken) {
			t.Errorf("an API answer holds the bot token: %.200s", ans)
		}
	}
	files := 0
	err := filepath.WalkDir(e.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(b, []byte(e2eToken)) {
			t.Errorf("%s holds the bot token", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 10 {
		t.Fatalf("looked at only %d files under %s", files, e.dir)
	}
	t.Logf("no token in %d files, %d API answers and every process's output", files, len(answers))
}

// The API's auth, as an operator meets it: with a token set, status and drain send
// it from DISCLUSTER_HTTP_TOKEN, and a drain without it is refused with the way to
// fix it; without a token, a drain from loopback is refused unless the agent was
// started with --http-insecure-loopback; an agent whose API is not on loopback
// will not start without a token.
func TestE2EAPIAuth(t *testing.T) {
	e := newE2E(t, 2)
	ports, err := proccluster.FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	const apiToken = "api-token-for-the-e2e-test"
	args := func(http string) []string {
		return []string{"agent", "--name", "solo", "--data-dir", filepath.Join(e.dir, "solo"),
			"--gossip-addr", loop(ports[0]), "--cluster-addr", loop(ports[1]), "--http-addr", http,
			"--shards", "2", "--identify-window", "100ms", "--lease", "3s", "--timing", "fast",
			"--api-base", "http://" + e.fakeA + "/api/v10", "--sink", "none"}
	}
	// Not loopback, no token: refused before anything is bound, saying why. (Run
	// directly: the harness hands children loopback addresses only, and this one
	// never binds its address.)
	exposed := exec.Command(e.bin, append(args("0.0.0.0:"+strconv.Itoa(ports[2])), "--check")...)
	exposed.Env = append(os.Environ(), "DISCORD_TOKEN="+e2eToken)
	if out, err := exposed.CombinedOutput(); err == nil || !strings.Contains(string(out), "is not loopback") || !strings.Contains(string(out), "--http-token-file") {
		t.Fatalf("an agent with its API on 0.0.0.0 and no token: exit %v\n%s", err, out)
	}

	// A token on loopback.
	tokenFile := filepath.Join(e.dir, "api-token")
	if err := os.WriteFile(tokenFile, []byte(apiToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	http := loop(ports[2])
	a := &agentProc{name: "solo", http: http}
	a.Child = e.start("solo", append(args(http), "--http-token-file", tokenFile)...)
	e.waitFor(30*time.Second, "the agent leading", func() error {
		st, err := e.status(a) // reads on loopback need no token
		if err != nil || st.Leader != "solo" {
			return fmt.Errorf("%v %q", err, st.Leader)
		}
		return nil
	})
	run := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(e.bin, args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run(nil, "drain", "solo", "--addr", http)
	if err == nil || !strings.Contains(out, "needs the agent's API token") {
		t.Fatalf("a drain without the token: %v\n%s", err, out)
	}
	out, err = run([]string{"DISCLUSTER_HTTP_TOKEN=wrong"}, "drain", "solo", "--addr", http)
	if err == nil || !strings.Contains(out, "needs the agent's API token") {
		t.Fatalf("a drain with a wrong token: %v\n%s", err, out)
	}
	out, err = run([]string{"DISCLUSTER_HTTP_TOKEN=" + apiToken}, "drain", "solo", "--addr", http)
	if err != nil || !strings.Contains(out, "solo") {
		t.Fatalf("a drain with the token: %v\n%s", err, out)
	}
	if out, err = run(nil, "drain", "--cancel", "solo", "--addr", http, "--http-token-file", tokenFile); err != nil {
		t.Fatalf("a cancel with --http-token-file: %v\n%s", err, out)
	}
	if strings.Contains(a.Output(), apiToken) {
		t.Error("the agent printed its API token")
	}
	sendSignal(t, a.Child, syscall.SIGTERM)
	exited(t, a.Child, 30*time.Second)

	// No token, no --http-insecure-loopback: loopback may read, not write.
	a.Child = e.start("solo", args(http)...)
	e.waitFor(30*time.Second, "the agent back", func() error {
		_, err := e.status(a)
		return err
	})
	out, err = run(nil, "drain", "solo", "--addr", http)
	if err == nil || !strings.Contains(out, "--http-insecure-loopback") {
		t.Fatalf("a drain of an agent without a token: %v\n%s", err, out)
	}
}

// Mutual TLS on the cluster port, with certificates made by `discluster tls`: the
// cluster forms and fails over over TLS; a certificate renewed on disk is picked up
// on SIGHUP; an agent with a certificate of another CA gets no lease and no shard,
// and the others refuse it at the handshake. n2 also serves its API over HTTPS
// (--http-tls) with that certificate: `status` reaches it with the CA, and without
// it, or over plain HTTP, is told what to pass.
func TestE2EMutualTLS(t *testing.T) {
	e := newE2E(t, 6)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(e.bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("discluster %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	pki, other := filepath.Join(e.dir, "pki"), filepath.Join(e.dir, "other-pki")
	for _, d := range []string{pki, other} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		run("tls", "ca", "--dir", d)
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		run("tls", "cert", n, "--dir", pki, "--ip", "127.0.0.1")
	}
	run("tls", "cert", "n4", "--dir", other)
	tlsArgs := func(dir, name string) []string {
		return []string{"--tls-ca", filepath.Join(dir, "discluster-ca.pem"), "--tls-cert", filepath.Join(dir, name+".pem"),
			"--tls-key", filepath.Join(dir, name+"-key.pem")}
	}
	e.startAgentsWith(3, func(i int) []string {
		args := tlsArgs(pki, fmt.Sprintf("n%d", i+1))
		if i == 1 {
			args = append(args, "--http-tls")
		}
		return args
	})
	e.allReady(60*time.Second, e.nodes...) // through n1's plain API

	// Renew n2's certificate on disk and SIGHUP it.
	for _, f := range []string{"n2.pem", "n2-key.pem"} {
		os.Remove(filepath.Join(pki, f))
	}
	run("tls", "cert", "n2", "--dir", pki, "--ip", "127.0.0.1")
	sendSignal(t, e.nodes[1].Child, syscall.SIGHUP)
	e.waitFor(10*time.Second, "n2 reloading its certificate", func() error {
		if !strings.Contains(e.nodes[1].Output(), "certificate reloaded") {
			return errors.New("not yet")
		}
		return nil
	})
	checkHTTPTLS(t, e, e.nodes[1], filepath.Join(pki, "discluster-ca.pem"), filepath.Join(pki, "n2.pem"))

	// A stranger: a certificate of another CA.
	rogue := e.addAgent(3, tlsArgs(other, "n4")...)
	e.waitFor(30*time.Second, "the leader keeping the stranger out of Raft", func() error {
		if !strings.Contains(e.nodes[0].Output()+e.nodes[1].Output()+e.nodes[2].Output(), "not adding node to raft") {
			return errors.New("not yet")
		}
		return nil
	})
	leader := e.leader(e.nodes[:3]...)
	lst, err := e.status(leader)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range lst.Members {
		if m.ID == "n4" && m.Raft != "" {
			t.Fatalf("the stranger is a Raft %s", m.Raft)
		}
	}
	st, err := e.status(rogue)
	if err != nil {
		t.Fatal(err)
	}
	if st.Lease.Held {
		t.Fatalf("the stranger holds a lease: %+v", st.Lease)
	}
	sendSignal(t, rogue.Child, syscall.SIGKILL)
	exited(t, rogue.Child, 30*time.Second)

	// A failover, over TLS, after the reload.
	sendSignal(t, e.nodes[2].Child, syscall.SIGKILL)
	exited(t, e.nodes[2].Child, 30*time.Second)
	e.allReady(60*time.Second, e.nodes[0], e.nodes[1])
	e.maxLive("a TLS cluster with a stranger and a failover")
	e.checkEvents(false)
}

// checkHTTPTLS checks a's API over HTTPS (--http-tls): it presents the certificate
// in certFile (the renewed one, after a SIGHUP); `discluster status` verifies it
// against the CA in caFile, given by flag or by the agent's own environment
// variables, though the certificate does not name the role's address; without the
// CA, or over plain HTTP, status fails and says what to pass.
func checkHTTPTLS(t *testing.T, e *e2e, a *agentProc, caFile, certFile string) {
	t.Helper()
	status := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(e.bin, append([]string{"status"}, args...)...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	addr := "https://" + a.http
	if out, err := status(nil, "--http-addr", addr, "--tls-ca", caFile); err != nil || !strings.Contains(out, "seen from "+a.name) {
		t.Fatalf("status over HTTPS with --tls-ca: %v\n%s", err, out)
	}
	if out, err := status([]string{"DISCLUSTER_HTTP_TLS=true", "DISCLUSTER_TLS_CA=" + caFile}, "--addr", a.http); err != nil || !strings.Contains(out, "seen from "+a.name) {
		t.Fatalf("status over HTTPS with DISCLUSTER_HTTP_TLS and DISCLUSTER_TLS_CA: %v\n%s", err, out)
	}
	if out, err := status(nil, "--addr", addr); err == nil || !strings.Contains(out, "pass the cluster CA with --tls-ca") {
		t.Fatalf("status over HTTPS without the CA: %v, want it to say --tls-ca\n%s", err, out)
	}
	if out, err := status(nil, "--addr", a.http); err == nil || !strings.Contains(out, "serves HTTPS") {
		t.Fatalf("status over plain HTTP to an HTTPS API: %v, want it to say https://\n%s", err, out)
	}

	trust, err := certs.APIClient(caFile)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", a.http, trust)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pemCert, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(pemCert); b == nil || !bytes.Equal(conn.ConnectionState().PeerCertificates[0].Raw, b.Bytes) {
		t.Fatalf("%s's API does not present %s", a.name, certFile)
	}
}
