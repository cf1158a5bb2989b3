package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/discluster/discluster/internal/proccluster"
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/shard"
	"github.com/discluster/discluster/shard/gatewaytest"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure cold start, failover and handoff on this machine against the fake Discord, and print a table",
		Description: "Starts the fake Discord and three agents as child processes (as the demo does), for each size S\n" +
			"(shards per node): a cold start of 3·S shards, --runs drains, SIGKILLs and SIGSTOPs of the node\n" +
			"holding S shards, and SIGKILLs of agents run with --no-session-stealing (the baseline: every moved shard IDENTIFYs at once);\n" +
			"with --scenarios reshard, reshards of the 3·S shards to twice as many while guild events flow.\n" +
			"Every figure is the median of --runs; identify violations and lost seqs are counted in every run.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "check", Usage: "check the flags, print what would run and exit"},
			&cli.IntSliceFlag{Name: "sizes", Value: cli.NewIntSlice(10, 100), Usage: "shards per node (S); 1000 takes minutes"},
			&cli.IntFlag{Name: "runs", Value: 3, Usage: "runs per figure (medians)"},
			&cli.IntFlag{Name: "nodes", Value: 3, Usage: "agents (S shards each)"},
			&cli.StringFlag{Name: "timing", Value: "fast", Usage: "the agents' --timing: fast, or lan for thousands of shards on one starved machine"},
			&cli.IntFlag{Name: "max-concurrency", Value: 16, Usage: "identify buckets"},
			&cli.DurationFlag{Name: "identify-window", Value: time.Second, Usage: "identify window (Discord's is 5s; shorter here so a cold start runs fast)"},
			&cli.DurationFlag{Name: "lease", Value: 3 * time.Second, Usage: "the agents' --lease"},
			&cli.StringSliceFlag{Name: "scenarios", Value: cli.NewStringSlice("moves", "reidentify"),
				Usage: "moves: cold start, drains, SIGKILL and SIGSTOP failovers; reidentify: SIGKILL failovers without session stealing (IDENTIFY at once), the baseline; " +
					"failover: cold start, the CPU at rest and SIGKILL failovers only (the moves scenario's SIGKILL row, without its drains and SIGSTOPs); " +
					"scale: cold start, Raft applies per second at rest and one SIGKILL failover, at 0.1 events/s per shard; " +
					"reshard: a reshard to twice the shards while guild events flow, on a fresh cluster each run: its time against the identify floor, the events it delayed, loss and duplicates"},
			&cli.BoolFlag{Name: "keep", Usage: "keep the temporary folder"},
			&cli.StringFlag{Name: "cpu-profiles", Usage: "write each agent's CPU profile of the 10 s at rest (failover and scale scenarios) to this folder, for go tool pprof"},
		},
		Action: runBench,
	}
}

// benchCluster is a fake Discord and three agents as processes.
type benchCluster struct {
	exe, dir string
	nodes    int
	shards   int
	rate     string // fake events per second per session
	group    proccluster.Group
	fake     *proccluster.Child
	fakeAddr string
	agents   []*benchAgent
	lease    time.Duration
	timing   string
	// noStealing runs the agents with --no-session-stealing: the baseline.
	noStealing bool
	// fakeArgs and agentArgs are added to the fake's and the agents' flags.
	fakeArgs, agentArgs []string
	// events holds every event any status answer carried: a failover's own events
	// scroll out of the recent list quickly.
	events map[eventKey]event.Event
	// profiles is the folder for the agents' CPU profiles at rest ("": none).
	profiles string
}

// eventKey tells events apart: the same event comes in many status answers.
type eventKey struct {
	at         time.Time
	node, what string
	kind       event.Kind
}

type benchAgent struct {
	*proccluster.Child
	name   string
	http   string
	spec   proccluster.Spec // to start it again
	events string
	paused bool // SIGSTOPped: its API would only time out
}

