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
		id := leader.clusterID()
		for _, n := range nodes {
			if n.clusterID() != id {
				return fmt.Errorf("%s is in cluster %q, the leader %s in %q", n.Name(), n.clusterID(), leader.Name(), id)
			}
			if c := n.conflict.Load(); c != nil {
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

// A node promises its bootstrap vote to one bootstrapper at a time; the promise lapses
// if that one goes quiet, and is freed when it gives up.
func TestBootstrapPromiseGoesToOneBootstrapper(t *testing.T) {
	var p bootstrapPromise
	if err := p.take("a"); err != nil {
		t.Fatal(err)
	}
	if err := p.take("a"); err != nil {
		t.Fatalf("the same bootstrapper asking again: %v", err)
	}
	if err := p.take("b"); err == nil {
		t.Fatal("promised to two bootstrappers")
	}
	p.release("b") // not b's to free
	if err := p.take("b"); err == nil {
		t.Fatal("a release by another freed the promise")
	}
	p.release("a")
	if err := p.take("b"); err != nil {
		t.Fatalf("after a's release: %v", err)
	}
	p.mu.Lock()
	p.until = time.Now().Add(-time.Millisecond)
	p.mu.Unlock()
	if err := p.take("c"); err != nil {
		t.Fatalf("after b's promise lapsed: %v", err)
	}
}
