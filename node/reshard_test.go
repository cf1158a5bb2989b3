package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/shard/gatewaytest"
)

// placedIn checks that via sees every shard of generation gen assigned, and each of
// nodes holding within one of the others.
func placedIn(via *testNode, gen uint64, total int, nodes ...*testNode) error {
	asg := via.fsm.AssignmentsIn(gen)
	per := map[string]int{}
	for _, a := range asg {
		if a.Phase != fsm.Assigned {
			return fmt.Errorf("shard %d of generation %d is %s on %s", a.Shard, gen, a.Phase, a.Node)
		}
		per[a.Node]++
	}
	if len(asg) != total {
		return fmt.Errorf("%d of generation %d's %d shards assigned", len(asg), gen, total)
	}
	for node := range per {
		if !containsNode(nodes, node) {
			return fmt.Errorf("generation %d has shards on %s: %v", gen, node, per)
		}
	}
	return balanced(per, nodes...)
}

func containsNode(nodes []*testNode, name string) bool {
	for _, n := range nodes {
		if n.Name() == name {
			return true
		}
	}
	return false
}

// A reshard asked through a follower: refused with the numbers where it must be,
// started at the leader, its generation placed ±1 over the nodes beside the current
// one and shown in the status; when the leader dies, the new leader carries it on
// and fails the dead node's new shards over; a cancel drops it and the current
// generation goes on. (The runner's warming and the switch are tested with it.)
//
// The nodes keep an identify window of 2 s, so that the new generation, which
// needs six windows to identify, cannot switch under the checks whatever the runner
// does with it.
func TestReshardThroughAFollower(t *testing.T) {
	c := newTestCluster(t, 3, gatewaytest.Options{})
	nodes := c.startNWith(3, func(cfg *Config) { cfg.IdentifyWindow = 2 * time.Second })
	c.waitLeader(20*time.Second, nodes...)
	c.allReady(60*time.Second, nodes[0])
	ctx := context.Background()
	follower := c.nonLeader(nodes)
	cl := api.NewClient(follower.HTTPAddr())

	for _, tc := range []struct {
		shards int
		want   string
	}{
		{3, "runs 3 shards already"},
		{5000, "needs 5000 session starts plus the reserve"},
	} {
		_, err := cl.Reshard(ctx, api.ReshardRequest{Shards: tc.shards})
		var e *api.Error
		if !errors.As(err, &e) || e.Code != api.CodeRefused || !strings.Contains(e.Msg, tc.want) {
			t.Fatalf("reshard to %d: %v, want a refusal saying %q", tc.shards, err, tc.want)
		}
	}
	r, err := cl.Reshard(ctx, api.ReshardRequest{Shards: 6})
	if err != nil {
		t.Fatal(err)
	}
	if r.From != 3 || r.To != 6 || r.Generation != 2 || r.ETA != 12*time.Second {
		t.Fatalf("the reshard started: %+v, want from 3 to 6, generation 2, ETA 6 windows of 2s", r)
	}
	if _, err := cl.Reshard(ctx, api.ReshardRequest{Shards: 7}); err == nil || !strings.Contains(err.Error(), "runs since") {
		t.Fatalf("a second reshard: %v", err)
	}
	waitFor(t, 20*time.Second, "the new generation placed beside the current one", func() error {
		for _, n := range nodes {
			if err := placedIn(n, 2, 6, nodes...); err != nil {
				return fmt.Errorf("%s: %w", n.Name(), err)
			}
		}
		return placedIn(follower, 1, 3, nodes...)
	})
	st := follower.Status(ctx)
	if st.Reshard == nil || st.Reshard.To != 6 || st.Reshard.Assigned != 6 || st.Reshard.Generation != 2 || st.Config.Generation != 1 {
		t.Fatalf("the status's reshard: %+v (config %+v)", st.Reshard, st.Config)
	}
	for _, m := range st.Members {
		if m.Shards != 1 || m.ReshardShards != 2 {
			t.Fatalf("member %s holds %d shards and %d of the new generation, want 1 and 2", m.ID, m.Shards, m.ReshardShards)
		}
	}

	// The leader dies: the new one fails its shards of both generations over.
	dead := c.leader()
	dead.Kill()
	var survivors []*testNode
	for _, n := range nodes {
		if n != dead {
			survivors = append(survivors, n)
		}
	}
	c.waitLeader(30*time.Second, survivors...)
	waitFor(t, 30*time.Second, "both generations on the survivors", func() error {
		if _, ok := survivors[0].fsm.Reshard(); !ok {
			return errors.New("the reshard is gone")
		}
		if err := placedIn(survivors[0], 2, 6, survivors...); err != nil {
			return err
		}
		return placedIn(survivors[0], 1, 3, survivors...)
	})

	cl = api.NewClient(survivors[1].HTTPAddr())
	if r, err := cl.CancelReshard(ctx); err != nil || r.Generation != 2 || r.To != 6 {
		t.Fatalf("cancel: %+v, %v", r, err)
	}
	waitFor(t, 10*time.Second, "the reshard gone everywhere, with its event", func() error {
		for _, n := range survivors {
			if _, ok := n.fsm.Reshard(); ok {
				return fmt.Errorf("%s still sees it", n.Name())
			}
		}
		st := survivors[0].Status(ctx)
		if st.Reshard != nil {
			return fmt.Errorf("the status shows %+v", st.Reshard)
		}
		for _, e := range st.Events {
			if e.Kind == event.ReshardCancelled && e.Gen == 2 {
				return nil
			}
		}
		return fmt.Errorf("no reshard_cancelled among %v", st.Events)
	})
	if _, err := cl.CancelReshard(ctx); err == nil || !strings.Contains(err.Error(), "no reshard runs") {
		t.Fatalf("a second cancel: %v", err)
	}
	if g := survivors[0].fsm.Generation(); g != 1 {
		t.Fatalf("after the cancel the cluster runs generation %d", g)
	}
	c.allReady(30*time.Second, survivors[0])
}

