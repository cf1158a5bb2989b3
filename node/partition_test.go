package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/discluster/discluster/node/membership"
	"github.com/discluster/discluster/shard/gatewaytest"
)

// isolate cuts n off from every other node, gossip and cluster port, both ways.
func (c *testCluster) isolate(n *testNode) {
	for _, o := range c.nodes {
		if o == n {
			continue
		}
		n.filter.Block(o.GossipAddr(), o.ClusterAddr())
		o.filter.Block(n.GossipAddr(), n.ClusterAddr())
	}
}

func (c *testCluster) heal() {
	for _, n := range c.nodes {
		n.filter.Heal()
	}
}

func (n *testNode) running() int {
	count := 0
	for _, s := range n.runner.Shards() {
		if s.Info.State.String() != "stopped" {
			count++
		}
	}
	return count
}

func TestCutOffNodeSuspendsAndHealedPartitionRejoins(t *testing.T) {
	c := newTestCluster(t, 12, gatewaytest.Options{})
	nodes := c.startN(3)
	c.waitLeader(20*time.Second, nodes...)
	c.allReady(30*time.Second, nodes[0])
	c.checkpointed(nodes[0])
	victim := c.nonLeader(nodes)
	survivors := without(nodes, victim)
	held := shardsOf(victim)
	before := c.fake.Stats()

	cut := time.Now()
	c.isolate(victim)
	// Within its lease (plus a renewal period) the cut-off node stops everything.
	waitFor(t, victim.cfg.Lease+2*time.Second, "the cut-off node suspended", func() error {
		if r := victim.running(); r > 0 {
			return fmt.Errorf("%d shards still running on %s", r, victim.Name())
		}
		return nil
	})
	t.Logf("suspended %v after the cut", time.Since(cut).Round(time.Millisecond))
	st := victim.Status(context.Background())
	if st.Lease.Held || st.Lease.Reason == "" {
		t.Errorf("status of the cut-off node: lease %+v, want not held with a reason", st.Lease)
	}
	// The majority moves its shards and resumes them.
	per := c.allReady(30*time.Second, survivors[0])
	if per[victim.Name()] != 0 {
		t.Fatalf("cut-off node still owns %d shards", per[victim.Name()])
	}
	if got := c.fake.Stats().Identifies; got != before.Identifies {
		t.Errorf("identifies %d→%d: the moved shards should have resumed", before.Identifies, got)
	}

	c.heal()
	// One cluster again: the node is back, gets shards through rebalancing, and never
	// ran a shard that moved.
	waitFor(t, 30*time.Second, "the healed node back with its share", func() error {
		m, ok := survivors[0].fsm.Member(victim.Name())
		if !ok || m.State.String() != "alive" {
			return fmt.Errorf("member %v %v", ok, m.State)
		}
		if n := len(shardsOf(victim)); n < 3 {
			return fmt.Errorf("healed node holds %d shards", n)
		}
		return nil
	})
	c.readyAndBalanced(30*time.Second, victim, nodes...)
	for _, n := range nodes {
		if l := n.Status(context.Background()).Leader; l != survivors[0].Status(context.Background()).Leader {
			t.Errorf("%s sees leader %q", n.Name(), l)
		}
	}
	c.checkOneLive()
	c.events.check(t, c.fake.Stats(), false)
	t.Logf("victim held %v before the cut", held)
}

func TestQuorumLossSuspendsUntilAPeerReturns(t *testing.T) {
	c := newTestCluster(t, 9, gatewaytest.Options{})
	nodes := c.startN(3)
	c.waitLeader(20*time.Second, nodes...)
	c.allReady(30*time.Second, nodes[0])
	c.checkpointed(nodes[0])
	survivor := nodes[2]
	before := c.fake.Stats()
	nodes[0].Kill()
	nodes[1].Kill()
	waitFor(t, survivor.cfg.Lease+2*time.Second, "the survivor suspended", func() error {
		if r := survivor.running(); r > 0 {
			return fmt.Errorf("%d shards still running", r)
		}
		return nil
	})
	st := survivor.Status(context.Background())
	if st.Lease.Held || !strings.Contains(st.Lease.Reason, "quorum") {
		t.Errorf("status says lease %+v; want it lost, naming quorum", st.Lease)
	}

	// A peer comes back with its data dir and ports: a majority again.
	back := c.restart(nodes[1])
	c.waitLeader(30*time.Second, survivor, back)
	c.allReady(40*time.Second, survivor)
	after := c.fake.Stats()
	if after.Identifies != before.Identifies {
		t.Errorf("identifies %d→%d: every shard should have resumed", before.Identifies, after.Identifies)
	}
	c.events.check(t, after, false)
}

