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
	// The replicated state: an FSM for hashicorp/raft.
	"fsm": {"github.com/hashicorp/raft"},
	// Network plumbing for Raft and RPC.
	"transport": {"github.com/hashicorp/raft"},
	// The gateway client: websocket and compression.
	"shard":             {"github.com/coder/websocket", "github.com/klauspost/compress/"},
	"shard/gatewaytest": {"github.com/coder/websocket", "github.com/klauspost/compress/"},
	// The agent wires the leaf packages to gossip, Raft and its store.
	"node": {"balancer", "fsm", "shard", "transport", "github.com/hashicorp/", "go.etcd.io/bbolt"},
	// The binary: the agent, and the fake for fake-discord, demo and bench.
	"cmd/discluster":    {"node", "shard", "shard/gatewaytest", "github.com/urfave/cli/v2"},
	"internal/layering": nil,
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