func runBench(c *cli.Context) error {
	if c.Args().Present() {
		return fmt.Errorf("bench takes no arguments, got %q", c.Args().Slice())
	}
	sizes, runs := c.IntSlice("sizes"), c.Int("runs")
	for _, s := range sizes {
		if s < 1 || s > 5000 {
			return fmt.Errorf("--sizes: %d shards per node is outside [1, 5000]", s)
		}
	}
	if runs < 1 || runs > 20 {
		return fmt.Errorf("--runs %d: between 1 and 20", runs)
	}
	if t := c.String("timing"); t != "fast" && t != "lan" {
		return fmt.Errorf("--timing %q: fast or lan", t)
	}
	nodes := c.Int("nodes")
	if nodes < 3 || nodes > 50 {
		return fmt.Errorf("--nodes %d: between 3 and 50 (a failover needs two survivors)", nodes)
	}
	want := map[string]bool{}
	for _, sc := range c.StringSlice("scenarios") {
		if sc != "moves" && sc != "failover" && sc != "reidentify" && sc != "scale" && sc != "reshard" {
			return fmt.Errorf("--scenarios: unknown %q (moves, failover, reidentify, scale, reshard)", sc)
		}
		want[sc] = true
	}
	if c.Bool("check") {
		fmt.Fprintf(c.App.Writer, "bench OK: sizes %v, %d runs, %d nodes, scenarios %v, --timing %s\n", sizes, runs, nodes, c.StringSlice("scenarios"), c.String("timing"))
		return nil
	}
	if d := c.String("cpu-profiles"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("--cpu-profiles: %w", err)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, stop := signalContext(c.Context)
	defer stop()
	out := c.App.Writer
	var rows [][]string
	for _, s := range sizes {
		for _, sc := range []struct {
			key, name string
			run       func(context.Context, *benchCluster, int) ([][]string, error)
			ttl       string
		}{
			{"moves", "handoff and failover", benchMoves, "2m"},
			{"failover", "SIGKILL failover", benchFailover, "2m"},
			{"reidentify", "failover without session stealing", benchNoResume, "2m"},
			{"scale", "scale", benchScale, "2m"},
			{"reshard", "reshard to twice the shards", benchReshard, "2m"},
		} {
			if !want[sc.key] {
				continue
			}
			dir, err := os.MkdirTemp("", "discluster-bench-")
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.ErrWriter, "S=%d: %s (%s)...\n", s, sc.name, dir)
			bc := &benchCluster{exe: exe, dir: dir, nodes: nodes, shards: nodes * s, lease: c.Duration("lease"), rate: "5", timing: c.String("timing"),
				profiles: c.String("cpu-profiles")}
			if sc.key == "scale" {
				bc.rate = "0.1" // thousands of sessions: keep the fake from eating the machine
			}
			if sc.key == "reshard" {
				reshardBench(bc)
			}
			r, err := func() ([][]string, error) {
				defer bc.stop()
				bc.noStealing = sc.key == "reidentify"
				start, err := bc.start(ctx, c.Int("max-concurrency"), c.Duration("identify-window"), sc.ttl)
				if err != nil {
					return nil, err
				}
				rows := [][]string{}
				if sc.key != "reidentify" {
					rows = append(rows, start)
				}
				more, err := sc.run(ctx, bc, runs)
				return append(rows, more...), err
			}()
			if !c.Bool("keep") {
				os.RemoveAll(dir)
			}
			if err != nil {
				return fmt.Errorf("S=%d, %s: %w", s, sc.name, err)
			}
			for _, row := range r {
				rows = append(rows, append([]string{strconv.Itoa(s)}, row...))
			}
		}
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "S\tSCENARIO\tMEDIAN\tSPLIT (medians)\tVIOLATIONS\tLOST SEQ\tDUPLICATES")
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
	fmt.Fprintf(out, "\n%d agents on one machine, --timing %s, --lease %v, max_concurrency %d, identify window %v; runs per figure: %d\n",
		nodes, c.String("timing"), c.Duration("lease"), c.Int("max-concurrency"), c.Duration("identify-window"), runs)
	return nil
}