// restart starts a killed node again with its data dir and ports.
func (c *testCluster) restart(n *testNode) *testNode {
	c.t.Helper()
	cfg := n.cfg
	cfg.GossipAddr, cfg.ClusterAddr, cfg.HTTPAddr = n.GossipAddr(), n.ClusterAddr(), n.HTTPAddr()
	cfg.Join = nil
	for _, o := range c.nodes {
		if o != n && o.ctx.Err() == nil {
			cfg.Join = append(cfg.Join, o.GossipAddr())
		}
	}
	return c.start(cfg)
}

func TestFourthNodeJoinsAndRestartRejoins(t *testing.T) {
	c := newTestCluster(t, 12, gatewaytest.Options{EventRate: 50})
	nodes := c.startN(3)
	c.waitLeader(20*time.Second, nodes...)
	c.allReady(30*time.Second, nodes[0])
	before := c.fake.Stats()

	fourth := c.start(c.config("node4", 3), nodes[0])
	all := append(nodes, fourth)
	waitFor(t, 30*time.Second, "the fourth node at its share", func() error {
		if n := len(shardsOf(fourth)); n != 3 {
			return fmt.Errorf("node4 holds %d shards", n)
		}
		return nil
	})
	c.readyAndBalanced(30*time.Second, fourth, all...)
	if got := c.fake.Stats().Identifies; got != before.Identifies {
		t.Errorf("identifies %d→%d during rebalancing", before.Identifies, got)
	}
	c.checkOneLive()
	if dups := c.events.check(t, c.fake.Stats(), true); dups != 0 {
		t.Errorf("%d duplicates from rebalancing handoffs", dups)
	}

	// Restart a node with its data dir: it comes back as itself.
	victim := c.nonLeader(nodes)
	victim.Kill()
	survivors := without(all, victim)
	c.allReady(30*time.Second, survivors[0])
	back := c.restart(victim)
	waitFor(t, 30*time.Second, "the restarted node back with shards", func() error {
		if back.gossip.ClusterID() != survivors[0].gossip.ClusterID() {
			return fmt.Errorf("cluster id %q, want %q", back.gossip.ClusterID(), survivors[0].gossip.ClusterID())
		}
		if n := len(shardsOf(back)); n < 2 {
			return fmt.Errorf("restarted node holds %d shards", n)
		}
		return nil
	})
	c.readyAndBalanced(30*time.Second, back, append(survivors, back)...)
}

func TestTwoClustersRefuseToMerge(t *testing.T) {
	c := newTestCluster(t, 2, gatewaytest.Options{})
	a := c.start(c.config("alpha", 1))
	b := c.start(c.config("beta", 1))
	c.waitLeader(20*time.Second, a)
	c.waitLeader(20*time.Second, b)
	waitFor(t, 10*time.Second, "both bootstrapped", func() error {
		if a.gossip.ClusterID() == "" || b.gossip.ClusterID() == "" {
			return errors.New("no cluster id yet")
		}
		return nil
	})
	_, err := b.gossip.Join([]string{a.GossipAddr()})
	if err == nil || !strings.Contains(err.Error(), "never merge") {
		t.Fatalf("join of two clusters: %v, want a refusal that says why", err)
	}
	for _, n := range []*testNode{a, b} {
		if got := len(n.gossip.Members()); got != 1 {
			t.Errorf("%s sees %d members of its cluster, want 1", n.Name(), got)
		}
	}
}

