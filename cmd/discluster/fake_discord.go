package main

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/discluster/discluster/shard/gatewaytest"
)

func fakeDiscordCommand() *cli.Command {
	return &cli.Command{
		Name:  "fake-discord",
		Usage: "serve a fake Discord gateway and /gateway/bot for tests and demos (never a real token)",
		Description: "Serves GET /api/v10/gateway/bot and the gateway websocket with the real protocol: HELLO, heartbeats,\n" +
			"IDENTIFY/READY, RESUME with replay, identify buckets, the send limit and the close codes. Counters are\n" +
			"served as JSON at /fake/stats; faults can be injected with POST /fake/shards/{id}/{reconnect,invalidate,close,drop,heartbeat},\n" +
			"and a user's message with POST /fake/shards/{id}/message?content=TEXT.\n\n" +
			"Resharding: sessions identified with another num_shards form a second generation beside the first, and each\n" +
			"guild's events (--guild-event-rate) reach its shard's session in every generation, with the same payload.\n" +
			"POST /fake/guilds?count=N has the bot join N guilds: their GUILD_CREATE goes to every generation, and /gateway/bot\n" +
			"recommends ceil(guilds / --guilds-per-shard-recommended) shards once that passes --shards. GET /fake/guild-events?from=K\n" +
			"lists the guild events generated (guild, message id, time, generations reached); POST /fake/guild-events?rate=R sets\n" +
			"their rate (0 stops them).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:7080", Usage: "listen address (keep it on loopback)", EnvVars: env("FAKE_ADDR")},
			&cli.StringFlag{Name: "token", Value: "fake-token", Usage: "the bot token the fake accepts", EnvVars: []string{"DISCORD_TOKEN"}},
			&cli.IntFlag{Name: "shards", Value: 16, Usage: "shard count /gateway/bot recommends (at least: it rises as guilds are added)"},
			&cli.IntFlag{Name: "guilds", Usage: "guilds the bot is in at start (default: one per shard); POST /fake/guilds adds more"},
			&cli.IntFlag{Name: "guilds-per-shard-recommended", Value: 1000, Usage: "guilds per shard /gateway/bot's recommendation counts, Discord's ~1000"},
			&cli.IntFlag{Name: "max-guilds-per-shard", Value: 2500, Usage: "an IDENTIFY whose shard would hold more guilds (with its own num_shards) is closed with 4011"},
			&cli.IntFlag{Name: "max-concurrency", Value: 1, Usage: "identify buckets (max_concurrency)"},
			&cli.DurationFlag{Name: "identify-window", Value: 5 * time.Second, Usage: "one IDENTIFY per bucket per window"},
			&cli.DurationFlag{Name: "heartbeat-interval", Value: 41250 * time.Millisecond, Usage: "heartbeat interval sent in HELLO"},
			&cli.DurationFlag{Name: "heartbeat-timeout", Usage: "grace after the interval before a silent connection is closed (default: half the interval)"},
			&cli.Float64Flag{Name: "event-rate", Value: 1, Usage: "MESSAGE_CREATE events per second per session"},
			&cli.Float64Flag{Name: "guild-event-rate", Usage: "MESSAGE_CREATE events per second per guild, each sent to the guild's shard in every generation (num_shards) open"},
			&cli.DurationFlag{Name: "session-ttl", Value: 2 * time.Minute, Usage: "how long a dropped session stays resumable"},
			&cli.IntFlag{Name: "session-start-limit", Value: 1000, Usage: "daily IDENTIFY budget reported and enforced"},
			&cli.BoolFlag{Name: "split-frames", Usage: "split every zlib-stream message over two websocket frames, as Discord may: clients must buffer until the sync-flush marker"},
			&cli.BoolFlag{Name: "verbose", Usage: "log every connection"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return fmt.Errorf("fake-discord takes no arguments, got %q", c.Args().Slice())
			}
			opts := fakeOptions(c)
			if err := validateFakeOptions(opts); err != nil {
				return err
			}
			srv, err := gatewaytest.NewServer(opts)
			if err != nil {
				return fmt.Errorf("start fake discord: %w", err)
			}
			defer srv.Close()
			w := c.App.Writer
			fmt.Fprintf(w, "fake Discord is serving (%d shards, max_concurrency %d, %.4g events/s per session)\n",
				opts.Shards, opts.MaxConcurrency, opts.EventRate)
			fmt.Fprintf(w, "  api base:    %s   (use as --api-base)\n", srv.APIURL())
			fmt.Fprintf(w, "  gateway:     %s\n", srv.GatewayURL())
			fmt.Fprintf(w, "  resume url:  %s\n", srv.ResumeURL())
			fmt.Fprintf(w, "  counters:    %s\n", srv.StatsURL())
			if opts.GuildEventRate > 0 {
				fmt.Fprintf(w, "  guild events: %.4g/s per guild, listed at %s\n", opts.GuildEventRate, strings.TrimSuffix(srv.StatsURL(), "stats")+"guild-events")
			}
			fmt.Fprintln(w, "press Ctrl-C to stop")
			ctx, stop := signalContext(c.Context)
			defer stop()
			<-ctx.Done()
			return nil
		},
	}
}