// start starts the fake and three agents and waits for every shard; it returns the
// cold-start row.
func (bc *benchCluster) start(ctx context.Context, maxConc int, window time.Duration, ttl string) ([]string, error) {
	ports, err := proccluster.FreePorts(1 + 3*bc.nodes)
	if err != nil {
		return nil, err
	}
	loop := proccluster.Loopback
	env := []string{"DISCORD_TOKEN=" + demoToken}
	bc.fakeAddr = loop(ports[0])
	bc.fake, err = bc.group.Start(proccluster.Spec{Name: "fake-discord", Path: bc.exe, Env: env, LogFile: filepath.Join(bc.dir, "fake.log"),
		Args: append([]string{"fake-discord", "--addr", bc.fakeAddr, "--shards", strconv.Itoa(bc.shards), "--token", demoToken,
			"--max-concurrency", strconv.Itoa(maxConc), "--identify-window", window.String(),
			"--event-rate", bc.rate, "--heartbeat-interval", "20s", "--session-ttl", ttl, "--session-start-limit", "1000000"}, bc.fakeArgs...)})
	if err != nil {
		return nil, err
	}
	if err := bc.fake.WaitHTTP(ctx, "http://"+bc.fakeAddr+proccluster.FakeStatsPath, 15*time.Second); err != nil {
		return nil, fmt.Errorf("fake: %w", err)
	}
	for i := range bc.nodes {
		name := fmt.Sprintf("b%d", i+1)
		a := &benchAgent{name: name, http: loop(ports[3+3*i]), events: filepath.Join(bc.dir, name+".ndjson")}
		args := []string{"agent", "--exit-with-parent", "--name", name, "--data-dir", filepath.Join(bc.dir, name),
			"--gossip-addr", loop(ports[1+3*i]), "--cluster-addr", loop(ports[2+3*i]), "--http-addr", a.http,
			"--join", loop(ports[1]), "--bootstrap-expect", "3", "--voters", "3", "--shards", strconv.Itoa(bc.shards),
			"--identify-window", window.String(), "--lease", bc.lease.String(), "--checkpoint-interval", "500ms",
			"--timing", bc.timing, "--max-moves", "1000", "--shards-per-cluster", "100",
			"--api-base", "http://" + bc.fakeAddr + "/api/v10", "--sink", "file:" + a.events, "--log-level", benchLogLevel, "--http-insecure-loopback"}
		if bc.noStealing {
			args = append(args, "--no-session-stealing")
		}
		args = append(args, bc.agentArgs...)
		a.spec = proccluster.Spec{Name: name, Path: bc.exe, Args: args, Env: env, LogFile: filepath.Join(bc.dir, name+".log")}
		if a.Child, err = bc.group.Start(a.spec); err != nil {
			return nil, err
		}
		bc.agents = append(bc.agents, a)
	}
	// An agent that cannot start says why at once, not when the cold start times out.
	for _, a := range bc.agents {
		st, err := a.WaitAPI(ctx, a.http, 2*time.Minute)
		if err != nil {
			return nil, err
		}
		bc.record(st)
	}
	if err := bc.waitReady(ctx, bc.agents, 10*time.Minute); err != nil {
		return nil, err
	}
	allReady := time.Now()
	// From the first leader's start (a leader holds its first grants for a window)
	// to the last IDENTIFY, as the fake saw it arrive; READY follows at once. The
	// events come from every status read while waiting: a node keeps only its
	// latest few, and a big cold start pushes "became leader" out.
	var elected time.Time
	elections := 0
	for _, e := range bc.events {
		if e.Kind == event.LeaderElected {
			elections++
			if elected.IsZero() || e.At.Before(elected) {
				elected = e.At
			}
		}
	}
	if elected.IsZero() {
		return nil, errors.New("cold start: no leader election among the agents' events")
	}
	var last time.Time
	fs := bc.fakeStats()
	for _, ss := range fs.Sessions {
		if ss.Identified.After(last) {
			last = ss.Identified
		}
	}
	rounds := (bc.shards + maxConc - 1) / maxConc
	floor := time.Duration(rounds) * window
	withMargin := floor + time.Duration(rounds-1)*shard.ArrivalMargin(window)
	took := last.Sub(elected)
	split := fmt.Sprintf("%v from the leader's start to the last IDENTIFY; floor ceil(N/C)·window = %v (%.3f × with the %v safety margin per round)",
		took.Round(time.Millisecond), floor, float64(took)/float64(withMargin), shard.ArrivalMargin(window))
	split += fmt.Sprintf("; every shard READY and checkpointed %v after the leader's start", allReady.Sub(elected).Round(100*time.Millisecond))
	if elections > 1 {
		split += fmt.Sprintf("; %d elections", elections)
	}
	return []string{"cold start " + strconv.Itoa(bc.shards) + " shards", fmt.Sprintf("%.3f × floor", float64(took)/float64(floor)),
		split, violations(fs), strconv.Itoa(bc.lostSeqs()), "-"}, nil
}

func (bc *benchCluster) stop() {
	if err := bc.group.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
	}
}

