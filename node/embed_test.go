package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/sink"
	"github.com/discluster/discluster/shard"
	"github.com/discluster/discluster/shard/gatewaytest"
)

// Each accepts the events before the first one its function refused, and no more.
func TestEachStopsAtTheFirstRefusal(t *testing.T) {
	batch := make([]sink.Delivery, 5)
	for i := range batch {
		batch[i].Event = shard.Event{Seq: int64(i + 1)}
	}
	refuse := func(seq int64) Handler {
		return Each(func(_ context.Context, _ *Node, d sink.Delivery) error {
			if d.Event.Seq == seq {
				return errors.New("not now")
			}
			return nil
		})
	}
	for _, tc := range []struct {
		refused int64
		want    int
	}{{0, 5}, {1, 0}, {3, 2}, {5, 4}} {
		err := refuse(tc.refused)(context.Background(), nil, batch)
		if got := sink.Accepted(err, len(batch)); got != tc.want {
			t.Errorf("refusing seq %d: %d accepted (%v), want %d", tc.refused, got, err, tc.want)
		}
	}
}

func TestConfigTakesASinkOrAHandler(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Sink = sink.NewNDJSON(nil, false)
	cfg.Handler = Each(func(context.Context, *Node, sink.Delivery) error { return nil })
	if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Handler") {
		t.Fatalf("a config with a Sink and a Handler: %v, want ErrInvalidConfig naming them", err)
	}
}

// A program embedding the agent: its Handler gets each shard's events with the node
// that runs the shard, and answers through Send, which reaches any shard's owner
// (forwarded when that is another node), as the API does; Send's refusals are the
// API's errors.
func TestEmbeddedHandlerAnswersThroughSend(t *testing.T) {
	const shards = 4
	c := newTestCluster(t, shards, gatewaytest.Options{})
	type answer struct {
		from, to int
		handler  string // the node whose handler got the message
		sent     api.Sent
		err      error
	}
	var mu sync.Mutex
	var answers []answer
	handler := Each(func(ctx context.Context, n *Node, d sink.Delivery) error {
		var m struct {
			Content string `json:"content"`
		}
		if d.Event.Type != "MESSAGE_CREATE" || json.Unmarshal(d.Event.Data, &m) != nil || m.Content != "!ping" {
			return nil
		}
		// The answer goes to the next shard, so that half of them are another node's.
		to := (d.Event.ShardID + 1) % shards
		presence := map[string]any{"since": nil, "status": "online", "afk": false,
			"activities": []any{map[string]any{"name": fmt.Sprintf("pong from %d", d.Event.ShardID), "type": 0}}}
		sent, err := n.Send(ctx, to, 3, presence)
		var retry *api.RetryError
		if errors.As(err, &retry) {
			return err
		}
		mu.Lock()
		answers = append(answers, answer{d.Event.ShardID, to, n.Name(), sent, err})
		mu.Unlock()
		return nil
	})
	nodes := c.startNWith(2, func(cfg *Config) {
		cfg.Sink, cfg.Handler = nil, handler
		cfg.Intents |= 1<<1 | 1<<15 // GUILD_MEMBERS, MESSAGE_CONTENT
	})
	leader := c.waitLeader(20*time.Second, nodes...)
	c.readyAndBalanced(30*time.Second, leader, nodes...)

	for id := range shards {
		if err := c.fake.SendMessage(id, "!ping"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "an answer to every !ping", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(answers) < shards {
			return fmt.Errorf("%d answers", len(answers))
		}
		return nil
	})
	mu.Lock()
	forwarded := 0
	for _, a := range answers {
		from, _ := leader.fsm.Assignment(a.from)
		to, _ := leader.fsm.Assignment(a.to)
		switch {
		case a.err != nil:
			t.Errorf("shard %d's answer to shard %d: %v", a.from, a.to, a.err)
		case a.handler != from.Node:
			t.Errorf("shard %d's message was handled by %s, its owner is %s", a.from, a.handler, from.Node)
		case a.sent.Node != to.Node || a.sent.Shard != a.to:
			t.Errorf("shard %d's answer: %+v, want shard %d written by its owner %s", a.from, a.sent, a.to, to.Node)
		}
		if a.sent.Node != a.handler {
			forwarded++
		}
	}
	mu.Unlock()
	if forwarded == 0 {
		t.Error("no answer was forwarded to another node")
	}
	st := c.fake.Stats()
	for id := range shards {
		want := fmt.Sprintf(`"pong from %d"`, (id+shards-1)%shards)
		if sh := st.Shards[id]; sh.Commands[3] != 1 || !strings.Contains(string(sh.LastCommand), want) {
			t.Errorf("shard %d: the fake got %v, last %s; want one presence with %s", id, sh.Commands, sh.LastCommand, want)
		}
	}

	// The refusals, as a Go caller tests them.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := nodes[0]
	guild := uint64(2)<<22 | 1<<17 // guild index 2: shard 2's
	members := json.RawMessage(fmt.Sprintf(`{"guild_id":"%d","query":"","limit":0,"nonce":"embed-1"}`, guild))
	for _, tc := range []struct {
		what string
		err  error
		send func() (api.Sent, error)
	}{
		{"a shard past the count", api.ErrUnknownShard, func() (api.Sent, error) { return n.Send(ctx, shards, 3, json.RawMessage(`{}`)) }},
		{"IDENTIFY", api.ErrBadCommand, func() (api.Sent, error) { return n.Send(ctx, 0, 2, map[string]any{}) }},
		{"a d that is not an object", api.ErrBadCommand, func() (api.Sent, error) { return n.Send(ctx, 0, 3, "online") }},
		{"a guild's command on another shard", api.ErrBadCommand, func() (api.Sent, error) { return n.Send(ctx, 1, 8, members) }},
		{"a payload over 4096 bytes", api.ErrPayloadTooLarge, func() (api.Sent, error) {
			return n.Send(ctx, 0, 3, map[string]any{"status": strings.Repeat("x", 4100)})
		}},
	} {
		if _, err := tc.send(); !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", tc.what, err, tc.err)
		}
	}
	sent, err := n.SendGuild(ctx, guild, 8, members)
	if err != nil || sent.Shard != 2 {
		t.Fatalf("all members of guild %d: %+v, %v; want sent on shard 2", guild, sent, err)
	}
	_, err = nodes[1].SendGuild(ctx, guild, 8, members)
	var retry *api.RetryError
	if !errors.Is(err, api.ErrRateLimited) || !errors.As(err, &retry) || retry.After <= 0 || retry.After > 30*time.Second {
		t.Fatalf("all members again within 30 s: %v, want api.ErrRateLimited with the wait", err)
	}
	if got := c.fake.Stats().Shards[2].Commands[8]; got != 1 {
		t.Fatalf("shard 2 got %d member requests, want 1", got)
	}
}
