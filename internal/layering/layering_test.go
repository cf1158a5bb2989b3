package layering

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/discluster/discluster"

// allowed lists, per package of the module, the non-standard imports its production
// code may have: packages of the module by their path inside it, others by a prefix
// of their import path. The standard library is always allowed.
var allowed = map[string][]string{
	// Pure placement: nothing but the standard library.
	"balancer": nil,
	// The one shape of a session's position: a word every layer shares.
	"session": nil,
	// The replicated state: an FSM for hashicorp/raft.
	"fsm": {"session", "github.com/hashicorp/raft"},
	// Network plumbing for Raft and RPC.
	"transport": {"github.com/hashicorp/raft"},
	// The gateway client: websocket and compression.
	"shard":             {"session", "internal/backoff", "github.com/coder/websocket", "github.com/klauspost/compress/"},
	"shard/gatewaytest": {"github.com/coder/websocket", "github.com/klauspost/compress/", "golang.org/x/sys/unix"},
	// Helpers of every room.
	"internal/backoff":   nil,
	"internal/logbridge": {"github.com/hashicorp/go-hclog"},
	// Looks at Raft's bbolt file before the node opens it.
	"internal/storecheck": {"go.etcd.io/bbolt"},
	// The cluster port's certificates: a CA, node certificates, reload.
	"internal/certs":       nil,
	"internal/proccluster": {"node/api"},
	// Benchmarks only: runs the side-by-side ingest harness, bench/peers, a module
	// of its own.
	"bench": nil,
	// For tests only: no production package may import it.
	"internal/testlock":  nil,
	"internal/fakeclock": nil,
	"internal/redistest": {"internal/proccluster"},
	"internal/natstest":  {"internal/proccluster"},
	// For tests only: headless Chromium, driven over the DevTools protocol.
	"internal/browsertest": {"github.com/chromedp/"},
	// The agent's rooms, from the bottom up. Each room imports only rooms below it.
	"node/event": nil,
	"node/sink":  {"shard", "internal/backoff", "github.com/redis/go-redis/v9", "github.com/vmihailenco/msgpack/v5", "github.com/nats-io/nats.go"},
	// The cut-over rule of a reshard: bookkeeping over shard's events, no room.
	"node/cutover": {"shard"},
	// The API is imported by bots: types, routes and a client, nothing of the agent.
	"node/api": {"node/event"},
	// The web view's files, embedded: the standard library only.
	"node/api/ui":     nil,
	"node/rpc":        {"fsm", "shard", "node/api", "node/event"},
	"node/membership": {"internal/backoff", "internal/logbridge", "transport", "github.com/hashicorp/"},
	"node/leader": {"balancer", "fsm", "shard", "internal/backoff", "node/api", "node/event", "node/membership", "node/rpc",
		"github.com/hashicorp/raft"},
	"node/runner": {"fsm", "shard", "internal/backoff", "node/api", "node/cutover", "node/event", "node/rpc", "node/sink"},
	// Prometheus and pprof for the API: reads the rooms through interfaces of its own.
	"node/metrics": {"shard", "node/api", "node/event", "node/sink", "github.com/prometheus/client_golang/"},
	// The agent wires the rooms to each other, to Raft and its store.
	"node": {"fsm", "shard", "transport", "internal/backoff", "internal/certs", "internal/logbridge", "internal/storecheck", "node/api", "node/api/ui", "node/event",
		"node/leader", "node/membership", "node/metrics", "node/rpc", "node/runner", "node/sink", "github.com/hashicorp/", "go.etcd.io/bbolt"},
	// The binary: the agent, and the fake for fake-discord, demo and bench.
	"cmd/discluster": {"node", "node/api", "node/event", "node/sink", "shard", "shard/gatewaytest", "internal/backoff", "internal/certs",
		"internal/proccluster", "github.com/urfave/cli/v2",
		// bench reads the agents' CPU profiles it fetched to say where their CPU goes.
		"github.com/google/pprof/profile"},
	"internal/layering": nil,
	// Examples for a bot's developers. A program that embeds the agent wires it as the
	// binary does, through node's exported API and the words it speaks (api's errors,
	// sink's Delivery, shard's Token), never the rooms inside it.
	"examples/embed": {"node", "node/api", "node/sink", "shard"},
	// A worker needs nothing of discluster: the Redis streams are the whole interface.
	"examples/redis-worker": {"github.com/redis/go-redis/v9", "github.com/vmihailenco/msgpack/v5"},
}

