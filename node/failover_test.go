package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/shard/gatewaytest"
)

// shardsOf lists the shards a node owns in the replicated state.
func shardsOf(n *testNode) []int {
	var out []int
	for _, a := range n.fsm.ShardsOf(n.Name()) {
		out = append(out, a.Shard)
	}
	return out
}

func without(nodes []*testNode, gone ...*testNode) []*testNode {
	var out []*testNode
	for _, n := range nodes {
		keep := true
		for _, g := range gone {
			keep = keep && n != g
		}
		if keep {
			out = append(out, n)
		}
	}
	return out
}

func (c *testCluster) nonLeader(nodes []*testNode) *testNode {
	for _, n := range nodes {
		if !n.IsLeader() {
			return n
		}
	}
	c.t.Fatal("every node leads")
	return nil
}

// checkOneLive fails the test if the fake ever saw two live connections for a shard.
func (c *testCluster) checkOneLive() {
	c.t.Helper()
	for id, s := range c.fake.Stats().Shards {
		if s.MaxLive > 1 {
			c.t.Errorf("shard %d had %d live connections at once", id, s.MaxLive)
		}
	}
}

func TestKilledNodeShardsResumeOnSurvivors(t *testing.T) {
	for _, which := range []string{"follower", "leader"} {
		t.Run(which, func(t *testing.T) {
			c := newTestCluster(t, 12, gatewaytest.Options{})
			nodes := c.startN(3)
			leader := c.waitLeader(20*time.Second, nodes...)
			c.allReady(30*time.Second, nodes[0])
			c.checkpointed(nodes[0])
			victim := c.nonLeader(nodes)
			if which == "leader" {
				victim = leader
			}
			moved := shardsOf(victim)
			survivors := without(nodes, victim)
			before := c.fake.Stats()
			// Shards the survivors already run must not notice the failure.
			untouched := map[int]gatewaytest.ShardStats{}
			for _, n := range survivors {
				for _, id := range shardsOf(n) {
					untouched[id] = before.Shards[id]
				}
			}

			victim.Kill()
			c.waitLeader(20*time.Second, survivors...)
			per := c.allReady(30*time.Second, survivors[0])
			if err := balanced(per, survivors...); err != nil {
				t.Error(err)
			}
			after := c.fake.Stats()
			if after.Identifies != before.Identifies {
				t.Errorf("identifies went from %d to %d: the moved shards should have resumed", before.Identifies, after.Identifies)
			}
			if got := after.Resumes - before.Resumes; got < len(moved) {
				t.Errorf("%d resumes for %d moved shards", got, len(moved))
			}
			for id, s := range untouched {
				if a := after.Shards[id]; a.Resumes != s.Resumes || a.Identifies != s.Identifies {
					t.Errorf("shard %d on a survivor was disrupted: resumes %d→%d, identifies %d→%d", id, s.Resumes, a.Resumes, s.Identifies, a.Identifies)
				}
			}
			if after.IdentifyViolations != 0 {
				t.Errorf("%d identify violations", after.IdentifyViolations)
			}
			// Let the resumed sessions deliver a little, then look for gaps.
			waitFor(t, 10*time.Second, "events flowing after failover", func() error {
				if c.fake.Stats().EventsSent < after.EventsSent+20 {
					return errors.New("few events yet")
				}
				return nil
			})
			dups := c.events.check(t, c.fake.Stats(), false)
			t.Logf("%d shards moved; %d duplicate deliveries (replayed since the last checkpoint)", len(moved), dups)
		})
	}
}