func TestNonVoterPromotedWhenAVoterDies(t *testing.T) {
	c := newTestCluster(t, 8, gatewaytest.Options{})
	var nodes []*testNode
	for i := range 3 {
		cfg := c.config(fmt.Sprintf("node%d", i+1), 3)
		cfg.Voters = 3
		if i == 0 {
			nodes = append(nodes, c.start(cfg))
		} else {
			nodes = append(nodes, c.start(cfg, nodes[0]))
		}
	}
	leader := c.waitLeader(20*time.Second, nodes...)
	cfg := c.config("node4", 3)
	cfg.Voters = 3
	fourth := c.start(cfg, nodes[0])
	suffrage := func(id string) string {
		for _, m := range leader.Status(context.Background()).Members {
			if m.ID == id {
				return m.Raft
			}
		}
		return ""
	}
	waitFor(t, 20*time.Second, "node4 in raft as a non-voter", func() error {
		if s := suffrage("node4"); s != "nonvoter" {
			return fmt.Errorf("node4 is %q", s)
		}
		return nil
	})
	victim := c.nonLeader(nodes)
	victim.Kill()
	// Dead for two leases, the voter is removed and node4 takes its vote.
	waitFor(t, 30*time.Second, "node4 promoted", func() error {
		if s := suffrage("node4"); s != "voter" {
			return fmt.Errorf("node4 is %q, %s is %q", s, victim.Name(), suffrage(victim.Name()))
		}
		return nil
	})
	c.allReady(30*time.Second, fourth)
}

func TestJoiningAnotherClusterIsFatal(t *testing.T) {
	c := newTestCluster(t, 2, gatewaytest.Options{})
	a := c.start(c.config("alpha", 1))
	g := c.start(c.config("gamma", 1))
	c.waitLeader(20*time.Second, a)
	c.waitLeader(20*time.Second, g)
	waitFor(t, 10*time.Second, "both bootstrapped", func() error {
		if a.gossip.ClusterID() == "" || g.gossip.ClusterID() == "" {
			return errors.New("no cluster id yet")
		}
		return nil
	})
	g.Kill()
	// gamma's data dir belongs to its own cluster; told to join alpha's, it must stop.
	cfg := g.cfg
	cfg.GossipAddr, cfg.ClusterAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Join = []string{a.GossipAddr()}
	back, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Kill()
	select {
	case err := <-back.Fatal():
		if !errors.Is(err, membership.ErrOtherCluster) || !strings.Contains(err.Error(), "empty --data-dir") {
			t.Fatalf("fatal error %v does not say what to do", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a node of another cluster joined without a fatal error")
	}
}

// A leader cut off from a quorum believes it leads until Raft steps it down, but it
// renews no lease on that belief, its own included: it stops its shards within its
// lease like any other node, and the majority's new leader moves them without a
// second live connection or an identify.
func TestCutOffLeaderStopsItsOwnShards(t *testing.T) {
	c := newTestCluster(t, 9, gatewaytest.Options{})
	nodes := c.startN(3)
	leader := c.waitLeader(20*time.Second, nodes...)
	c.allReady(30*time.Second, nodes[0])
	c.checkpointed(nodes[0])
	survivors := without(nodes, leader)
	before := c.fake.Stats()

	c.isolate(leader)
	waitFor(t, leader.leaseDuration()+2*time.Second, "the cut-off leader's shards suspended", func() error {
		if r := leader.running(); r > 0 {
			return fmt.Errorf("%d shards still running on %s", r, leader.Name())
		}
		return nil
	})
	c.waitLeader(30*time.Second, survivors...)
	per := c.allReady(30*time.Second, survivors[0])
	if per[leader.Name()] != 0 {
		t.Fatalf("the old leader still owns %d shards", per[leader.Name()])
	}
	c.checkOneLive()
	if after := c.fake.Stats(); after.Identifies != before.Identifies {
		t.Errorf("identifies %d→%d: the moved shards should have resumed", before.Identifies, after.Identifies)
	}
	c.heal()
	c.readyAndBalanced(40*time.Second, survivors[0], nodes...)
	c.checkOneLive()
	c.events.check(t, c.fake.Stats(), false)
}
