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
