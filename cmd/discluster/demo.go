package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/discluster/discluster/internal/proccluster"
)

const demoToken = "fake-token"

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run a fake Discord and a cluster of agents on this machine, and watch it survive kills",
		Description: "Starts the fake Discord and --nodes agents as child processes of this binary, on loopback, each\n" +
			"with its own data dir under a temporary folder, prints the commands to try (kill -9 a PID, kill -STOP\n" +
			"it, drain a node), and shows a live view until Ctrl-C, which stops every child and removes the folder.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "nodes", Value: 3, Usage: "agents to start"},
			&cli.IntFlag{Name: "shards", Value: 16, Usage: "shards"},
			&cli.IntFlag{Name: "max-concurrency", Value: 2, Usage: "identify buckets"},
			&cli.DurationFlag{Name: "identify-window", Value: time.Second, Usage: "one identify per bucket per window (Discord's is 5s)"},
			&cli.Float64Flag{Name: "event-rate", Value: 2, Usage: "MESSAGE_CREATE events per second per shard"},
			&cli.DurationFlag{Name: "interval", Value: time.Second, Usage: "how often the live view redraws"},
			&cli.BoolFlag{Name: "keep", Usage: "keep the temporary folder (logs, data dirs, event files)"},
		},
		Action: runDemo,
	}
}

// demoChild is one process the demo started, and the ports it shows.
type demoChild struct {
	*proccluster.Child
	ports map[string]int
}

