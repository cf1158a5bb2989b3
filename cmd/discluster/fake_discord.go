package main

import (
	"fmt"
	"log/slog"
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
			"and a user's message with POST /fake/shards/{id}/message?content=TEXT.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:7080", Usage: "listen address (keep it on loopback)", EnvVars: env("FAKE_ADDR")},
			&cli.StringFlag{Name: "token", Value: "fake-token", Usage: "the bot token the fake accepts", EnvVars: []string{"DISCORD_TOKEN"}},
			&cli.IntFlag{Name: "shards", Value: 16, Usage: "shard count /gateway/bot recommends"},
			&cli.IntFlag{Name: "guilds", Usage: "guilds the bot is in (default: one per shard)"},
			&cli.IntFlag{Name: "max-concurrency", Value: 1, Usage: "identify buckets (max_concurrency)"},
			&cli.DurationFlag{Name: "identify-window", Value: 5 * time.Second, Usage: "one IDENTIFY per bucket per window"},
			&cli.DurationFlag{Name: "heartbeat-interval", Value: 41250 * time.Millisecond, Usage: "heartbeat interval sent in HELLO"},
			&cli.DurationFlag{Name: "heartbeat-timeout", Usage: "grace after the interval before a silent connection is closed (default: half the interval)"},
			&cli.Float64Flag{Name: "event-rate", Value: 1, Usage: "MESSAGE_CREATE events per second per session"},
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
		Addr:              c.String("addr"),
		Token:             c.String("token"),
		Shards:            c.Int("shards"),
		Guilds:            c.Int("guilds"),
		MaxConcurrency:    c.Int("max-concurrency"),
		IdentifyWindow:    c.Duration("identify-window"),
		HeartbeatInterval: c.Duration("heartbeat-interval"),
		HeartbeatTimeout:  c.Duration("heartbeat-timeout"),
		EventRate:         c.Float64("event-rate"),
		SessionTTL:        c.Duration("session-ttl"),
		SessionStartLimit: c.Int("session-start-limit"),
		SplitFrames:       c.Bool("split-frames"),
		Logger:            newLogger(c.App.ErrWriter, level),
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
	case o.SessionTTL <= 0:
		return fmt.Errorf("--session-ttl %v: must be positive", o.SessionTTL)
	case o.SessionStartLimit < 1:
		return fmt.Errorf("--session-start-limit %d: must be at least 1", o.SessionStartLimit)
	case o.Token == "":
		return fmt.Errorf("--token: must not be empty")
	}
	return nil
}