// Invariants the rules above must keep, whatever is added to them later.
func TestRulesKeepTheInvariants(t *testing.T) {
	for pkg, rules := range allowed {
		for _, r := range rules {
			switch {
			case r == "node" && pkg != "cmd/discluster" && !strings.HasPrefix(pkg, "examples/"):
				t.Errorf("%s may import node: only the binary, and the examples of embedding it, wire the agent", pkg)
			case r == "shard/gatewaytest" && pkg != "cmd/discluster":
				t.Errorf("%s may import the fake Discord: production code never does (the binary serves it for demo and fake-discord only)", pkg)
			case r == "internal/testlock" || r == "internal/fakeclock" || r == "internal/redistest" || r == "internal/browsertest" || r == "internal/natstest":
				t.Errorf("%s may import %s, which is for tests only", pkg, r)
			case r == pkg:
				t.Errorf("%s lists itself", pkg)
			}
		}
	}
}

// notInDeps lists, per package, what must not be among its transitive dependencies
// (an import path, or every path under one that ends in a slash),
// in the shape of tailscale's deptest: a bot that imports the API client must not
// pull in Raft or gossip, and no leaf may reach the agent.
var notInDeps = map[string][]string{
	"node/api": {"github.com/hashicorp/", module + "/node", module + "/node/leader", module + "/node/runner",
		module + "/node/membership", module + "/node/rpc", module + "/fsm", module + "/node/metrics", "github.com/prometheus/", "net/http/pprof"},
	"node/event": {"github.com/"},
	"fsm":        {module + "/shard", module + "/node", module + "/node/"},
	"shard":      {module + "/node", module + "/node/", module + "/fsm", module + "/shard/gatewaytest"},
	"balancer":   {"github.com/"},
	// The web view is files: nothing to depend on.
	"node/api/ui": {"github.com/", module + "/"},
	// The cut-over rule reaches no room and no replicated state: the runner feeds it.
	"node/cutover": {module + "/node/", module + "/fsm"},
	// A worker in another process reads the streams, not discluster's code.
	"examples/redis-worker": {module + "/"},
}

func TestTransitiveDependencies(t *testing.T) {
	for pkg, bad := range notInDeps {
		out, err := exec.Command("go", "list", "-deps", module+"/"+pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if dep == module+"/"+pkg {
				continue
			}
			for _, b := range bad {
				if dep == b || strings.HasSuffix(b, "/") && strings.HasPrefix(dep, b) {
					t.Errorf("%s depends on %s (through its imports): it must not depend on %s", pkg, dep, b)
				}
			}
		}
	}
}

type listed struct {
	ImportPath string
	Name       string
	Doc        string
	Imports    []string
}

func TestImportRules(t *testing.T) {
	cmd := exec.Command("go", "list", "-json", module+"/...")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for {
		var p listed
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		seen++
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		rules, ok := allowed[rel]
		if !ok {
			t.Errorf("package %s has no import rule: add it to allowed, with what it may import", rel)
			continue
		}
		if p.Name != "main" && p.Doc == "" {
			t.Errorf("package %s has no doc comment stating its one job", rel)
		}
		for _, imp := range p.Imports {
			if isStandard(imp) || permitted(imp, rules) {
				continue
			}
			t.Errorf("%s imports %s, which its rule does not allow (allowed: %v)", rel, imp, rules)
		}
	}
	if seen < len(allowed) {
		t.Errorf("go list found %d packages, the rules name %d: remove the rules of packages that are gone", seen, len(allowed))
	}
}

func permitted(imp string, rules []string) bool {
	for _, r := range rules {
		if !strings.Contains(strings.SplitN(r, "/", 2)[0], ".") {
			if imp == module+"/"+r {
				return true
			}
			continue
		}
		if imp == r || strings.HasSuffix(r, "/") && strings.HasPrefix(imp, r) || strings.HasPrefix(imp, r+"/") {
			return true
		}
	}
	return false
}

// isStandard reports whether imp is in the standard library: its first element has
// no dot.
func isStandard(imp string) bool {
	return !strings.Contains(strings.SplitN(imp, "/", 2)[0], ".")
}

// The rules themselves: a module package allowed by name only matches itself, and
// the standard library is told apart by the dot in the first element.
func TestPermitted(t *testing.T) {
	for _, tc := range []struct {
		imp   string
		rules []string
		want  bool
	}{
		{module + "/node", []string{"node"}, true},
		{module + "/node", []string{"shard"}, false},
		{module + "/shard/gatewaytest", []string{"shard"}, false},
		{"github.com/hashicorp/raft", []string{"github.com/hashicorp/raft"}, true},
		{"github.com/hashicorp/raft-boltdb/v2", []string{"github.com/hashicorp/raft"}, false},
		{"github.com/klauspost/compress/zstd", []string{"github.com/klauspost/compress/"}, true},
		{"github.com/hashicorp/serf/serf", []string{"github.com/hashicorp/"}, true},
	} {
		if got := permitted(tc.imp, tc.rules); got != tc.want {
			t.Errorf("permitted(%s, %v) = %v, want %v", tc.imp, tc.rules, got, tc.want)
		}
	}
	if !isStandard("net/http") || isStandard("go.etcd.io/bbolt") {
		t.Error("isStandard")
	}
}
