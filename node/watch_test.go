package node

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/shard/gatewaytest"
)

// A watcher of any node sees a failover as it happens: the snapshot, then the dead
// node marked failed, its shards ready on the others, and the failover event.
func TestWatchShowsAFailover(t *testing.T) {
	c := newTestCluster(t, 6, gatewaytest.Options{})
	nodes := c.startN(3)
	leader := c.waitLeader(20*time.Second, nodes...)
	c.allReady(30*time.Second, leader)
	var victim, watched *testNode
	for _, n := range nodes {
		switch {
		case n == leader:
		case victim == nil:
			victim = n
		default:
			watched = n
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		snapshot api.Status
		failed   bool
		failover bool
	)
	moved := map[int]bool{} // the victim's shards, true once ready elsewhere
	done := errors.New("seen it all")
	err := api.NewClient(watched.HTTPAddr()).Watch(ctx, func(kind string, data []byte) error {
		switch kind {
		case api.StreamSnapshot:
			if err := json.Unmarshal(data, &snapshot); err != nil {
				return err
			}
			for _, s := range snapshot.Shards {
				if s.Node == victim.Name() {
					moved[s.Shard] = false
				}
			}
			if len(moved) == 0 {
				return errors.New("the victim holds no shard")
			}
			victim.Kill()
		case api.StreamMember:
			var m api.MemberStatus
			json.Unmarshal(data, &m)
			failed = failed || m.ID == victim.Name() && m.State == "failed"
		case api.StreamShard:
			var s api.ShardStatus
			json.Unmarshal(data, &s)
			if _, ok := moved[s.Shard]; ok && s.Node != victim.Name() && s.State == "ready" {
				moved[s.Shard] = true
			}
		case api.StreamEvent:
			var e event.Event
			json.Unmarshal(data, &e)
			failover = failover || e.Kind == event.Failover && e.Subject == victim.Name()
		}
		for _, ok := range moved {
			if !ok {
				return nil
			}
		}
		if failed && failover && len(moved) > 0 {
			return done
		}
		return nil
	})
	if !errors.Is(err, done) {
		t.Fatalf("the watcher saw failed=%v failover=%v moved=%v: %v", failed, failover, moved, err)
	}
}
