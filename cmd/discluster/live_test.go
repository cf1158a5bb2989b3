package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/discluster/discluster/node/api"
)

// The live view follows an agent's event stream, and when that agent goes away,
// the stream of another member it last saw.
func TestLiveViewFollowsTheStream(t *testing.T) {
	st := api.Status{Node: "a", Leader: "a", Config: &api.ShardConfig{TotalShards: 2, MaxConcurrency: 1, IdentifyWindow: time.Second}}
	for i := range 2 {
		st.Shards = append(st.Shards, api.ShardStatus{Shard: i, Node: "a", Phase: "assigned", State: "identifying"})
	}
	sse := func(w http.ResponseWriter, kind string, v any) {
		b, _ := json.Marshal(v)
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", kind, b)
		w.(http.Flusher).Flush()
	}
	// b serves the rest of the story: shard 1 ready too.
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		both := st
		both.Shards = []api.ShardStatus{{Shard: 0, Node: "b", State: "ready"}, {Shard: 1, Node: "b", State: "ready"}}
		sse(w, api.StreamSnapshot, both)
		<-r.Context().Done()
	}))
	defer b.Close()
	st.Members = []api.MemberStatus{{ID: "a"}, {ID: "b", HTTP: strings.TrimPrefix(b.URL, "http://")}}
	// a streams a snapshot and one change, then dies once the view showed them.
	release := make(chan struct{})
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		sse(w, api.StreamSnapshot, st)
		sse(w, api.StreamShard, api.ShardStatus{Shard: 0, Node: "a", Phase: "assigned", State: "ready"})
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer a.Close()

	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- watch(ctx, &out, []string{strings.TrimPrefix(a.URL, "http://")}, "", 50*time.Millisecond, nil)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "1/2 shards ready") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	close(release)
	for !strings.Contains(out.String(), "2/2 shards ready") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"1/2 shards ready", "2/2 shards ready", "from " + strings.TrimPrefix(b.URL, "http://") + ", live"} {
		if !strings.Contains(got, want) {
			t.Errorf("the live view lacks %q:\n%s", want, got)
		}
	}
}

// --check prints the configuration, but never a Redis sink's password.
func TestCheckHidesTheSinksPassword(t *testing.T) {
	t.Setenv("DISCORD_TOKEN", "t")
	out, _, err := run(t, "agent", "--data-dir", t.TempDir(), "--sink", "redis://:hunter2@127.0.0.1:6379/0", "--check")
	if err != nil || !strings.Contains(out, "configuration OK") {
		t.Fatalf("--check: %v\n%s", err, out)
	}
	if strings.Contains(out, "hunter2") || !strings.Contains(out, "redis://:xxxxx@127.0.0.1:6379/0") {
		t.Fatalf("the sink as --check prints it: %s", out)
	}
}

// send refuses what it cannot send before it contacts any agent.
func TestSendRefusesBadInvocations(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"send", `{"op":3,"d":{}}`}, "--shard N or --guild ID"},
		{[]string{"send", "--shard", "1", "--guild", "2", `{"op":3,"d":{}}`}, "--shard N or --guild ID"},
		{[]string{"send", "--shard", "x", `{"op":3,"d":{}}`}, `--shard "x"`},
		{[]string{"send", "--guild", "-1", `{"op":3,"d":{}}`}, `--guild "-1"`},
		{[]string{"send", "--shard", "1", `op=3`}, "must be JSON"},
		{[]string{"send", "--shard", "1", `{"op":2,"d":{}}`}, "not a command a bot may send"},
		{[]string{"send", "--shard", "1"}, "one payload"},
	} {
		if _, _, err := run(t, append(tc.args, "--addr", "127.0.0.1:1")...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}
