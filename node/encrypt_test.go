package node

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/shard/gatewaytest"
)

func gossipNames(n *testNode) []string {
	var out []string
	for _, m := range n.gossip.Members() {
		out = append(out, m.Name)
	}
	slices.Sort(out)
	return out
}

// With a gossip key, an agent without it or with another cannot join or read a
// message; the keyring rotates on every member through the API (install, use,
// remove), a node with only the new key joins, and a restarted node keeps the
// rotated keyring from its data dir without being told the key again.
func TestGossipEncryptionKeepsOthersOutAndRotates(t *testing.T) {
	c := newTestCluster(t, 4, gatewaytest.Options{})
	keyA, _ := ParseGossipKey(NewGossipKey())
	nodes := c.startNWith(2, func(cfg *Config) { cfg.EncryptKey = keyA })
	c.waitLeader(20*time.Second, nodes...)
	c.allReady(30*time.Second, nodes[0])

	keyB, _ := ParseGossipKey(NewGossipKey())
	for _, tc := range []struct {
		name string
		key  []byte
	}{{"nokey", nil}, {"wrongkey", keyB}} {
		cfg := c.config(tc.name, 2)
		cfg.EncryptKey = tc.key
		o := c.start(cfg, nodes[0])
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) { // a negative: it must stay out for a while
			if names := gossipNames(nodes[0]); slices.Contains(names, tc.name) {
				t.Fatalf("%s got into the pool: %v", tc.name, names)
			}
			if names := gossipNames(o); len(names) != 1 {
				t.Fatalf("%s reads the pool: it sees %v", tc.name, names)
			}
			time.Sleep(100 * time.Millisecond)
		}
		o.Kill()
	}

	// Rotate: install C everywhere, make it the primary, remove A.
	keyC := NewGossipKey()
	cl := api.NewClient(nodes[1].HTTPAddr())
	ctx := context.Background()
	for _, step := range []struct{ op, key string }{{"install", keyC}, {"use", keyC}, {"remove", encodeKey(keyA)}} {
		k, err := cl.Keyring(ctx, step.op, step.key)
		if err != nil || len(k.Failed) > 0 {
			t.Fatalf("%s: %+v %v", step.op, k, err)
		}
	}
	k, err := cl.Keyring(ctx, "list", "")
	if err != nil || len(k.Keys) != 1 || k.Keys[keyC] != 2 || k.Primary[keyC] != 2 {
		t.Fatalf("after the rotation: %+v %v, want only the new key on both, as primary", k, err)
	}
	if _, err := cl.Keyring(ctx, "remove", keyC); err == nil {
		t.Fatal("the primary key was removed")
	}

	newKeyOnly, _ := ParseGossipKey(keyC)
	cfg := c.config("node3", 2)
	cfg.EncryptKey = newKeyOnly
	third := c.start(cfg, nodes[0])
	waitFor(t, 20*time.Second, "the node with the new key in the pool", func() error {
		if names := gossipNames(nodes[0]); !slices.Contains(names, "node3") {
			return fmt.Errorf("members %v", names)
		}
		return nil
	})
	// node2 restarts without --encrypt: its data dir's keyring has the new key.
	nodes[1].Kill()
	nodes[1].cfg.EncryptKey = nil
	back := c.restart(nodes[1])
	waitFor(t, 30*time.Second, "node2 back in the pool with the rotated keyring", func() error {
		if names := gossipNames(back); len(names) != 3 {
			return fmt.Errorf("node2 sees %v", names)
		}
		return nil
	})
	c.readyAndBalanced(40*time.Second, nodes[0], nodes[0], back, third)
}
