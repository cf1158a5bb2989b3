package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/discluster/discluster/node"
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/sink"
	"github.com/discluster/discluster/shard"
)

// A bot that is an agent of the cluster: it answers "!ping" by setting the bot's
// presence on the shard the message came from, through that shard's owner.
func ExampleHandler() {
	cfg := node.DefaultConfig()
	cfg.Name, cfg.DataDir = "bot-1", "/var/lib/bot"
	cfg.Join = []string{"10.0.0.1:7946"} // or BootstrapExpect for the first ones
	cfg.Token = shard.Token(os.Getenv("DISCORD_TOKEN"))
	cfg.Intents = 1<<0 | 1<<9 | 1<<15 // GUILDS, GUILD_MESSAGES, MESSAGE_CONTENT
	cfg.Events = []string{"MESSAGE_CREATE"}
	cfg.Handler = node.Each(func(ctx context.Context, n *node.Node, d sink.Delivery) error {
		var m struct {
			Content string `json:"content"`
		}
		if json.Unmarshal(d.Event.Data, &m) != nil || m.Content != "!ping" {
			return nil // not for this bot: accepted, the shard moves on
		}
		presence := map[string]any{"since": nil, "status": "online", "afk": false,
			"activities": []any{map[string]any{"name": "pong", "type": 0}}}
		_, err := n.Send(ctx, d.Event.ShardID, 3, presence)
		if retry := (*api.RetryError)(nil); errors.As(err, &retry) {
			return err // connecting, moving or rate limited: the event comes again
		}
		if err != nil {
			log.Printf("shard %d: !ping not answered: %v", d.Event.ShardID, err)
		}
		return nil
	})
	n, err := node.Start(cfg)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	select {
	case <-ctx.Done():
	case err := <-n.Fatal():
		n.Kill()
		log.Fatal(err)
	}
	// Hand the shards off to the other members, each at its exact seq.
	leave, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := n.Leave(leave); err != nil {
		log.Print(err)
	}
}
