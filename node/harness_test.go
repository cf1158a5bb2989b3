package node

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discluster/discluster/internal/testlock"
	"github.com/discluster/discluster/node/sink"
	"github.com/discluster/discluster/shard"
	"github.com/discluster/discluster/shard/gatewaytest"
	"github.com/discluster/discluster/transport"
)

const testToken = "node-test-token-0123456789"

// testWriter sends log lines to t.Log, so they show only with a failure or -v.
type testWriter struct {
	t    testing.TB
	mu   *sync.Mutex
	done *bool
}

func (w testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !*w.done {
		w.t.Log(string(p[:len(p)-1]))
		if strings.Contains(string(p), testToken) {
			w.t.Errorf("a log line shows the bot token: %s", p)
		}
	}
	return len(p), nil
}

// events records every delivery of every node: which seqs of which session arrived,
// and how often.
type events struct {
	mu   sync.Mutex
	seen map[string]map[int64]int // session → seq → deliveries
	by   map[string]int           // session → shard
}

func newEvents() *events {
	return &events{seen: make(map[string]map[int64]int), by: make(map[string]int)}
}

func (e *events) Deliver(_ context.Context, batch []sink.Delivery) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, d := range batch {
		m := e.seen[d.Event.SessionID]
		if m == nil {
			m = make(map[int64]int)
			e.seen[d.Event.SessionID] = m
		}
		m[d.Event.Seq]++
		e.by[d.Event.SessionID] = d.Event.ShardID
	}
	return nil
}

// check compares the deliveries with what the fake sent: every seq of every session
// delivered at least once (up to what the owner had accepted), and, when exactlyOnce,
// none twice. It returns the number of duplicates.
func (e *events) check(t *testing.T, st gatewaytest.Stats, exactlyOnce bool) int {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	dups := 0
	for sid, ss := range st.Sessions {
		got := e.seen[sid]
		var max int64
		for s := range got {
			max = Max(max, s)
		}
		// Every seq up to the highest delivered one must have been delivered: a gap
		// is a lost event.
		for s := ss.FirstSeq; s <= max; s++ {
			switch n := got[s]; {
			case n == 0:
				t.Errorf("session %s (shard %d): seq %d lost (delivered up to %d)", sid, ss.ShardID, s, max)
			case n > 1:
				dups += n - 1
				if exactlyOnce {
					t.Errorf("session %s (shard %d): seq %d delivered %d times", sid, ss.ShardID, s, n)
				}
			}
		}
	}
	return dups
}

func Max(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

type testCluster struct {
	t      *testing.T
	fake   *gatewaytest.Server
	events *events
	nodes  []*testNode
	shards int
	logMu  sync.Mutex
	done   bool
}

type testNode struct {
	*Node
	cfg    Config
	filter *transport.Filter
}

func newTestCluster(t *testing.T, shards int, opts gatewaytest.Options) *testCluster {
	t.Helper()
	testlock.Cluster(t)
	c := &testCluster{t: t, events: newEvents(), shards: shards}
	opts.Token = testToken
	opts.Shards = shards
	// The fake enforces a quarter of the window the nodes keep (testIdentifyWindow):
	// it measures by arrival, and on a loaded CI machine a granted IDENTIFY can take
	// 100 ms or more to reach it. A gate that let two grants through together (two
	// leaders, per-node gates) still shows as a violation.
	if opts.IdentifyWindow == 0 {
		opts.IdentifyWindow = testIdentifyWindow / 4
	}
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = time.Second
	}
	// Zombie detection is the shard package's to test; here a heartbeat late by a
	// scheduler stall must not look like a failover.
	if opts.HeartbeatTimeout == 0 {
		opts.HeartbeatTimeout = 5 * time.Second
	}
	if opts.EventRate == 0 {
		opts.EventRate = 20
	}
	opts.Logger = slog.New(slog.NewTextHandler(testWriter{t, &c.logMu, &c.done}, &slog.HandlerOptions{Level: slog.LevelWarn})).With("who", "fake")
	fake, err := gatewaytest.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	c.fake = fake
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.Kill()
		}
		fake.Close()
		c.logMu.Lock()
		c.done = true
		c.logMu.Unlock()
	})
	return c
}

// testIdentifyWindow is the identify window the test nodes keep.
const testIdentifyWindow = 200 * time.Millisecond

// testTiming is FastTiming with room for a loaded 2-core CI machine running the
// race detector, where a goroutine can wait 300 ms for a CPU: a Raft leader that
// steps down after 250 ms without contact, or a gossip probe that gives up after
// 100 ms, turns such a stall into an election or a false failure.
func testTiming() Timing {
	t := FastTiming()
	t.RaftHeartbeat = time.Second
	t.RaftElection = time.Second
	t.RaftLeaderLease = 500 * time.Millisecond
	t.ProbeInterval = 500 * time.Millisecond
	t.ProbeTimeout = 400 * time.Millisecond
	t.SuspicionMult = 3
	return t
}

