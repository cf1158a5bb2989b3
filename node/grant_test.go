package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/discluster/discluster/shard/gatewaytest"
)

// The leader grants an identify only to the shard's current owner at the epoch the
// request names, and only while that owner holds a lease from it; a shard's own
// node refuses to log in once its lease is gone.
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
		if _, err := n.grantIdentify(ctx, tc.node, 0, tc.epoch); !errors.Is(err, ErrNotOwner) {
			t.Errorf("%s: grant %v, want ErrNotOwner", tc.name, err)
		}
	}
	if err := n.mayLogin(0, a.Epoch); err != nil {
		t.Fatalf("the owner with a lease may not log in: %v", err)
	}
	if err := n.mayLogin(0, a.Epoch+1); !errors.Is(err, ErrNotOwner) {
		t.Errorf("login at another epoch: %v, want ErrNotOwner", err)
	}
	// Without a lease, neither the leader nor the node lets the owner log in. The
	// lease loop may renew between the test's expiry and the check; such a round is
	// tried again (a bounded number of times), any other grant is a failure.
	ls := n.leader.Load()
	for try := 0; ; try++ {
		expired := time.Now()
		ls.mu.Lock()
		ls.lastRenew[n.Name()] = expired.Add(-time.Hour)
		ls.mu.Unlock()
		_, err := n.grantIdentify(ctx, n.Name(), 0, a.Epoch)
		if errors.Is(err, ErrNotOwner) {
			break
		}
		ls.mu.Lock()
		renewed := ls.lastRenew[n.Name()].After(expired)
		ls.mu.Unlock()
		if !renewed || try == 5 {
			t.Fatalf("grant to an owner without a lease: %v, want ErrNotOwner", err)
		}
	}
	for try := 0; ; try++ {
		expired := time.Now().Add(-time.Second)
		n.lease.mu.Lock()
		n.lease.until = expired
		n.lease.mu.Unlock()
		if n.mayLogin(0, a.Epoch) != nil {
			break
		}
		n.lease.mu.Lock()
		renewed := n.lease.until.After(expired)
		n.lease.mu.Unlock()
		if !renewed || try == 5 {
			t.Fatal("a node without a lease may log in")
		}
	}
}
