package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discluster/discluster/internal/proccluster"
	"github.com/discluster/discluster/node/sink"
)

// e2eWebhookSecret is the webhook's secret in the end-to-end test: found in any
// process's output, it leaked.
const e2eWebhookSecret = "e2e-webhook-secret-7d3f9b1a-NEVER-PRINTED"

// hookReceiver is a webhook receiver for agents: it verifies each POST's signature
// and records the seqs of each session; while failing, it answers 503.
type hookReceiver struct {
	failing atomic.Bool
	badSigs atomic.Int64
	refused atomic.Int64

	mu     sync.Mutex
	seqs   map[string]map[int64]bool // session → seqs received
	shards map[int]int               // shard → events received
	nodes  map[string]bool
}

func (h *hookReceiver) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	if err := sink.VerifyWebhook([]byte(e2eWebhookSecret), r.Header, body, time.Now(), 0); err != nil {
		h.badSigs.Add(1)
		http.Error(rw, err.Error(), http.StatusUnauthorized)
		return
	}
	if h.failing.Load() {
		h.refused.Add(1)
		http.Error(rw, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	var evs []struct {
		Node    string          `json:"node"`
		Shard   int             `json:"shard"`
		Session string          `json:"session"`
		Seq     int64           `json:"seq"`
		T       string          `json:"t"`
		D       json.RawMessage `json:"d"`
	}
	if err := json.Unmarshal(body, &evs); err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range evs {
		if h.seqs[e.Session] == nil {
			h.seqs[e.Session] = map[int64]bool{}
		}
		h.seqs[e.Session][e.Seq] = true
		h.shards[e.Shard]++
		h.nodes[e.Node] = true
	}
	rw.WriteHeader(http.StatusNoContent)
}

// Two agents with --sink http://127.0.0.1… POST their shards' events to a receiver
// in this process: every POST's signature verifies, every shard's events arrive from
// both nodes, and after the receiver answered 503 for a while (the agents' sinks
// failing in status meanwhile) no seq of any session is missing.
func TestWebhookSinkEndToEnd(t *testing.T) {
	const shards = 4
	h := &hookReceiver{seqs: map[string]map[int64]bool{}, shards: map[int]int{}, nodes: map[string]bool{}}
	srv := httptest.NewServer(h)
	defer srv.Close()
	secretFile := filepath.Join(t.TempDir(), "webhook.secret")
	if err := os.WriteFile(secretFile, []byte(e2eWebhookSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newE2E(t, shards)
	e.startAgentsWith(2, func(int) []string {
		return []string{"--sink", srv.URL + "/discord/events", "--sink-secret-file", secretFile}
	})
	e.allReady(60*time.Second, e.nodes...)
	e.waitFor(60*time.Second, "events of every shard from both nodes at the receiver", func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		for id := range shards {
			if h.shards[id] < 5 {
				return fmt.Errorf("events by shard: %v", h.shards)
			}
		}
		if len(h.nodes) != 2 {
			return fmt.Errorf("events from nodes %v", h.nodes)
		}
		return nil
	})

	before := e.mustStats().EventsSent
	h.failing.Store(true)
	e.waitFor(30*time.Second, "the agents' sinks failing in status", func() error {
		st, err := e.status(e.nodes[0])
		if err != nil {
			return err
		}
		n := 0
		for _, p := range st.Problems {
			if strings.Contains(p, "sink failing") {
				n++
			}
		}
		if n < 2 {
			return fmt.Errorf("problems: %v", st.Problems)
		}
		return nil
	})
	h.failing.Store(false)
	e.waitFor(30*time.Second, "events flowing again", func() error {
		if got := e.mustStats().EventsSent; got < before+100 {
			return fmt.Errorf("%d events sent since the receiver failed", got-before)
		}
		return nil
	})

	// What the fake sent before this point must reach the receiver, none missing.
	st := e.mustStats()
	e.waitFor(30*time.Second, "the receiver holding every seq the fake sent", func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		for sid, ss := range st.Sessions {
			for s := ss.FirstSeq; s <= ss.LastSeq; s++ {
				if !h.seqs[sid][s] {
					return fmt.Errorf("session %s (shard %d): seq %d not received yet", sid, ss.ShardID, s)
				}
			}
		}
		return nil
	})
	if n := h.badSigs.Load(); n > 0 {
		t.Errorf("%d POSTs whose signature did not verify", n)
	}
	for _, p := range e.procs.Children() {
		if strings.Contains(p.Output(), e2eWebhookSecret) {
			t.Errorf("%s printed the webhook secret", p.Name())
		}
	}
	h.mu.Lock()
	t.Logf("%d sessions received, %d POSTs answered 503 meanwhile, events by shard %v", len(h.seqs), h.refused.Load(), h.shards)
	h.mu.Unlock()
}

// agent --check with an https:// sink: the secret from its file or the environment,
// never printed; the URL shown without its password or query; http:// only to
// loopback unless allowed; a secret given for another sink is an error.
func TestWebhookSinkFlags(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "webhook.secret")
	if err := os.WriteFile(secretFile, []byte(e2eWebhookSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		ok   bool
		want string
	}{
		{"secret file", nil, []string{"--sink", "https://bot:PASSWORD@hooks.example.com/discord?key=QUERYKEY", "--sink-secret-file", secretFile},
			true, "sink https://bot:xxxxx@hooks.example.com/discord?…"},
		{"secret in the environment", []string{"DISCLUSTER_SINK_SECRET=" + e2eWebhookSecret}, []string{"--sink", "https://hooks.example.com/discord"},
			true, "sink https://hooks.example.com/discord"},
		{"http to loopback", nil, []string{"--sink", "http://127.0.0.1:8080/discord", "--sink-secret-file", secretFile}, true, "sink http://127.0.0.1:8080/discord"},
		{"http elsewhere", nil, []string{"--sink", "http://10.0.0.9/discord", "--sink-secret-file", secretFile}, false, "--sink-insecure-http"},
		{"http elsewhere, allowed", nil, []string{"--sink", "http://10.0.0.9/discord", "--sink-secret-file", secretFile, "--sink-insecure-http"},
			true, "sink http://10.0.0.9/discord"},
		{"no secret", nil, []string{"--sink", "https://hooks.example.com/discord"}, false, "--sink-secret-file"},
		{"both", []string{"DISCLUSTER_SINK_SECRET=" + e2eWebhookSecret}, []string{"--sink", "https://hooks.example.com/discord", "--sink-secret-file", secretFile},
			false, "give one"},
		{"a secret for another sink", nil, []string{"--sink", "stdout", "--sink-secret-file", secretFile}, false, "not an https://"},
		{"a short secret", []string{"DISCLUSTER_SINK_SECRET=0123456789"}, []string{"--sink", "https://hooks.example.com/discord"}, false, "want at least 16"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, append([]string{"agent", "--data-dir", dir, "--check"}, tc.args...)...)
			cmd.Env = append(os.Environ(), append([]string{"DISCORD_TOKEN=" + e2eToken}, tc.env...)...)
			cmd.SysProcAttr = proccluster.SysProcAttr()
			out, err := cmd.CombinedOutput()
			if (err == nil) != tc.ok || !strings.Contains(string(out), tc.want) {
				t.Fatalf("exit %v, want ok %v and %q; output:\n%s", err, tc.ok, tc.want, out)
			}
			for _, secret := range []string{e2eWebhookSecret, "PASSWORD", "QUERYKEY", e2eToken} {
				if strings.Contains(string(out), secret) {
					t.Errorf("the output shows %q:\n%s", secret, out)
				}
			}
		})
	}
}