// config is a node's configuration on loopback with fast timers.
func (c *testCluster) config(name string, expect int) Config {
	cfg := DefaultConfig()
	cfg.Name, cfg.DataDir = name, c.t.TempDir()
	cfg.GossipAddr, cfg.ClusterAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.BootstrapExpect = expect
	cfg.Shards, cfg.MaxConcurrency, cfg.IdentifyWindow = c.shards, 1, testIdentifyWindow
	cfg.ShardsPerCluster, cfg.CheckpointInterval, cfg.Lease = 4, 100*time.Millisecond, 5*time.Second
	cfg.Token, cfg.APIBase, cfg.Intents = shard.Token(testToken), c.fake.APIURL(), 513 // GUILDS, GUILD_MESSAGES
	cfg.Sink, cfg.Timing = c.events, testTiming()
	cfg.HTTPInsecureLoopback = true // the cluster tests drain through the API; auth has its own tests
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{c.t, &c.logMu, &c.done}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return cfg
}

// start starts a node; join names the nodes whose gossip address it joins.
func (c *testCluster) start(cfg Config, join ...*testNode) *testNode {
	c.t.Helper()
	for _, j := range join {
		cfg.Join = append(cfg.Join, j.GossipAddr())
	}
	if cfg.Filter == nil {
		cfg.Filter = transport.NewFilter()
	}
	n, err := Start(cfg)
	if err != nil {
		c.t.Fatalf("start %s: %v", cfg.Name, err)
	}
	tn := &testNode{Node: n, cfg: cfg, filter: cfg.Filter}
	c.nodes = append(c.nodes, tn)
	return tn
}

// startN starts n nodes with bootstrap-expect n, each joining the first.
func (c *testCluster) startN(n int) []*testNode { return c.startNWith(n, nil) }

// startNWith is startN with each node's configuration changed by edit first.
func (c *testCluster) startNWith(n int, edit func(cfg *Config)) []*testNode {
	var out []*testNode
	for i := range n {
		cfg := c.config(fmt.Sprintf("node%d", i+1), n)
		if edit != nil {
			edit(&cfg)
		}
		if i == 0 {
			out = append(out, c.start(cfg))
		} else {
			out = append(out, c.start(cfg, out[0]))
		}
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("after %v, still not %s: %v", d, what, err)
}

// allReady waits until every shard has exactly one live connection at the fake and
// its owner reports it ready, and returns the shards per node.
func (c *testCluster) allReady(d time.Duration, via *testNode) map[string]int {
	c.t.Helper()
	var per map[string]int
	waitFor(c.t, d, "every shard ready", func() error {
		st := c.fake.Stats()
		for id := range c.shards {
			if l := st.Shards[id].Live; l != 1 {
				return fmt.Errorf("shard %d has %d live connections", id, l)
			}
		}
		s := via.Status(context.Background())
		per = map[string]int{}
		for _, sh := range s.Shards {
			if sh.State != "ready" || sh.Phase != "assigned" {
				return fmt.Errorf("shard %d on %q is %s (%s)", sh.Shard, sh.Node, sh.State, sh.Phase)
			}
			per[sh.Node]++
		}
		return nil
	})
	return per
}

// readyAndBalanced waits until every shard is ready and the shards are within one
// of each other over nodes. Rebalancing moves a few shards at a time, so between
// two moves every shard can be ready while the spread is still uneven.
func (c *testCluster) readyAndBalanced(d time.Duration, via *testNode, nodes ...*testNode) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		per := c.allReady(time.Until(deadline), via)
		err := balanced(per, nodes...)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("after %v, every shard ready but not balanced: %v", d, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// balanced reports an error unless the counts are within one of each other over the
// given nodes.
func balanced(per map[string]int, nodes ...*testNode) error {
	var counts []int
	for _, n := range nodes {
		counts = append(counts, per[n.Name()])
	}
	if slices.Max(counts)-slices.Min(counts) > 1 {
		return fmt.Errorf("shards per node %v: not within ±1", per)
	}
	return nil
}

func (c *testCluster) leader() *testNode {
	for _, n := range c.nodes {
		if n.ctx.Err() == nil && n.IsLeader() {
			return n
		}
	}
	return nil
}

func (c *testCluster) waitLeader(d time.Duration, among ...*testNode) *testNode {
	c.t.Helper()
	var l *testNode
	waitFor(c.t, d, "a leader", func() error {
		for _, n := range among {
			if n.IsLeader() {
				l = n
				return nil
			}
		}
		return fmt.Errorf("no leader among %d nodes", len(among))
	})
	return l
}

// httpPost posts nothing to url and returns the body, or an error with it.
func httpPost(url string) (string, error) { return httpDo(http.MethodPost, url) }

func httpDo(method, url string) (string, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	return string(b), nil
}

// checkpointed waits until the replicated state holds a resume state for every
// shard: before that, a failure re-identifies the shards that have none, rightly.
func (c *testCluster) checkpointed(via *testNode) {
	c.t.Helper()
	waitFor(c.t, 10*time.Second, "every shard checkpointed", func() error {
		for id := range c.shards {
			if r, ok := via.fsm.Resume(id); !ok || r.SessionID == "" {
				return fmt.Errorf("shard %d has no resume state", id)
			}
		}
		return nil
	})
}

func encodeKey(k []byte) string { return base64.StdEncoding.EncodeToString(k) }
