// Command embed is a small Discord bot that is a discluster agent itself: it joins
// (or bootstraps) a cluster as `discluster agent` does, runs the shards the cluster
// gives it, and handles their events in the same process, answering through the
// commands path (gateway commands: a bot posts messages over REST, which this
// example leaves out):
//
//   - "!ping" sets the bot's presence to "pong" (op 3) on the message's shard;
//   - "!members" asks for all of the guild's members (op 8) with a nonce of its own,
//     and logs the GUILD_MEMBERS_CHUNKs that come back with that nonce.
//
// Run it against the fake Discord (see the README, "Embedding in Go"):
//
//	discluster fake-discord --shards 2 &
//	DISCORD_TOKEN=fake-token go run ./examples/embed --name b1 --data-dir /tmp/b1 \
//	  --shards 2 --timing fast --api-base http://127.0.0.1:7080/api/v10
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/discluster/discluster/node"
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/sink"
	"github.com/discluster/discluster/shard"
)

// Gateway intents: GUILDS, GUILD_MEMBERS, GUILD_MESSAGES and MESSAGE_CONTENT. The
// second and the last are privileged: enable them for the bot in Discord's developer
// portal, or Discord closes the connection with 4014.
const defaultIntents = 1<<0 | 1<<1 | 1<<9 | 1<<15

// Gateway opcodes the bot sends.
const (
	opPresenceUpdate      = 3
	opRequestGuildMembers = 8
)

// noncePrefix marks the member requests of this bot: other workers of the same
// bot may ask too, and every chunk is an event of the guild's shard like any other.
const noncePrefix = "embed:"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "embed:", err)
		os.Exit(1)
	}
}

// run runs the bot until ctx ends, then hands its shards off and leaves.
func run(ctx context.Context, args []string, logs io.Writer) error {
	cfg, err := config(args, logs)
	if err != nil {
		return err
	}
	log := cfg.Logger
	cfg.Events = []string{"MESSAGE_CREATE", "GUILD_MEMBERS_CHUNK"}
	cfg.Handler = node.Each((&bot{log: log}).handle)
	n, err := node.Start(cfg)
	if err != nil {
		return err
	}
	log.Info("bot started", "node", n.Name(), "gossip", n.GossipAddr(), "http", n.HTTPAddr())
	select {
	case <-ctx.Done():
	case err := <-n.Fatal():
		n.Kill()
		return err
	}
	// Each shard goes to another member at its exact seq; alone, the bot stops them
	// resumably and the next start resumes them.
	leave, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return n.Leave(leave)
}

// config is the node's configuration from the flags: the agent's defaults, and the
// few flags a bot needs to join a cluster and reach Discord (or the fake).
func config(args []string, logs io.Writer) (node.Config, error) {
	cfg := node.DefaultConfig()
	fs := flag.NewFlagSet("embed", flag.ContinueOnError)
	fs.SetOutput(logs)
	fs.StringVar(&cfg.Name, "name", cfg.Name, "unique node name, stable across restarts")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "where Raft keeps its log and snapshots (required)")
	join := fs.String("join", "", "gossip addresses of members, HOST:PORT, comma-separated")
	fs.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", cfg.BootstrapExpect, "bootstrap Raft once this many agents see each other")
	fs.StringVar(&cfg.GossipAddr, "gossip-addr", cfg.GossipAddr, "gossip bind address")
	fs.StringVar(&cfg.ClusterAddr, "cluster-addr", cfg.ClusterAddr, "Raft and RPC bind address")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "the agent's API (discluster status --addr)")
	fs.IntVar(&cfg.Shards, "shards", 0, "total shards; 0 asks Discord")
	fs.StringVar(&cfg.APIBase, "api-base", cfg.APIBase, "Discord's REST API (the fake's, for a test)")
	fs.StringVar(&cfg.GatewayURL, "gateway-url", "", "gateway URL (default: from GET /gateway/bot)")
	fs.DurationVar(&cfg.IdentifyWindow, "identify-window", cfg.IdentifyWindow, "one identify per bucket per window")
	fs.Uint64Var(&cfg.Intents, "intents", defaultIntents, "gateway intents")
	timing := fs.String("timing", "lan", "protocol timers: lan, or fast (one machine)")
	tokenFile := fs.String("token-file", "", "file holding the bot token (instead of DISCORD_TOKEN)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("no arguments expected, got %q", fs.Args())
	}
	if *join != "" {
		cfg.Join = strings.Split(*join, ",")
	}
	switch *timing {
	case "lan":
		cfg.Timing = node.LANTiming()
	case "fast":
		cfg.Timing = node.FastTiming()
	default:
		return cfg, fmt.Errorf("--timing %q: want lan or fast", *timing)
	}
	tok := os.Getenv("DISCORD_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return cfg, fmt.Errorf("--token-file: %w", err)
		}
		tok = string(b)
	}
	if cfg.Token = shard.Token(strings.TrimSpace(tok)); cfg.Token == "" {
		return cfg, errors.New("no bot token: set DISCORD_TOKEN, or --token-file PATH")
	}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	return cfg, cfg.Validate()
}

