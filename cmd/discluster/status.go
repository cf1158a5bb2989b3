package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/discluster/discluster/internal/certs"
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
)

// httpTokenFileFlag names the file of the agent's API token; DISCLUSTER_HTTP_TOKEN
// holds the token itself. The agent checks it, status and drain send it.
var httpTokenFileFlag = &cli.StringFlag{Name: "http-token-file", Usage: "file holding the API's bearer token (or set DISCLUSTER_HTTP_TOKEN)", EnvVars: env("HTTP_TOKEN_FILE")}

// readHTTPToken is the API token from --http-token-file or DISCLUSTER_HTTP_TOKEN, ""
// when neither is set.
func readHTTPToken(c *cli.Context) (string, error) {
	if f := c.String("http-token-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("--http-token-file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("--http-token-file %s is empty", f)
		}
		return tok, nil
	}
	return strings.TrimSpace(os.Getenv("DISCLUSTER_HTTP_TOKEN")), nil
}

// client is the API client of a status, drain or keyring command: the token, and
// for an agent with --http-tls, HTTPS verified against --tls-ca.
func client(c *cli.Context) (*api.Client, error) {
	tok, err := readHTTPToken(c)
	if err != nil {
		return nil, err
	}
	cl := &api.Client{Addr: c.String("addr"), Token: tok}
	if c.Bool("http-tls") && !strings.Contains(cl.Addr, "://") {
		cl.Addr = "https://" + cl.Addr
	}
	// Without --tls-ca, an https agent is checked against the system's roots, and
	// the client's error says to pass --tls-ca.
	if ca := c.String("tls-ca"); ca != "" && strings.HasPrefix(cl.Addr, "https://") {
		conf, err := certs.APIClient(ca)
		if err != nil {
			return nil, err
		}
		cl.HTTP = api.HTTPS(conf)
	}
	return cl, nil
}

// The flags of every command that calls an agent's API. The environment variables
// are the agent's own, so that one environment serves both.
var (
	addrFlag = &cli.StringFlag{Name: "addr", Aliases: []string{"http-addr"}, Value: "127.0.0.1:" + strconv.Itoa(api.DefaultPort),
		Usage: "HTTP address of any agent: HOST:PORT, or https://HOST:PORT for one with --http-tls", EnvVars: env("HTTP_ADDR")}
	clientTLSFlag = &cli.BoolFlag{Name: "http-tls", Usage: "call the agent over HTTPS, as --addr https://HOST:PORT does", EnvVars: env("HTTP_TLS")}
	clientCAFlag  = &cli.StringFlag{Name: "tls-ca", Usage: "the cluster CA, which an https agent's certificate must chain to", EnvVars: env("TLS_CA")}
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the members, the leader and every shard",
		Flags: []cli.Flag{addrFlag, httpTokenFileFlag, clientTLSFlag, clientCAFlag,
			&cli.BoolFlag{Name: "json", Usage: "print the raw JSON of GET /v1/status"},
			&cli.BoolFlag{Name: "all", Usage: "list members that left too (gossip remembers them for --reap-after)"},
			&cli.BoolFlag{Name: "watch", Usage: "redraw a live view (status, progress, recent moves and failovers) until Ctrl-C"},
			&cli.DurationFlag{Name: "interval", Value: time.Second, Usage: "with --watch: how often to redraw"},
			&cli.DurationFlag{Name: "wait", Usage: "wait up to this long for an agent to answer and every shard to be ready (a cluster just started); exit 1 if they are not"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return fmt.Errorf("status takes no arguments, got %q", c.Args().Slice())
			}
			if c.Bool("watch") {
				if c.Duration("interval") < 100*time.Millisecond {
					return fmt.Errorf("--interval %v: at least 100ms", c.Duration("interval"))
				}
				ctx, stop := signalContext(c.Context)
				defer stop()
				cl, err := client(c)
				if err != nil {
					return err
				}
				// The view moves to the other members it sees when this agent goes away.
				return watchAs(ctx, c.App.Writer, *cl, []string{cl.Addr}, c.Duration("interval"), nil)
			}
			cl, err := client(c)
			if err != nil {
				return err
			}
			path := "/v1/status"
			if c.Bool("all") {
				path += "?all=true"
			}
			body, err := cl.Do(c.Context, http.MethodGet, path)
			if wait := c.Duration("wait"); wait > 0 {
				deadline := time.Now().Add(wait)
				for time.Now().Before(deadline) && (err != nil || !allReady(body)) {
					time.Sleep(250 * time.Millisecond) // a poll: the cluster is the one taking its time
					body, err = cl.Do(c.Context, http.MethodGet, path)
				}
				if err == nil && !allReady(body) {
					err = fmt.Errorf("not every shard ready after --wait %v", wait)
					defer func() { renderStatusBody(c.App.Writer, body) }()
				}
			}
			if err != nil {
				return err
			}
			if c.Bool("json") {
				_, err := c.App.Writer.Write(body)
				return err
			}
			var st api.Status
			if err := json.Unmarshal(body, &st); err != nil {
				return fmt.Errorf("status from %s: %w", cl.Addr, err)
			}
			renderStatus(c.App.Writer, st, time.Now())
			return nil
		},
	}
}