func runDemo(c *cli.Context) error {
	if c.Args().Present() {
		return fmt.Errorf("demo takes no arguments, got %q", c.Args().Slice())
	}
	nodes, shards := c.Int("nodes"), c.Int("shards")
	switch {
	case nodes < 1 || nodes > 9:
		return fmt.Errorf("--nodes %d: between 1 and 9 on one machine", nodes)
	case shards < 1 || shards > 4096:
		return fmt.Errorf("--shards %d: between 1 and 4096", shards)
	case c.Int("max-concurrency") < 1:
		return fmt.Errorf("--max-concurrency %d: at least 1", c.Int("max-concurrency"))
	case c.Duration("identify-window") < 10*time.Millisecond:
		return fmt.Errorf("--identify-window %v: at least 10ms", c.Duration("identify-window"))
	case c.Float64("event-rate") < 0:
		return fmt.Errorf("--event-rate must not be negative")
	case c.Duration("interval") < 100*time.Millisecond:
		return fmt.Errorf("--interval %v: at least 100ms", c.Duration("interval"))
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cannot find this binary to start the children: %w", err)
	}
	dir, err := os.MkdirTemp("", "discluster-demo-")
	if err != nil {
		return err
	}
	// A closed terminal or a lost SSH session (SIGHUP) ends the demo as Ctrl-C does:
	// its children and its folder go with it.
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	out := c.App.Writer

	var group proccluster.Group
	var children []demoChild
	defer func() {
		if err := group.Stop(); err != nil {
			fmt.Fprintf(c.App.ErrWriter, "demo: %v\n", err)
		}
		if c.Bool("keep") {
			fmt.Fprintf(out, "\nstopped; logs and data kept in %s\n", dir)
		} else {
			os.RemoveAll(dir)
			fmt.Fprintf(out, "\nstopped every child and removed %s\n", dir)
		}
	}()

	start := func(name, logPath string, ports map[string]int, args ...string) (*proccluster.Child, error) {
		ch, err := group.Start(proccluster.Spec{Name: name, Path: exe, Args: args, Env: []string{"DISCORD_TOKEN=" + demoToken},
			LogFile: logPath})
		if err != nil {
			return nil, err
		}
		children = append(children, demoChild{ch, ports})
		return ch, nil
	}
	ports, err := proccluster.FreePorts(1 + 3*nodes)
	if err != nil {
		return err
	}
	loop := proccluster.Loopback
	fakeAddr := loop(ports[0])
	window := c.Duration("identify-window").String()
	fake, err := start("fake-discord", filepath.Join(dir, "fake-discord.log"), map[string]int{"http": ports[0]},
		"fake-discord", "--addr", fakeAddr, "--shards", strconv.Itoa(shards), "--token", demoToken,
		"--max-concurrency", strconv.Itoa(c.Int("max-concurrency")), "--identify-window", window,
		"--event-rate", strconv.FormatFloat(c.Float64("event-rate"), 'f', -1, 64), "--heartbeat-interval", "5s")
	if err != nil {
		return err
	}
	if err := fake.WaitHTTP(ctx, "http://"+fakeAddr+proccluster.FakeStatsPath, 15*time.Second); err != nil {
		return fmt.Errorf("the fake Discord did not start (see %s): %w", fake.LogFile(), err)
	}
	var httpAddrs []string
	for i := range nodes {
		name := fmt.Sprintf("node-%d", i+1)
		p := map[string]int{"gossip": ports[1+3*i], "cluster": ports[2+3*i], "http": ports[3+3*i]}
		ndir := filepath.Join(dir, name)
		if err := os.MkdirAll(ndir, 0o700); err != nil {
			return err
		}
		args := []string{"agent", "--exit-with-parent", "--name", name, "--data-dir", filepath.Join(ndir, "data"),
			"--gossip-addr", loop(p["gossip"]), "--cluster-addr", loop(p["cluster"]), "--http-addr", loop(p["http"]),
			"--join", loop(ports[1]), "--bootstrap-expect", strconv.Itoa(nodes),
			"--shards", strconv.Itoa(shards), "--max-concurrency", strconv.Itoa(c.Int("max-concurrency")),
			"--identify-window", window, "--lease", "3s", "--checkpoint-interval", "500ms", "--timing", "fast",
			"--api-base", "http://" + fakeAddr + "/api/v10", "--sink", "file:" + filepath.Join(ndir, "events.ndjson"), "--http-insecure-loopback"}
		if _, err := start(name, filepath.Join(ndir, "agent.log"), p, args...); err != nil {
			return err
		}
		httpAddrs = append(httpAddrs, loop(p["http"]))
	}

	prog := "discluster"
	if strings.Contains(exe, "go-build") {
		prog = "go run ./cmd/discluster"
	}
	intro := func(w io.Writer) {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PROCESS\tPID\tGOSSIP\tCLUSTER\tHTTP\tRUNNING\tLOG")
		for _, ch := range children {
			state := "yes"
			if !ch.Running() {
				state = "EXITED"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", ch.Name(), ch.PID(), port(ch.ports, "gossip"),
				port(ch.ports, "cluster"), port(ch.ports, "http"), state, ch.LogFile())
		}
		tw.Flush()
		// Three different nodes where there are three: a killed one cannot be paused.
		agents := children[1:]
		pick := func(i int) demoChild { return agents[min(i, len(agents)-1)] }
		crash, pause, drain := pick(1), pick(2), pick(0)
		fmt.Fprintf(w, "\ntry, in another terminal:\n")
		tw = tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
		fmt.Fprintf(tw, "  %s status --addr %s\tthe cluster as one agent sees it\n", prog, httpAddrs[0])
		fmt.Fprintf(tw, "  open http://%s/ui/\tthe web view in a browser: every shard live, drains\n", httpAddrs[0])
		if crash.Running() {
			fmt.Fprintf(tw, "  kill -9 %d\tcrash %s: its shards resume on the others\n", crash.PID(), crash.Name())
		}
		if pause.Running() {
			fmt.Fprintf(tw, "  kill -STOP %d; sleep 10; kill -CONT %d\tpause %s: it suspends, and never reruns a moved shard\n", pause.PID(), pause.PID(), pause.Name())
		}
		fmt.Fprintf(tw, "  %s drain %s --addr %s\thand its shards off, exactly once (--cancel to undo)\n", prog, drain.Name(), httpAddrs[0])
		fmt.Fprintf(tw, "  curl -s http://%s/fake/stats\tthe fake Discord's counters\n", fakeAddr)
		tw.Flush()
		for _, ch := range agents {
			if !ch.Running() {
				// Started by hand it would not outlive its terminal's stdin anyway.
				args := slices.DeleteFunc(slices.Clone(ch.Args()), func(a string) bool { return a == "--exit-with-parent" })
				fmt.Fprintf(w, "\n%s exited; to start it again with its data dir:\n  DISCORD_TOKEN=%s %s %s\n", ch.Name(), demoToken, exe, strings.Join(args, " "))
			}
		}
		fmt.Fprintf(w, "\ndata, logs and delivered events: %s\n", dir)
		fmt.Fprintf(w, "a demo: the agents take drains from loopback without an API token (--http-insecure-loopback), and gossip and Raft are neither encrypted nor authenticated; see the README's Security section for a real cluster\n\n")
	}
	intro(out)
	return watch(ctx, out, httpAddrs, "", c.Duration("interval"), intro)
}

func port(m map[string]int, k string) string {
	if p, ok := m[k]; ok {
		return strconv.Itoa(p)
	}
	return "-"
}
