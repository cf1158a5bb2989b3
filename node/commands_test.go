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
	// Sent means written on the connection; the fake counts a command once it read
	// it, a moment later.
	waitFor(t, 10*time.Second, "every shard's presence update at the fake", func() error {
		st := c.fake.Stats()
		for id := range shards {
			sh := st.Shards[id]
			if sh.Commands[3] != 1 || !strings.Contains(string(sh.LastCommand), fmt.Sprintf(`"shard %d"`, id)) {
				return fmt.Errorf("shard %d: the fake got %v, last %s; want its one presence update", id, sh.Commands, sh.LastCommand)
			}
		}
		return nil
	})

	// By guild: (guild_id >> 22) % shards.
	guild := uint64(4)<<22 | 12345
	voice := api.Command{Op: 4, D: json.RawMessage(fmt.Sprintf(`{"guild_id":"%d","channel_id":null,"self_mute":false,"self_deaf":false}`, guild))}
	sent, err := api.NewClient(nodes[0].HTTPAddr()).Send(ctx, api.Target{Guild: guild, ByGuild: true}, voice)
	if err != nil || sent.Shard != 4 {
		t.Fatalf("by guild: %+v, %v; want shard 4", sent, err)
	}
	waitFor(t, 10*time.Second, "the voice state update at the fake", func() error {
		if got := c.fake.Stats().Shards[4].Commands[4]; got != 1 {
			return fmt.Errorf("shard 4 got %d voice state updates, want 1", got)
		}
		return nil
	})
	// A guild's command sent to another shard is refused: Discord would ignore it.
	var ae *api.Error
	if _, err := api.NewClient(nodes[0].HTTPAddr()).Send(ctx, api.Target{Shard: 3}, voice); !errors.As(err, &ae) || ae.Code != api.CodeBadCommand {
		t.Fatalf("guild %d's voice state to shard 3: %v, want %s", guild, err, api.CodeBadCommand)
	}
	// All of a guild's members, twice within 30 s, through different nodes: the
	// owner sends the first and refuses the second with the wait.
	all := api.Command{Op: 8, D: json.RawMessage(fmt.Sprintf(`{"guild_id":"%d","query":"","limit":0,"nonce":"n1"}`, guild))}
	if _, err := api.NewClient(nodes[1].HTTPAddr()).Send(ctx, api.Target{Guild: guild, ByGuild: true}, all); err != nil {
		t.Fatalf("a request for all members: %v", err)
	}
	if _, err := api.NewClient(nodes[2].HTTPAddr()).Send(ctx, api.Target{Guild: guild, ByGuild: true}, all); !errors.As(err, &ae) || ae.Code != api.CodeRateLimited {
		t.Fatalf("a second request for all members within 30 s: %v, want %s", err, api.CodeRateLimited)
	}

	_, err = api.NewClient(nodes[1].HTTPAddr()).Send(ctx, api.Target{Shard: shards}, api.Command{Op: 3, D: json.RawMessage(`{}`)})
	if !errors.As(err, &ae) || ae.Code != api.CodeUnknownShard {
		t.Fatalf("a shard past the count: %v, want %s", err, api.CodeUnknownShard)
	}
	waitFor(t, 10*time.Second, "the fake to have every command sent, and no other", func() error {
		total := 0
		for _, sh := range c.fake.Stats().Shards {
			for _, n := range sh.Commands {
				total += n
			}
		}
		if total != shards+2 {
			return fmt.Errorf("the fake got %d commands, want %d", total, shards+2)
		}
		return nil
	})
}