// validateFakeOptions refuses values the fake would otherwise silently replace with
// defaults, so a typo on the command line is an error, not a surprise.
// fakeOptions are the fake's options from the flags.
func fakeOptions(c *cli.Context) gatewaytest.Options {
	level := slog.LevelWarn
	if c.Bool("verbose") {
		level = slog.LevelDebug
	}
	return gatewaytest.Options{
		Addr:                      c.String("addr"),
		Token:                     c.String("token"),
		Shards:                    c.Int("shards"),
		Guilds:                    c.Int("guilds"),
		GuildsPerShardRecommended: c.Int("guilds-per-shard-recommended"),
		MaxGuildsPerShard:         c.Int("max-guilds-per-shard"),
		MaxConcurrency:            c.Int("max-concurrency"),
		IdentifyWindow:            c.Duration("identify-window"),
		HeartbeatInterval:         c.Duration("heartbeat-interval"),
		HeartbeatTimeout:          c.Duration("heartbeat-timeout"),
		EventRate:                 c.Float64("event-rate"),
		GuildEventRate:            c.Float64("guild-event-rate"),
		SessionTTL:                c.Duration("session-ttl"),
		SessionStartLimit:         c.Int("session-start-limit"),
		SplitFrames:               c.Bool("split-frames"),
		Logger:                    newLogger(c.App.ErrWriter, level),
	}
}

func validateFakeOptions(o gatewaytest.Options) error {
	switch {
	case o.Shards < 1:
		return fmt.Errorf("--shards %d: must be at least 1", o.Shards)
	case o.Guilds < 0:
		return fmt.Errorf("--guilds %d: must not be negative", o.Guilds)
	case o.MaxConcurrency < 1:
		return fmt.Errorf("--max-concurrency %d: must be at least 1", o.MaxConcurrency)
	case o.IdentifyWindow <= 0:
		return fmt.Errorf("--identify-window %v: must be positive", o.IdentifyWindow)
	case o.HeartbeatInterval <= 0:
		return fmt.Errorf("--heartbeat-interval %v: must be positive", o.HeartbeatInterval)
	case o.EventRate < 0:
		return fmt.Errorf("--event-rate %v: must not be negative", o.EventRate)
	case o.GuildEventRate < 0:
		return fmt.Errorf("--guild-event-rate %v: must not be negative", o.GuildEventRate)
	case o.GuildsPerShardRecommended < 1:
		return fmt.Errorf("--guilds-per-shard-recommended %d: must be at least 1", o.GuildsPerShardRecommended)
	case o.MaxGuildsPerShard < 1:
		return fmt.Errorf("--max-guilds-per-shard %d: must be at least 1", o.MaxGuildsPerShard)
	case o.SessionTTL <= 0:
		return fmt.Errorf("--session-ttl %v: must be positive", o.SessionTTL)
	case o.SessionStartLimit < 1:
		return fmt.Errorf("--session-start-limit %d: must be at least 1", o.SessionStartLimit)
	case o.Token == "":
		return fmt.Errorf("--token: must not be empty")
	}
	return nil
}