// fakeStats are the fake's counters, zero when it does not answer.
// violations is the VIOLATIONS column: the identify violations the fake called, and
// the IDENTIFYs it could not judge (it read the bucket's previous one late, behind
// later bytes) where there were any.
func violations(fs gatewaytest.Stats) string {
	v := strconv.Itoa(fs.IdentifyViolations)
	if fs.IdentifyUnverified > 0 {
		v += fmt.Sprintf(" (+%d not judged)", fs.IdentifyUnverified)
	}
	return v
}

func (bc *benchCluster) fakeStats() gatewaytest.Stats {
	var st gatewaytest.Stats
	proccluster.FakeStats(context.Background(), bc.fakeAddr, &st)
	return st
}

func (bc *benchCluster) status(ctx context.Context) (api.Status, error) {
	var addrs []string
	for _, a := range bc.agents {
		if a.Running() && !a.paused {
			addrs = append(addrs, a.http)
		}
	}
	st, _, err := fetchStatus(ctx, addrs, "")
	bc.record(st)
	return st, err
}

// record keeps the events of st.
func (bc *benchCluster) record(st api.Status) {
	if bc.events == nil {
		bc.events = make(map[eventKey]event.Event)
	}
	for _, e := range st.Events {
		bc.events[eventKey{e.At, e.Node, e.Subject, e.Kind}] = e
	}
}

// waitReady waits until every shard is ready, checkpointed and live once at the fake,
// spread over on.
func (bc *benchCluster) waitReady(ctx context.Context, on []*benchAgent, limit time.Duration) error {
	// A status answer carries every shard: poll a big cluster less often.
	every := min(20*time.Millisecond+time.Duration(bc.shards)*50*time.Microsecond, 500*time.Millisecond)
	err := proccluster.Poll(ctx, limit, every, func() error { return bc.ready(ctx, on) })
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("not ready after %v: %w", limit, err)
	}
	return err
}

func (bc *benchCluster) ready(ctx context.Context, on []*benchAgent) error {
	st, err := bc.status(ctx)
	if err != nil {
		return err
	}
	if len(st.Shards) != bc.shards {
		return errors.New("no configuration yet")
	}
	names := make([]string, len(on))
	for i, a := range on {
		names[i] = a.name
	}
	if err := proccluster.ReadyAndSpread(st, names); err != nil {
		return err
	}
	fs := bc.fakeStats()
	for id := range bc.shards {
		if fs.Shards[id].Live != 1 {
			return fmt.Errorf("shard %d has %d live connections", id, fs.Shards[id].Live)
		}
	}
	return nil
}