// bot handles the events of the shards its node runs.
type bot struct{ log *slog.Logger }

type message struct {
	GuildID string `json:"guild_id"` // empty in a DM
	Content string `json:"content"`
	Author  struct {
		Bot bool `json:"bot"`
	} `json:"author"`
}

type membersChunk struct {
	GuildID    string            `json:"guild_id"`
	Members    []json.RawMessage `json:"members"`
	ChunkIndex int               `json:"chunk_index"`
	ChunkCount int               `json:"chunk_count"`
	Nonce      string            `json:"nonce"`
}

// handle is called for each event, in order per shard. Its error has the event
// delivered again (see node.Handler), so it returns one only when a retry can help.
func (b *bot) handle(ctx context.Context, n *node.Node, d sink.Delivery) error {
	ev := d.Event
	switch ev.Type {
	case "MESSAGE_CREATE":
		var m message
		if err := json.Unmarshal(ev.Data, &m); err != nil {
			b.log.Warn("a MESSAGE_CREATE that is not a message: skipped", "shard", ev.ShardID, "seq", ev.Seq, "err", err)
			return nil
		}
		if m.Author.Bot {
			return nil // never answer a bot
		}
		switch strings.TrimSpace(m.Content) {
		case "!ping":
			presence := map[string]any{"since": nil, "status": "online", "afk": false,
				"activities": []any{map[string]any{"name": "pong", "type": 0}}}
			sent, err := n.Send(ctx, ev.ShardID, opPresenceUpdate, presence)
			return b.settle("!ping", d, sent, err)
		case "!members":
			guild, err := strconv.ParseUint(m.GuildID, 10, 64)
			if err != nil {
				b.log.Info("!members outside a guild: nothing to ask", "shard", ev.ShardID, "seq", ev.Seq)
				return nil
			}
			// The nonce names this request (at most 32 bytes): its chunks come back
			// as events of the guild's shard, with it.
			nonce := fmt.Sprintf("%s%d.%d", noncePrefix, ev.ShardID, ev.Seq)
			sent, err := n.SendGuild(ctx, guild, opRequestGuildMembers,
				map[string]any{"guild_id": m.GuildID, "query": "", "limit": 0, "nonce": nonce})
			if errors.Is(err, api.ErrRateLimited) {
				// All members at most once per guild per 30 s: the earlier request's
				// chunks answer this one too, and waiting would hold the shard up.
				b.log.Info("!members: not asked again so soon", "guild", guild, "err", err)
				return nil
			}
			return b.settle("!members", d, sent, err)
		}
	case "GUILD_MEMBERS_CHUNK":
		var c membersChunk
		if err := json.Unmarshal(ev.Data, &c); err != nil || !strings.HasPrefix(c.Nonce, noncePrefix) {
			return nil // another worker's request
		}
		b.log.Info("members", "guild", c.GuildID, "chunk", fmt.Sprintf("%d/%d", c.ChunkIndex+1, c.ChunkCount),
			"count", len(c.Members), "nonce", c.Nonce, "shard", ev.ShardID)
	}
	return nil
}

// settle decides what becomes of an event after its answer: a refusal worth retrying
// (the shard connecting, moving, or at its send limit) has it delivered again, when
// the answer is tried again; any other refusal is logged, and the event accepted.
func (b *bot) settle(what string, d sink.Delivery, sent api.Sent, err error) error {
	var retry *api.RetryError
	switch {
	case err == nil:
		b.log.Info("answered "+what, "shard", d.Event.ShardID, "seq", d.Event.Seq, "sent_on", sent.Shard, "by", sent.Node)
		return nil
	case errors.As(err, &retry):
		b.log.Warn("answer to "+what+" refused for now; the event comes again", "shard", d.Event.ShardID, "seq", d.Event.Seq, "err", err)
		return err
	default:
		b.log.Error("answer to "+what+" refused", "shard", d.Event.ShardID, "seq", d.Event.Seq, "err", err)
		return nil
	}
}
