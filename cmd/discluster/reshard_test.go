package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
)

// fakeReshardAgent answers the reshard routes and the status like an agent whose
// cluster goes from 16 to 32 shards: each status a step further, up to the switch.
type fakeReshardAgent struct {
	mu       sync.Mutex
	statuses []api.Status // answered in turn; the last one from then on
	asked    []string
}

func (f *fakeReshardAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var body bytes.Buffer
	body.ReadFrom(r.Body)
	f.asked = append(f.asked, r.Method+" "+r.URL.Path+" "+body.String())
	reshard := api.Reshard{Generation: 2, From: 16, To: 32, StartedAt: time.Unix(1000, 0), ETA: 10 * time.Second}
	w.Header().Set("Content-Type", "application/json")
	switch r.Method + " " + r.URL.Path {
	case "POST /v1/reshard":
		if strings.Contains(body.String(), `"shards":16`) {
			w.WriteHeader(http.StatusConflict)
			json.NewEncoder(w).Encode(api.ErrorBody{Error: "refused by the cluster's state: the cluster runs 16 shards already", Code: api.CodeRefused})
			return
		}
		json.NewEncoder(w).Encode(reshard)
	case "DELETE /v1/reshard":
		json.NewEncoder(w).Encode(reshard)
	case "GET /v1/status":
		st := f.statuses[0]
		if len(f.statuses) > 1 {
			f.statuses = f.statuses[1:]
		}
		json.NewEncoder(w).Encode(st)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func TestReshardCommand(t *testing.T) {
	cfg := func(total int, gen uint64) *api.ShardConfig {
		return &api.ShardConfig{TotalShards: total, MaxConcurrency: 16, IdentifyWindow: 5 * time.Second, Generation: gen}
	}
	progress := func(assigned, warm int) api.Status {
		return api.Status{Config: cfg(16, 1), Reshard: &api.Reshard{Generation: 2, From: 16, To: 32, Assigned: assigned, Warm: warm,
			ETA: api.ReshardETA(32-warm, 16, 5*time.Second)}}
	}
	f := &fakeReshardAgent{statuses: []api.Status{
		{Config: cfg(16, 1)}, // the agent asked has not applied the start yet
		progress(20, 0), progress(32, 0), progress(32, 0), progress(32, 17),
		{Config: cfg(32, 2), Events: []event.Event{{Kind: event.ReshardSwitched, Gen: 2, Duration: 41 * time.Second}}},
	}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "needs --shards N"},
		{[]string{"--shards", "many"}, `--shards "many": a shard count from 1`},
		{[]string{"--shards", "0"}, `--shards "0"`},
		{[]string{"--shards", "8", "--cancel"}, "not both"},
		{[]string{"--cancel", "--wait"}, "a cancel has none"},
		{[]string{"extra"}, "takes no arguments"},
		{[]string{"--shards", "16"}, "the cluster runs 16 shards already"},
	} {
		_, _, err := run(t, append([]string{"reshard", "--addr", addr}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("reshard %q: %v, want %q", tc.args, err, tc.want)
		}
	}

	out, _, err := run(t, "reshard", "--shards", "32", "--addr", addr)
	if err != nil || !strings.Contains(out, "resharding from 16 to 32 shards (generation 2)") || !strings.Contains(out, "at least 10s") {
		t.Fatalf("start: %q, %v", out, err)
	}
	out, _, err = run(t, "reshard", "--cancel", "--addr", addr)
	if err != nil || !strings.Contains(out, "cancelled the reshard to 32 shards (generation 2)") {
		t.Fatalf("cancel: %q, %v", out, err)
	}
	f.mu.Lock()
	if got := f.asked; len(got) < 2 || got[len(got)-2] != `POST /v1/reshard {"shards":32}` || !strings.HasPrefix(got[len(got)-1], "DELETE /v1/reshard") {
		t.Fatalf("requests: %q", got)
	}
	f.mu.Unlock()

	// --wait, on the follow-up itself, with a short poll.
	var w bytes.Buffer
	cl := api.NewClient(addr)
	r := api.Reshard{Generation: 2, From: 16, To: 32}
	if err := waitReshard(context.Background(), &w, cl, r, 5*time.Millisecond); err != nil {
		t.Fatalf("wait: %v\n%s", err, w.String())
	}
	lines := strings.Split(strings.TrimSpace(w.String()), "\n")
	want := []string{"0/32 shards warm, 20/32 assigned, ETA 10s", "0/32 shards warm, 32/32 assigned, ETA 10s",
		"17/32 shards warm, 32/32 assigned, ETA 5s", "switched: 32 shards deliver, 41s after the start"}
	if len(lines) != len(want) {
		t.Fatalf("wait printed %q, want lines ending in %q", lines, want)
	}
	for i := range want {
		if !strings.HasSuffix(lines[i], want[i]) {
			t.Fatalf("line %d: %q, want it to end in %q", i, lines[i], want[i])
		}
	}

	// A reshard that goes away without a switch was cancelled.
	f.mu.Lock()
	f.statuses = []api.Status{progress(32, 3), {Config: cfg(16, 1), Events: []event.Event{{Kind: event.ReshardCancelled, Gen: 2, Cause: "to 32 shards; cancelled by an operator"}}}}
	f.mu.Unlock()
	w.Reset()
	if err := waitReshard(context.Background(), &w, cl, r, 5*time.Millisecond); err == nil || !strings.Contains(err.Error(), "cancelled") {
		t.Fatalf("wait on a cancelled reshard: %v\n%s", err, w.String())
	}
}

// The status shows a running reshard: its numbers, and each member's share of it.
func TestStatusShowsAReshard(t *testing.T) {
	st := api.Status{Node: "a", Leader: "a", Config: &api.ShardConfig{TotalShards: 16, MaxConcurrency: 16},
		Reshard: &api.Reshard{Generation: 2, From: 16, To: 32, StartedAt: time.Unix(1000, 0), Assigned: 32, Warm: 17, ETA: 5 * time.Second},
		Members: []api.MemberStatus{{ID: "a", State: "alive", Shards: 8, ReshardShards: 16}, {ID: "b", State: "alive", Shards: 8, ReshardShards: 16}}}
	var b bytes.Buffer
	renderStatus(&b, st, time.Unix(1000, 0))
	out := b.String()
	for _, want := range []string{"RESHARD from 16 to 32 shards (generation 2)", "32/32 assigned, 17/32 warm, ETA 5s", "SHARDS (+NEW GEN)", "8 (+16)"} {
		if !strings.Contains(out, want) {
			t.Errorf("the status lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	st.Reshard = nil
	renderStatus(&b, st, time.Unix(1000, 0))
	if strings.Contains(b.String(), "RESHARD") || strings.Contains(b.String(), "(+") {
		t.Errorf("the status shows a reshard that does not run:\n%s", b.String())
	}
}