// victim is a running non-leader.
func (bc *benchCluster) victim(ctx context.Context) (*benchAgent, error) {
	st, err := bc.status(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range bc.agents {
		if a.Running() && a.name != st.Leader {
			return a, nil
		}
	}
	return nil, errors.New("no follower")
}

func others(all []*benchAgent, not *benchAgent) []*benchAgent {
	var out []*benchAgent
	for _, a := range all {
		if a != not {
			out = append(out, a)
		}
	}
	return out
}

// failover kills or pauses the victim and measures detection (kill → marked failed),
// fencing (→ reassigned) and reconnection (→ every shard live again elsewhere).
type failoverRun struct {
	total, detect, fence, reconnect time.Duration
	starts                          int // session starts (IDENTIFYs) the failover spent
}

func (bc *benchCluster) failover(ctx context.Context, sig syscall.Signal) (failoverRun, error) {
	v, err := bc.victim(ctx)
	if err != nil {
		return failoverRun{}, err
	}
	st, err := bc.status(ctx)
	if err != nil {
		return failoverRun{}, err
	}
	held := map[int]bool{}
	for _, s := range st.Shards {
		if s.Node == v.name {
			held[s.Shard] = true
		}
	}
	identifies := bc.fakeStats().Identifies
	t0 := time.Now()
	if err := v.Signal(sig); err != nil {
		return failoverRun{}, err
	}
	v.paused = sig == syscall.SIGSTOP
	if err := bc.waitReady(ctx, others(bc.agents, v), 2*time.Minute); err != nil {
		return failoverRun{}, err
	}
	done := bc.lastStarted(held, t0)
	var failed, reassigned time.Time
	for _, e := range bc.events {
		switch {
		case e.At.Before(t0):
		case e.Kind == event.NodeFailed && e.Subject == v.name && (failed.IsZero() || e.At.Before(failed)):
			failed = e.At
		case e.Kind == event.Failover && e.Subject == v.name && (reassigned.IsZero() || e.At.Before(reassigned)):
			reassigned = e.At
		}
	}
	r := failoverRun{total: done.Sub(t0), starts: bc.fakeStats().Identifies - identifies}
	if !failed.IsZero() && !reassigned.IsZero() {
		r.detect, r.fence, r.reconnect = failed.Sub(t0), reassigned.Sub(failed), done.Sub(reassigned)
	}
	// Bring the node back and wait for balance before the next run.
	if sig == syscall.SIGSTOP {
		v.Signal(syscall.SIGCONT)
		v.paused = false
	} else {
		if !v.Wait(time.Minute) {
			return r, fmt.Errorf("%s still running a minute after %v", v.name, sig)
		}
		if v.Child, err = bc.group.Start(v.spec); err != nil {
			return r, err
		}
	}
	return r, bc.waitReady(ctx, bc.agents, 5*time.Minute)
}

// lastStarted is when the last of the given shards was answered RESUMED (or READY,
// when it had to identify) after t0, as the fake saw it; the time now if the fake
// does not tell for one of them. Status polling would add its own interval.
func (bc *benchCluster) lastStarted(shards map[int]bool, t0 time.Time) time.Time {
	now := time.Now()
	at := make(map[int]time.Time, len(shards))
	for _, ss := range bc.fakeStats().Sessions {
		if !shards[ss.ShardID] || !ss.Attached || ss.Ended {
			continue
		}
		t := ss.Resumed
		if ss.Identified.After(t) {
			t = ss.Identified
		}
		if t.After(t0) && t.After(at[ss.ShardID]) {
			at[ss.ShardID] = t
		}
	}
	var last time.Time
	for id := range shards {
		t, ok := at[id]
		if !ok {
			return now
		}
		if t.After(last) {
			last = t
		}
	}
	return last
}

func benchMoves(ctx context.Context, bc *benchCluster, runs int) ([][]string, error) {
	var rows [][]string
	// Drain: a planned handoff of the victim's S shards.
	var per []time.Duration
	dupsBefore := bc.duplicates()
	for range runs {
		v, err := bc.victim(ctx)
		if err != nil {
			return nil, err
		}
		held := bc.shards / bc.nodes
		t0 := time.Now()
		if _, err := api.NewClient(v.http).Drain(ctx, v.name); err != nil {
			return nil, err
		}
		if err := bc.waitReady(ctx, others(bc.agents, v), 2*time.Minute); err != nil {
			return nil, err
		}
		per = append(per, time.Since(t0)/time.Duration(held))
		// Back in: cancelling the drain hands shards back, again by handoff.
		if err := api.NewClient(v.http).Undrain(ctx, v.name); err != nil {
			return nil, err
		}
		if err := bc.waitReady(ctx, bc.agents, 5*time.Minute); err != nil {
			return nil, err
		}
	}
	rows = append(rows, []string{"drain handoff, per shard", median(per).Round(10 * time.Microsecond).String(), "-",
		violations(bc.fakeStats()), strconv.Itoa(bc.lostSeqs()), strconv.Itoa(bc.duplicates() - dupsBefore)})
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGSTOP} {
		rs, err := bc.failovers(ctx, sig, runs)
		if err != nil {
			return nil, err
		}
		rows = append(rows, failoverRow("failover after "+sigName(sig), rs, bc))
	}
	return rows, nil
}

func benchFailover(ctx context.Context, bc *benchCluster, runs int) ([][]string, error) {
	var rows [][]string
	rest, err := bc.atRest(ctx, "failover")
	if err != nil {
		return nil, err
	}
	rows = append(rows, rest...)
	rs, err := bc.failovers(ctx, syscall.SIGKILL, runs)
	if err != nil {
		return nil, err
	}
	return append(rows, failoverRow("failover after SIGKILL", rs, bc)), nil
}

func benchNoResume(ctx context.Context, bc *benchCluster, runs int) ([][]string, error) {
	rs, err := bc.failovers(ctx, syscall.SIGKILL, runs)
	if err != nil {
		return nil, err
	}
	return [][]string{failoverRow("failover after SIGKILL without session stealing (IDENTIFY at once)", rs, bc)}, nil
}

