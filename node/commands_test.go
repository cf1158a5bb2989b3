package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/shard/gatewaytest"
)

// A command sent to any node reaches Discord on its shard's connection, through the
// shard's owner: by shard id and by guild id; a shard the cluster does not run is
// refused, and nothing else is sent.
func TestCommandsReachTheirShardThroughAnyNode(t *testing.T) {
	const shards = 6
	c := newTestCluster(t, shards, gatewaytest.Options{})
	nodes := c.startN(3)
	leader := c.waitLeader(20*time.Second, nodes...)
	c.allReady(30*time.Second, leader)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	forwarded := 0
	for id := range shards {
		// Through the owner for shard 0, through another node for every other.
		a, _ := leader.fsm.Assignment(id)
		via := nodes[0]
		for _, n := range nodes {
			if (n.Name() == a.Node) == (id == 0) {
				via = n
				break
			}
		}
		presence := api.Command{Op: 3, D: json.RawMessage(fmt.Sprintf(`{"since":null,"activities":[{"name":"shard %d","type":0}],"status":"online","afk":false}`, id))}
		sent, err := api.NewClient(via.HTTPAddr()).Send(ctx, api.Target{Shard: id}, presence)
		if err != nil {
			t.Fatalf("shard %d through %s: %v", id, via.Name(), err)
		}
		if a, _ := via.fsm.Assignment(id); sent.Node != a.Node {
			t.Errorf("shard %d was written by %s, its owner is %s", id, sent.Node, a.Node)
		}
		if sent.Node != via.Name() {
			forwarded++
		}
	}
	if forwarded != shards-1 {
		t.Fatalf("%d commands were forwarded, want %d", forwarded, shards-1)
	}
	st := c.fake.Stats()
	for id := range shards {
		sh := st.Shards[id]
		if sh.Commands[3] != 1 || !strings.Contains(string(sh.LastCommand), fmt.Sprintf(`"shard %d"`, id)) {
			t.Errorf("shard %d: the fake got %v, last %s; want its one presence update", id, sh.Commands, sh.LastCommand)
		}
	}

	// By guild: (guild_id >> 22) % shards.
	guild := uint64(4)<<22 | 12345
	sent, err := api.NewClient(nodes[0].HTTPAddr()).Send(ctx, api.Target{Guild: guild, ByGuild: true}, api.Command{Op: 4, D: json.RawMessage(`{"guild_id":"1","channel_id":null,"self_mute":false,"self_deaf":false}`)})
	if err != nil || sent.Shard != 4 {
		t.Fatalf("by guild: %+v, %v; want shard 4", sent, err)
	}
	if got := c.fake.Stats().Shards[4].Commands[4]; got != 1 {
		t.Fatalf("shard 4 got %d voice state updates, want 1", got)
	}

	_, err = api.NewClient(nodes[1].HTTPAddr()).Send(ctx, api.Target{Shard: shards}, api.Command{Op: 3, D: json.RawMessage(`{}`)})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeUnknownShard {
		t.Fatalf("a shard past the count: %v, want %s", err, api.CodeUnknownShard)
	}
	total := 0
	for _, sh := range c.fake.Stats().Shards {
		for _, n := range sh.Commands {
			total += n
		}
	}
	if total != shards+1 {
		t.Fatalf("the fake got %d commands, want %d", total, shards+1)
	}
}