func TestDrainHandsOffExactlyOnce(t *testing.T) {
	c := newTestCluster(t, 12, gatewaytest.Options{EventRate: 50})
	nodes := c.startN(3)
	c.waitLeader(20*time.Second, nodes...)
	c.allReady(30*time.Second, nodes[0])
	before := c.fake.Stats()
	victim := c.nonLeader(nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := victim.Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	survivors := without(nodes, victim)
	per := c.allReady(30*time.Second, survivors[0])
	if err := balanced(per, survivors...); err != nil {
		t.Error(err)
	}
	after := c.fake.Stats()
	if after.Identifies != before.Identifies {
		t.Errorf("identifies went from %d to %d during a drain", before.Identifies, after.Identifies)
	}
	c.checkOneLive()
	if dups := c.events.check(t, after, true); dups != 0 {
		t.Errorf("%d duplicates in a planned handoff", dups)
	}
	// The member that left is forgotten.
	waitFor(t, 20*time.Second, "the leaver removed from the member table", func() error {
		if _, ok := survivors[0].fsm.Member(victim.Name()); ok {
			return fmt.Errorf("%s still a member", victim.Name())
		}
		return nil
	})
}

func TestDrainCommandMovesShardsOff(t *testing.T) {
	c := newTestCluster(t, 9, gatewaytest.Options{EventRate: 50})
	nodes := c.startN(3)
	c.waitLeader(20*time.Second, nodes...)
	c.allReady(30*time.Second, nodes[0])
	c.checkpointed(nodes[0])
	victim := c.nonLeader(nodes)
	res, err := httpPost("http://" + nodes[0].HTTPAddr() + "/v1/drain/" + victim.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res, `"draining"`) {
		t.Fatalf("drain answered %s", res)
	}
	waitFor(t, 30*time.Second, "the drained node empty", func() error {
		if s := shardsOf(victim); len(s) > 0 {
			return fmt.Errorf("%s still holds %v", victim.Name(), s)
		}
		return nil
	})
	per := c.allReady(30*time.Second, nodes[0])
	if per[victim.Name()] != 0 {
		t.Errorf("drained node holds %d shards", per[victim.Name()])
	}
	c.checkOneLive()
	if dups := c.events.check(t, c.fake.Stats(), true); dups != 0 {
		t.Errorf("%d duplicates in a drain", dups)
	}
	if _, err := httpPost("http://" + nodes[0].HTTPAddr() + "/v1/drain/nosuchnode"); err == nil || !strings.Contains(err.Error(), "no member") {
		t.Errorf("drain of an unknown node: %v", err)
	}

	// Cancelling the drain hands shards back to the node, each exactly once.
	if _, err := httpDo(http.MethodDelete, "http://"+nodes[0].HTTPAddr()+"/v1/drain/"+victim.Name()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the undrained node balanced again", func() error {
		if s := shardsOf(victim); len(s) != 3 {
			return fmt.Errorf("%s holds %v, want 3 shards", victim.Name(), s)
		}
		return nil
	})
	c.allReady(30*time.Second, nodes[0])
	c.checkOneLive()
	if dups := c.events.check(t, c.fake.Stats(), true); dups != 0 {
		t.Errorf("%d duplicates in handoffs back to an undrained node", dups)
	}
	if _, err := httpDo(http.MethodDelete, "http://"+nodes[0].HTTPAddr()+"/v1/drain/"+victim.Name()); err == nil || !strings.Contains(err.Error(), "not draining") {
		t.Errorf("cancelling a drain that is not on: %v", err)
	}
	// Through a follower, a cancel sent right after the drain is decided by the
	// leader's state, not by the follower's replica, which may lag.
	for _, f := range nodes {
		if f.IsLeader() {
			continue
		}
		base := "http://" + f.HTTPAddr() + "/v1/drain/" + victim.Name()
		if _, err := httpPost(base); err != nil {
			t.Fatal(err)
		}
		if _, err := httpDo(http.MethodDelete, base); err != nil {
			t.Errorf("cancel right after a drain, both through follower %s: %v", f.Name(), err)
		}
		break
	}
}

func TestLeaveWhileAnotherNodeIsDeadKeepsQuorum(t *testing.T) {
	c := newTestCluster(t, 6, gatewaytest.Options{})
	nodes := c.startN(3)
	leader := c.waitLeader(20*time.Second, nodes...)
	c.allReady(30*time.Second, nodes[0])
	c.checkpointed(nodes[0])
	others := without(nodes, leader)
	others[0].Kill()
	waitFor(t, 20*time.Second, "the dead node marked failed", func() error {
		if m, _ := leader.fsm.Member(others[0].Name()); m.State.String() != "failed" {
			return fmt.Errorf("state %v", m.State)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := others[1].Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	// The last node must keep a majority of the voters, so its lease, and run all six.
	per := c.allReady(30*time.Second, leader)
	if per[leader.Name()] != 6 {
		t.Fatalf("survivor runs %d shards", per[leader.Name()])
	}
	if st := leader.Status(context.Background()); !st.Lease.Held || st.Leader != leader.Name() {
		t.Fatalf("survivor: leader %q, lease %+v", st.Leader, st.Lease)
	}
	c.checkOneLive()
	// The node that left is gone from status once the leader removed it; gossip
	// still remembers it, and status --all shows it.
	gone := others[1].Name()
	listed := func(st api.Status) bool {
		return slices.ContainsFunc(st.Members, func(m api.MemberStatus) bool { return m.ID == gone })
	}
	waitFor(t, 20*time.Second, "the node that left dropped from status", func() error {
		if listed(leader.Status(context.Background())) {
			return fmt.Errorf("%s still listed", gone)
		}
		return nil
	})
	if !listed(leader.status(context.Background(), true)) {
		t.Errorf("status --all does not list %s, which left", gone)
	}
}
