package node

import (
	"fmt"
	"testing"
	"time"

	"github.com/discluster/discluster/shard/gatewaytest"
)

// More agents than --bootstrap-expect, started together, see each other in different
// orders. They must still make one cluster, not two that share a member.
func TestMoreAgentsThanBootstrapExpectMakeOneCluster(t *testing.T) {
	c := newTestCluster(t, 10, gatewaytest.Options{})
	first := c.start(c.config("node1", 3))
	nodes := []*testNode{first}
	for i := 2; i <= 5; i++ {
		nodes = append(nodes, c.start(c.config(fmt.Sprintf("node%d", i), 3), first))
	}
	leader := c.waitLeader(30*time.Second, nodes...)
	waitFor(t, 30*time.Second, "one cluster of 5", func() error {
		f := leader.raft.GetConfiguration()
		if err := f.Error(); err != nil {
			return err
		}
		if got := len(f.Configuration().Servers); got != 5 {
			return fmt.Errorf("the leader's Raft configuration has %d servers", got)
		}
		id := leader.gossip.ClusterID()
		for _, n := range nodes {
			if n.gossip.ClusterID() != id {
				return fmt.Errorf("%s is in cluster %q, the leader %s in %q", n.Name(), n.gossip.ClusterID(), leader.Name(), id)
			}
			if c := n.gossip.Conflict(); c != nil {
				return fmt.Errorf("%s: %v", n.Name(), c)
			}
		}
		return nil
	})
	for _, n := range nodes {
		if n != leader && n.IsLeader() {
			t.Fatalf("two leaders: %s and %s", leader.Name(), n.Name())
		}
	}
	c.allReady(30*time.Second, leader)
}
