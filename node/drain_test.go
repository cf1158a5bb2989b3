package node

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/discluster/discluster/shard/gatewaytest"
)

// memberState is the member's replicated state as via sees it, "" if unknown.
func memberState(via *testNode, id string) string {
	if m, ok := via.fsm.Member(id); ok {
		return m.State.String()
	}
	return ""
}

// stillEmpty checks, for a few of the leader's reconcile passes, that n holds no shard.
func (c *testCluster) stillEmpty(n *testNode, d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if s := shardsOf(n); len(s) > 0 {
			c.t.Fatalf("drained node %s took shards %v", n.Name(), s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// An operator's drain is replicated state: the node stays drained across a crash and
// restart, a graceful leave and restart, and a drain of a failed node marks it so
// that it takes nothing when it returns; only a cancel ends it.
func TestDrainSurvivesRestarts(t *testing.T) {
	c := newTestCluster(t, 9, gatewaytest.Options{EventRate: 20})
	nodes := c.startN(3)
	c.waitLeader(20*time.Second, nodes...)
	c.allReady(30*time.Second, nodes[0])
	victim := c.nonLeader(nodes)
	leader := c.leader()
	if _, err := httpPost("http://" + leader.HTTPAddr() + "/v1/drain/" + victim.Name()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the drained node empty", func() error {
		if s := shardsOf(victim); len(s) > 0 {
			return fmt.Errorf("%s still holds %v", victim.Name(), s)
		}
		return nil
	})

	// Crash, then restart with the data dir.
	victim.Kill()
	waitFor(t, 30*time.Second, "the crashed node marked failed", func() error {
		if s := memberState(leader, victim.Name()); s != "failed" {
			return fmt.Errorf("%s is %q", victim.Name(), s)
		}
		return nil
	})
	back := c.restart(victim)
	waitFor(t, 30*time.Second, "the restarted node back, draining", func() error {
		if s := memberState(leader, back.Name()); s != "draining" {
			return fmt.Errorf("%s is %q", back.Name(), s)
		}
		return nil
	})
	c.stillEmpty(back, 2*time.Second)

	// A graceful leave, then restart.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := back.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	again := c.restart(back)
	waitFor(t, 30*time.Second, "the node back after its leave, draining", func() error {
		if s := memberState(leader, again.Name()); s != "draining" {
			return fmt.Errorf("%s is %q", again.Name(), s)
		}
		return nil
	})
	c.stillEmpty(again, 2*time.Second)

	// Cancel: it takes its share again.
	if _, err := httpDo(http.MethodDelete, "http://"+leader.HTTPAddr()+"/v1/drain/"+again.Name()); err != nil {
		t.Fatal(err)
	}
	all := []*testNode{leader, without(nodes, victim, leader)[0], again}
	c.readyAndBalanced(40*time.Second, leader, all...)

	// A failed node drained: marked, and empty when it returns.
	again.Kill()
	waitFor(t, 30*time.Second, "the node marked failed", func() error {
		if s := memberState(leader, again.Name()); s != "failed" {
			return fmt.Errorf("%s is %q", again.Name(), s)
		}
		return nil
	})
	res, err := httpPost("http://" + leader.HTTPAddr() + "/v1/drain/" + again.Name())
	if err != nil {
		t.Fatalf("drain of a failed node: %v", err)
	}
	if want := `"state": "failed"`; !strings.Contains(res, want) {
		t.Errorf("drain of a failed node answered %s, want %s", res, want)
	}
	last := c.restart(again)
	waitFor(t, 30*time.Second, "the drained failed node back, draining", func() error {
		if s := memberState(leader, last.Name()); s != "draining" {
			return fmt.Errorf("%s is %q", last.Name(), s)
		}
		return nil
	})
	c.stillEmpty(last, 2*time.Second)
	c.allReady(30*time.Second, leader)
	c.events.check(t, c.fake.Stats(), false)
}