func sigName(s syscall.Signal) string {
	if s == syscall.SIGKILL {
		return "SIGKILL"
	}
	return "SIGSTOP"
}

func failoverRow(name string, rs []failoverRun, bc *benchCluster) []string {
	pick := func(f func(failoverRun) time.Duration) time.Duration {
		var ds []time.Duration
		for _, r := range rs {
			ds = append(ds, f(r))
		}
		return median(ds).Round(time.Millisecond)
	}
	starts := make([]time.Duration, len(rs))
	for i, r := range rs {
		starts[i] = time.Duration(r.starts)
	}
	split := fmt.Sprintf("detect %v + fence %v + reconnect %v; %d session starts",
		pick(func(r failoverRun) time.Duration { return r.detect }),
		pick(func(r failoverRun) time.Duration { return r.fence }),
		pick(func(r failoverRun) time.Duration { return r.reconnect }), int64(median(starts)))
	return []string{name, pick(func(r failoverRun) time.Duration { return r.total }).String(), split,
		violations(bc.fakeStats()), strconv.Itoa(bc.lostSeqs()), "-"}
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// sinkSeqs reads every agent's sink: session → seq → deliveries.
func (bc *benchCluster) sinkSeqs() map[string]map[int64]int {
	seen := map[string]map[int64]int{}
	for _, a := range bc.agents {
		f, err := os.Open(a.events)
		if err != nil {
			continue
		}
		readSink(f, seen)
		f.Close()
	}
	return seen
}

func readSink(r io.Reader, seen map[string]map[int64]int) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var l struct {
			Session string `json:"session"`
			Seq     int64  `json:"seq"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue // a line cut short by SIGKILL
		}
		if seen[l.Session] == nil {
			seen[l.Session] = map[int64]int{}
		}
		seen[l.Session][l.Seq]++
	}
}

// lostSeqs counts the seqs the fake sent that no sink has, below the highest
// delivered one of each session.
func (bc *benchCluster) lostSeqs() int {
	seen := bc.sinkSeqs()
	lost := 0
	for sid, ss := range bc.fakeStats().Sessions {
		got := seen[sid]
		var top int64
		for s := range got {
			top = max(top, s)
		}
		// An ended session's buffer is gone (FirstSeq 0); seqs start at 1.
		for s := max(1, ss.FirstSeq); s <= top; s++ {
			if got[s] == 0 {
				lost++
			}
		}
	}
	return lost
}

func (bc *benchCluster) duplicates() int {
	d := 0
	for _, m := range bc.sinkSeqs() {
		for _, n := range m {
			d += max(0, n-1)
		}
	}
	return d
}

var benchLogLevel = func() string {
	if l := os.Getenv("BENCH_LOG_LEVEL"); l != "" {
		return l
	}
	return "warn"
}()

// benchScale measures a big cluster at rest (Raft applies per second: the
// checkpoints) and one SIGKILL failover in it.
func benchScale(ctx context.Context, bc *benchCluster, runs int) ([][]string, error) {
	st0, err := bc.status(ctx)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	rest, err := bc.atRest(ctx, "scale")
	if err != nil {
		return nil, err
	}
	st1, err := bc.status(ctx)
	if err != nil {
		return nil, err
	}
	rate := float64(st1.Applied-st0.Applied) / time.Since(t0).Seconds()
	rows := [][]string{{"Raft applies per second at rest", fmt.Sprintf("%.1f/s", rate),
		fmt.Sprintf("%d nodes checkpointing every 500ms", bc.nodes), "-", "-", "-"}}
	rows = append(rows, rest...)
	rs, err := bc.failovers(ctx, syscall.SIGKILL, runs)
	if err != nil {
		return nil, err
	}
	return append(rows, failoverRow(fmt.Sprintf("failover after SIGKILL of a node with %d shards", bc.shards/bc.nodes), rs, bc)), nil
}

// atRest waits 10 s with the cluster at rest and returns the CPU row of that window
// (none where /proc cannot be read). With --cpu-profiles, every agent's CPU profile
// of the same window is written there as SCENARIO-SHARDS-AGENT.pprof, and a row
// gives the agents' CPU by component.
func (bc *benchCluster) atRest(ctx context.Context, scenario string) ([][]string, error) {
	cpu0, t0 := bc.cpuTimes(), time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var written []string
	if bc.profiles != "" {
		for _, a := range bc.agents {
			if a.Running() && !a.paused {
				wg.Add(1)
				go func() {
					defer wg.Done()
					path := filepath.Join(bc.profiles, fmt.Sprintf("%s-%d-%s.pprof", scenario, bc.shards, a.name))
					if err := fetchProfile(ctx, a.http, 9*time.Second, path); err != nil {
						fmt.Fprintf(os.Stderr, "bench: no CPU profile of %s: %v\n", a.name, err)
						return
					}
					mu.Lock()
					written = append(written, path)
					mu.Unlock()
				}()
			}
		}
	}
	select {
	case <-time.After(10 * time.Second):
	case <-ctx.Done():
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var rows [][]string
	if row, ok := bc.cpuRow(cpu0, bc.cpuTimes(), time.Since(t0)); ok {
		rows = append(rows, row)
	}
	if len(written) > 0 {
		split, err := cpuByComponent(written)
		if err != nil {
			split = "the profiles could not be read: " + err.Error()
		}
		rows = append(rows, []string{"agents' CPU at rest by component", fmt.Sprintf("%d profiles", len(written)), split, "-", "-", "-"})
	}
	return rows, nil
}

// fetchProfile writes the CPU profile of d from the agent's API at addr (pprof's
// handler, open on the bench agents' loopback API) to path.
func fetchProfile(ctx context.Context, addr string, d time.Duration, path string) error {
	ctx, cancel := context.WithTimeout(ctx, d+20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(d.Seconds())), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// failovers runs failover runs times.
func (bc *benchCluster) failovers(ctx context.Context, sig syscall.Signal, runs int) ([]failoverRun, error) {
	var rs []failoverRun
	for range runs {
		r, err := bc.failover(ctx, sig)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// procCPU is a child's CPU time so far (user + system) and resident memory, read
// from /proc: where there is none (not Linux), bench prints no CPU row.
type procCPU struct {
	cpu time.Duration
	rss int64 // bytes
}

// cpuTimes reads the fake's and every running agent's CPU time, by name.
func (bc *benchCluster) cpuTimes() map[string]procCPU {
	out := map[string]procCPU{}
	read := func(name string, pid int) {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		// Fields after the command's closing parenthesis: utime and stime are the
		// 14th and 15th of the line, in clock ticks (100 a second on Linux).
		i := strings.LastIndexByte(string(stat), ')')
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 22 {
			return
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		rssPages, _ := strconv.ParseInt(f[21], 10, 64)
		out[name] = procCPU{cpu: time.Duration(ut+st) * 10 * time.Millisecond, rss: rssPages * int64(os.Getpagesize())}
	}
	if bc.fake != nil && bc.fake.Running() {
		read("fake", bc.fake.PID())
	}
	for _, a := range bc.agents {
		if a.Running() {
			read(a.name, a.PID())
		}
	}
	return out
}

// cpuRow is the CPU the fake and the agents spent at rest between two readings, in
// cores and per shard, with their resident memory: what one agent per machine needs
// for its shards, measured rather than assumed.
func (bc *benchCluster) cpuRow(before, after map[string]procCPU, elapsed time.Duration) ([]string, bool) {
	fake, ok := after["fake"]
	if !ok || elapsed <= 0 {
		return nil, false
	}
	cores := func(name string) float64 {
		return float64(after[name].cpu-before[name].cpu) / float64(elapsed)
	}
	var agents float64
	var rss int64
	n := 0
	for _, a := range bc.agents {
		if _, ok := after[a.name]; ok {
			agents += cores(a.name)
			rss += after[a.name].rss
			n++
		}
	}
	if n == 0 {
		return nil, false
	}
	perShard := time.Duration(agents / float64(bc.shards) * float64(time.Second))
	split := fmt.Sprintf("agents %.2f cores together (%.3f ms of CPU per shard per second), %.0f MiB RSS each (%.1f KiB per shard); fake %.2f cores, %.0f MiB RSS; %s events/s per shard",
		agents, float64(perShard)/float64(time.Millisecond), float64(rss)/float64(n)/(1<<20), float64(rss)/float64(bc.shards)/1024,
		cores("fake"), float64(fake.rss)/(1<<20), bc.rate)
	return []string{"CPU at rest", fmt.Sprintf("%.2f cores", agents+cores("fake")), split, "-", "-", "-"}, true
}
