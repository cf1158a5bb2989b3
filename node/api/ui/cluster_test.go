package ui_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/api/ui"
	"github.com/discluster/discluster/node/event"
)

// fakeCluster is an api.Backend with a made-up cluster: a status, and a stream that
// sends the snapshot, then the messages a test pushes.
type fakeCluster struct {
	api.Backend // the methods the page never calls

	mu      sync.Mutex
	st      api.Status
	drained []string
	pushes  chan []message
}

type message struct {
	kind string
	data any
}

// newFakeCluster is a cluster of total shards, ready, spread in ranges over nodes
// members n01, n02, ...
func newFakeCluster(total, nodes int) *fakeCluster {
	now := time.Now()
	st := api.Status{Node: "n01", Cluster: "c0ffee", Leader: "n01", Term: 3, RaftState: "Leader", Lease: api.Lease{Held: true},
		Config: &api.ShardConfig{TotalShards: total, MaxConcurrency: 16, IdentifyWindow: 5 * time.Second, Lease: 5 * time.Second,
			CheckpointInterval: time.Second},
		Budget: &api.Budget{Known: true, Total: 5000, Remaining: 4870, Reserve: 250}}
	for i := range nodes {
		id := fmt.Sprintf("n%02d", i+1)
		st.Members = append(st.Members, api.MemberStatus{ID: id, State: "alive", Gossip: "alive", Raft: "voter", Leader: i == 0,
			Weight: 1, Cluster: fmt.Sprintf("127.0.0.1:%d", 7947+10*i), HTTP: fmt.Sprintf("127.0.0.1:%d", 7948+10*i),
			Lease: &api.Lease{Held: true, Until: now.Add(5 * time.Second)}, Sink: &api.Sink{}})
	}
	for id := range total {
		n := id * nodes / total
		st.Members[n].Shards++
		st.Shards = append(st.Shards, api.ShardStatus{Shard: id, Node: st.Members[n].ID, Epoch: 7, Phase: "assigned",
			Cluster: id / 16, State: "ready", Session: fmt.Sprintf("%032x", id*2654435761), Seq: int64(1000 + id%977),
			Checkpoint: int64(990 + id%977), Latency: 41.5, LastEvent: now})
	}
	st.Events = []event.Event{{At: now.Add(-time.Minute), Kind: event.LeaderElected, Node: "n01", Term: 3}}
	return &fakeCluster{st: st, pushes: make(chan []message, 16)}
}

func (f *fakeCluster) Status(context.Context, bool) api.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fakeCluster) Health() api.Health { return api.Health{Node: "n01", Healthy: true} }

func (f *fakeCluster) Drain(_ context.Context, node string) (api.Drained, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drained = append(f.drained, node)
	return api.Drained{Draining: node, Shards: 4, State: "draining"}, nil
}

func (f *fakeCluster) Undrain(context.Context, string) error { return nil }

func (f *fakeCluster) Watch(ctx context.Context, emit api.Emit) error {
	if err := emit(api.StreamSnapshot, f.Status(ctx, false)); err != nil {
		return err
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if err := emit("", nil); err != nil {
				return err
			}
		case batch := <-f.pushes:
			for _, m := range batch {
				if err := emit(m.kind, m.data); err != nil {
					return err
				}
			}
		}
	}
}

func (f *fakeCluster) drains() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.drained...)
}

// serve serves the API over f, with the web view, as an agent does.
func serve(t testing.TB, f *fakeCluster, auth api.Auth) string {
	srv := httptest.NewServer(api.Handler(f, auth, api.WithUI(ui.Handler(nil), nil)))
	t.Cleanup(func() {
		srv.CloseClientConnections() // the page's event stream never ends by itself
		srv.Close()
	})
	return srv.URL
}