func drainCommand() *cli.Command {
	return &cli.Command{
		Name:      "drain",
		Usage:     "move every shard off a node, each handed off at its exact seq (--cancel: take shards again)",
		ArgsUsage: "NODE",
		Flags: []cli.Flag{addrFlag, httpTokenFileFlag, clientTLSFlag, clientCAFlag, &cli.BoolFlag{Name: "cancel",
			Usage: "end the node's drain: it takes shards again, moved back one handoff at a time"}},
		Action: func(c *cli.Context) error {
			if c.Args().Len() != 1 {
				return fmt.Errorf("drain takes one node name, got %q", c.Args().Slice())
			}
			if c.Bool("cancel") {
				cl, err := client(c)
				if err != nil {
					return err
				}
				if err := cl.Undrain(c.Context, c.Args().First()); err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "%s takes shards again; the balancer moves some back to it one handoff at a time\n", c.Args().First())
				return nil
			}
			cl, err := client(c)
			if err != nil {
				return err
			}
			r, err := cl.Drain(c.Context, c.Args().First())
			if err != nil {
				return err
			}
			switch r.State {
			case "draining":
				fmt.Fprintf(c.App.Writer, "draining %s: its %d shards move to the other nodes; `discluster status` shows them go. The drain holds across restarts until `discluster drain --cancel %s`\n", r.Draining, r.Shards, r.Draining)
			default:
				fmt.Fprintf(c.App.Writer, "%s is %s: marked drained, it takes no shards when it comes back, until `discluster drain --cancel %s`\n", r.Draining, r.State, r.Draining)
			}
			return nil
		},
	}
}

// allReady reports whether a status body shows a configured cluster with every shard
// ready.
func allReady(body []byte) bool {
	var st api.Status
	if json.Unmarshal(body, &st) != nil || st.Config == nil || len(st.Shards) == 0 {
		return false
	}
	for _, s := range st.Shards {
		if s.State != "ready" {
			return false
		}
	}
	return true
}

func renderStatusBody(w io.Writer, body []byte) {
	var st api.Status
	if json.Unmarshal(body, &st) == nil {
		renderStatus(w, st, time.Now())
	}
}

// renderStatus prints members, then shards grouped by node and cluster with their
// ranges folded.
func renderStatus(w io.Writer, st api.Status, now time.Time) {
	leader := st.Leader
	if leader == "" {
		leader = "NONE"
	}
	fmt.Fprintf(w, "cluster %s   leader %s   term %d   seen from %s\n", orDash(st.Cluster), leader, st.Term, st.Node)
	if st.Config != nil {
		fmt.Fprintf(w, "shards %d   max_concurrency %d   lease %v   checkpoint every %v\n", st.Config.TotalShards,
			st.Config.MaxConcurrency, st.Config.Lease, st.Config.CheckpointInterval)
	} else {
		fmt.Fprintln(w, "no shard configuration yet (the leader sets it once elected)")
	}
	if b := st.Budget; b != nil && b.Known {
		warn := ""
		if b.Low {
			warn = "   LOW: identifies stop at the reserve"
		}
		fmt.Fprintf(w, "session starts %d/%d left, reserve %d, resets in %v%s\n", b.Remaining, b.Total, b.Reserve,
			b.ResetsAt.Sub(now).Round(time.Minute), warn)
	}
	if r := st.Reshard; r != nil {
		fmt.Fprintf(w, "RESHARD from %d to %d shards (generation %d) since %s: %d/%d assigned, %d/%d warm, ETA %v; the %d keep delivering until the switch\n",
			r.From, r.To, r.Generation, r.StartedAt.Local().Format(time.TimeOnly), r.Assigned, r.To, r.Warm, r.To, r.ETA, r.From)
	}
	if !st.Lease.Held {
		fmt.Fprintf(w, "\n%s HOLDS NO LEASE: its shards are suspended. Why: %s\n", st.Node, st.Lease.Reason)
	}

	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	shardsCol := "SHARDS"
	if st.Reshard != nil {
		shardsCol = "SHARDS (+NEW GEN)" // the reshard's shards each holds, being warmed
	}
	fmt.Fprintln(tw, "MEMBER\tSTATE\tGOSSIP\tRAFT\tLEASE\tWEIGHT\t"+shardsCol+"\tCLUSTER ADDR\tHTTP ADDR")
	for _, m := range st.Members {
		name := m.ID
		if m.Leader {
			name += " *"
		}
		lease := "-"
		if m.Lease != nil {
			lease = "held"
			if !m.Lease.Held {
				lease = "LOST"
			}
		}
		held := strconv.Itoa(m.Shards)
		if st.Reshard != nil {
			held += fmt.Sprintf(" (+%d)", m.ReshardShards)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", name, orDash(m.State), m.Gossip, orDash(m.Raft), lease,
			m.Weight, held, m.Cluster, m.HTTP)
	}
	tw.Flush()
	fmt.Fprintln(w, "(* leader)")

	type group struct {
		node    string
		cluster int
		state   string
	}
	groups := map[group][]int{}
	for _, s := range st.Shards {
		state := s.State
		if s.Phase == "revoking" {
			state += " (revoking)"
		}
		g := group{node: s.Node, cluster: s.Cluster, state: state}
		if s.Node == "" {
			g.cluster = -1
		}
		groups[g] = append(groups[g], s.Shard)
	}
	keys := make([]group, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b group) int {
		if c := strings.Compare(a.node, b.node); c != 0 {
			if a.node == "" {
				return 1
			}
			if b.node == "" {
				return -1
			}
			return c
		}
		if a.cluster != b.cluster {
			return a.cluster - b.cluster
		}
		return strings.Compare(a.state, b.state)
	})
	if len(keys) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tCLUSTER\tSTATE\tCOUNT\tSHARDS")
	for _, k := range keys {
		nodeName, cl := k.node, strconv.Itoa(k.cluster)
		if nodeName == "" {
			nodeName, cl = "(none)", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", nodeName, cl, k.state, len(groups[k]), event.FoldRanges(groups[k]))
	}
	tw.Flush()
	for _, p := range st.Problems {
		fmt.Fprintf(w, "warning: %s\n", p)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
