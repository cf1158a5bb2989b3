package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/discluster/discluster/node/rpc"
	"github.com/discluster/discluster/shard/gatewaytest"
)

// The leader grants an identify only to the shard's current owner at the epoch the
// request names, and the owner's node lets a shard log in only at its epoch.
func TestIdentifyGrantedOnlyToTheOwnerWithALease(t *testing.T) {
	c := newTestCluster(t, 2, gatewaytest.Options{})
	n := c.start(c.config("node1", 1))
	c.waitLeader(20*time.Second, n)
	c.allReady(30*time.Second, n)
	a, ok := n.fsm.Assignment(0)
	if !ok || a.Node != n.Name() {
		t.Fatalf("shard 0: %+v", a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name  string
		node  string
		epoch uint64
	}{
		{"another node", "node9", a.Epoch},
		{"a stale epoch", n.Name(), a.Epoch - 1},
		{"a later epoch", n.Name(), a.Epoch + 1},
	} {
		if _, err := n.leader.GrantIdentify(ctx, tc.node, 0, 0, tc.epoch); !errors.Is(err, rpc.ErrNotOwner) {
			t.Errorf("%s: grant %v, want rpc.ErrNotOwner", tc.name, err)
		}
	}
	if err := n.runner.MayLogin(0, 0, a.Epoch); err != nil {
		t.Fatalf("the owner with a lease may not log in: %v", err)
	}
	if err := n.runner.MayLogin(0, 0, a.Epoch+1); !errors.Is(err, rpc.ErrNotOwner) {
		t.Errorf("login at another epoch: %v, want rpc.ErrNotOwner", err)
	}
	// Without a lease, neither the leader nor the node lets the owner log in: see
	// leader.TestIdentifyRefusedWithoutALease and runner.TestNoLoginWithoutALease,
	// which move the clock rather than race the lease loop.
}