// A shard closed with 4011 is reported with every lease renewal, as a generation,
// until a reshard replaced that generation: then it is old news.
func TestShardingRequiredReportedUntilTheGenerationGoes(t *testing.T) {
	n := &Node{fsm: fsm.New()}
	index := uint64(0)
	apply := func(cmd fsm.Command) {
		t.Helper()
		index++
		if err, ok := n.fsm.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: fsm.Encode(cmd)}).(error); ok {
			t.Fatalf("%T: %v", cmd, err)
		}
	}
	apply(fsm.SetConfig{Config: fsm.Config{TotalShards: 1, MaxConcurrency: 1, ShardsPerCluster: 1, IdentifyWindow: time.Second, Lease: 5 * time.Second,
		CheckpointInterval: time.Second}})
	apply(fsm.UpsertMember{Member: fsm.Member{ID: "a", Weight: 1}})
	if g := n.shardingRequiredGen(); g != 0 {
		t.Fatalf("reported %d before any 4011", g)
	}
	n.noteShardingRequired(event.Event{Kind: event.ShardingRequired, Shards: event.Shards{0}})
	if g := n.shardingRequiredGen(); g != fsm.FirstGen {
		t.Fatalf("a 4011 of the current generation reported as %d", g)
	}
	apply(fsm.StartReshard{Gen: 2, Total: 2, At: 1})
	apply(fsm.Assign{Gen: 2, Moves: []fsm.AssignMove{{Shard: 0, To: "a"}, {Shard: 1, To: "a"}}})
	if g := n.shardingRequiredGen(); g != fsm.FirstGen {
		t.Fatalf("while the reshard runs, reported %d", g)
	}
	apply(fsm.SwitchReshard{Gen: 2, At: 2})
	if g := n.shardingRequiredGen(); g != 0 {
		t.Fatalf("after the switch, the old generation's 4011 still reported (%d)", g)
	}
	n.noteShardingRequired(event.Event{Kind: event.ShardingRequired, Gen: 2, Shards: event.Shards{1}})
	if g := n.shardingRequiredGen(); g != 2 {
		t.Fatalf("a 4011 of generation 2 reported as %d", g)
	}
}
