package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/discluster/discluster/internal/certs"
	"github.com/discluster/discluster/node"
	"github.com/discluster/discluster/node/sink"
	"github.com/discluster/discluster/shard"
)

func env(name string) []string { return []string{"DISCLUSTER_" + name} }

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "run a node: join the cluster and run the shards it assigns here",
		Description: "Every machine runs the same agent. Start the first ones with --bootstrap-expect N (3 or 5 is\n" +
			"advised: the cluster keeps running shards only while a majority of the voters are up), and point\n" +
			"--join at any member. Every flag can also be set with the environment variable shown.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "name", Usage: "unique node name, stable across restarts (default: host name)", EnvVars: env("NAME")},
			&cli.StringFlag{Name: "data-dir", Usage: "where Raft keeps its log and snapshots (required)", EnvVars: env("DATA_DIR")},
			&cli.StringSliceFlag{Name: "join", Usage: "gossip address of any member, HOST[:PORT]; repeatable; retried until one answers", EnvVars: env("JOIN")},
			&cli.DurationFlag{Name: "join-timeout", Usage: "give up (exit 1) when no --join address answers for this long; 0 retries forever", EnvVars: env("JOIN_TIMEOUT")},
			&cli.BoolFlag{Name: "exit-with-parent", Hidden: true, Usage: "exit when standard input closes (the demo's children)"},
			&cli.IntFlag{Name: "bootstrap-expect", Value: 1, Usage: "bootstrap Raft once this many agents see each other", EnvVars: env("BOOTSTRAP_EXPECT")},
			&cli.IntFlag{Name: "voters", Value: 5, Usage: "Raft voters; further nodes join as non-voters", EnvVars: env("VOTERS")},
			&cli.IntFlag{Name: "weight", Value: 1, Usage: "relative capacity; 0 holds no shards", EnvVars: env("WEIGHT")},
			&cli.StringFlag{Name: "gossip-addr", Value: "0.0.0.0:" + strconv.Itoa(node.DefaultGossipPort), Usage: "gossip bind address (UDP and TCP)", EnvVars: env("GOSSIP_ADDR")},
			&cli.StringFlag{Name: "cluster-addr", Value: "0.0.0.0:" + strconv.Itoa(node.DefaultClusterPort), Usage: "Raft and RPC bind address", EnvVars: env("CLUSTER_ADDR")},
			&cli.StringFlag{Name: "http-addr", Value: "127.0.0.1:" + strconv.Itoa(node.DefaultHTTPPort), Usage: "API bind address (loopback unless told otherwise)", EnvVars: env("HTTP_ADDR")},
			&cli.StringFlag{Name: "advertise", Usage: "IP other nodes reach this one at (default: the bind IP, or a private IP)", EnvVars: env("ADVERTISE")},
			&cli.StringFlag{Name: "shards", Value: "auto", Usage: "total shards, or auto (Discord's recommendation from GET /gateway/bot)", EnvVars: env("SHARDS")},
			&cli.IntFlag{Name: "max-concurrency", Usage: "identify buckets (default: from GET /gateway/bot)", EnvVars: env("MAX_CONCURRENCY")},
			&cli.DurationFlag{Name: "identify-window", Value: shard.DefaultIdentifyWindow, Usage: "one identify per bucket per window", EnvVars: env("IDENTIFY_WINDOW")},
			&cli.IntFlag{Name: "session-reserve", Usage: "daily session starts never spent (default 5% of the limit, at least 10)", EnvVars: env("SESSION_RESERVE")},
			&cli.Float64Flag{Name: "reshard-auto-threshold", Usage: "reshard on the leader's own once Discord recommends at least this many times the current shard count, e.g. 1.2 (at most once an hour); 0: only when asked (or when Discord closes a shard with 4011)", EnvVars: env("RESHARD_AUTO_THRESHOLD")},
			&cli.IntFlag{Name: "shards-per-cluster", Value: 16, Usage: "shards per local cluster (goroutine group)", EnvVars: env("SHARDS_PER_CLUSTER")},
			&cli.DurationFlag{Name: "checkpoint-interval", Value: time.Second, Usage: "how often resume states are replicated", EnvVars: env("CHECKPOINT_INTERVAL")},
			&cli.BoolFlag{Name: "no-session-stealing", Usage: "identify moved shards instead of resuming them (the baseline of `bench`; spends session starts)", EnvVars: env("NO_SESSION_STEALING")},
			&cli.DurationFlag{Name: "lease", Value: 5 * time.Second, Usage: "a node cut off from the leader this long stops its shards", EnvVars: env("LEASE")},
			&cli.IntFlag{Name: "max-moves", Value: 16, Usage: "rebalancing handoffs in flight at once", EnvVars: env("MAX_MOVES")},
			&cli.StringFlag{Name: "timing", Value: "lan", Usage: "protocol timers: lan, or fast (one machine: tests and the demo)", EnvVars: env("TIMING")},
			&cli.StringFlag{Name: "token-file", Usage: "file holding the bot token (instead of DISCORD_TOKEN)", EnvVars: []string{"DISCORD_TOKEN_FILE"}},
			httpTokenFileFlag,
			&cli.StringFlag{Name: "encrypt", Usage: "gossip key (base64 of 32 bytes, from discluster keygen): encrypts and authenticates gossip; the data dir keeps the keyring from then on", EnvVars: env("ENCRYPT")},
			&cli.StringFlag{Name: "tls-ca", Usage: "the cluster CA (discluster tls ca): with --tls-cert and --tls-key, mutual TLS on the cluster port", EnvVars: env("TLS_CA")},
			&cli.StringFlag{Name: "tls-cert", Usage: "this node's certificate (discluster tls cert NAME); reloaded on SIGHUP", EnvVars: env("TLS_CERT")},
			&cli.StringFlag{Name: "tls-key", Usage: "this node's key", EnvVars: env("TLS_KEY")},
			&cli.BoolFlag{Name: "http-tls", Usage: "serve the API over HTTPS with --tls-cert and --tls-key (reloaded with them); clients call https://HOST:PORT with --tls-ca", EnvVars: env("HTTP_TLS")},
			&cli.StringFlag{Name: "encrypt-file", Usage: "file holding the gossip key (instead of --encrypt)", EnvVars: env("ENCRYPT_FILE")},
			&cli.BoolFlag{Name: "http-insecure-loopback", Usage: "with no API token, let loopback callers drain and cancel drains without one (the demo's choice; never on a shared machine)"},
			&cli.StringFlag{Name: "api-base", Value: shard.DefaultAPIBase, Usage: "Discord's REST API (a fake one for tests)", EnvVars: env("API_BASE")},
			&cli.StringFlag{Name: "gateway-url", Usage: "gateway URL (default: from GET /gateway/bot)", EnvVars: env("GATEWAY_URL")},
			&cli.Uint64Flag{Name: "intents", Value: 513, Usage: "gateway intents (default GUILDS | GUILD_MESSAGES)", EnvVars: env("INTENTS")},
			&cli.StringFlag{Name: "compression", Value: string(shard.CompressionZlibStream), Usage: "zlib-stream, zstd-stream, payload (compress:true in IDENTIFY, for proxies that cannot stream) or none", EnvVars: env("COMPRESSION")},
			&cli.StringFlag{Name: "sink", Value: "stdout", Usage: "where events go: stdout or file:PATH (one JSON line per dispatch), redis://HOST:PORT[/DB] (Redis Streams in @discordjs/brokers' layout), https://HOST/PATH (signed, batched POSTs), nats://HOST:PORT[,HOST:PORT…][?subject=discord&stream=DISCORD] (NATS JetStream), or none", EnvVars: env("SINK")},
			&cli.BoolFlag{Name: "sink-payload", Usage: "include each event's d in the stdout or file sink", EnvVars: env("SINK_PAYLOAD")},
			&cli.StringFlag{Name: "events", Usage: "only these dispatch types go to the sink, comma-separated (MESSAGE_CREATE,INTERACTION_CREATE); the others still move the shards' positions. Default: all", EnvVars: env("EVENTS")},
			&cli.BoolFlag{Name: "sink-commands", Value: true, Usage: "with a redis:// or nats:// sink, also send the gateway commands workers publish (to the gateway_send stream; on NATS, to discord_send.<shard>) (--sink-commands=false: do not)", EnvVars: env("SINK_COMMANDS")},
			&cli.Int64Flag{Name: "sink-maxlen", Value: sink.DefaultRedisMaxLen, Usage: "with a redis:// sink, keep about this many entries per stream (XADD MAXLEN ~); with nats://, the streams it creates keep at most this many messages each; 0: unbounded", EnvVars: env("SINK_MAXLEN")},
			sinkSecretFileFlag, sinkInsecureHTTPFlag,
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", EnvVars: env("LOG_LEVEL")},
			&cli.BoolFlag{Name: "check", Usage: "check the flags and the token's presence, print the configuration and exit: nothing is opened, bound or contacted"},
		},
		Action: runAgent,
	}
}

func runAgent(c *cli.Context) error {
	if c.Args().Present() {
		return fmt.Errorf("agent takes no arguments, got %q (flags go before them?)", c.Args().Slice())
	}
	cfg, closeSink, err := agentConfig(c)
	if err != nil {
		return err
	}
	defer closeSink()
	if c.Bool("check") {
		scheme := "http"
		if cfg.HTTPTLS {
			scheme = "https"
		}
		fmt.Fprintf(c.App.Writer, "configuration OK: node %s, data dir %s, gossip %s, cluster %s, %s %s, join %v, bootstrap-expect %d, shards %s, sink %s\n",
			cfg.Name, cfg.DataDir, cfg.GossipAddr, cfg.ClusterAddr, scheme, cfg.HTTPAddr, cfg.Join, cfg.BootstrapExpect, c.String("shards"), shownSink(c.String("sink")))
		return nil
	}
	n, err := node.Start(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signalContext(c.Context)
	defer stop()
	// SIGHUP reloads the node's certificate (a renewal) for the cluster port and,
	// with --http-tls, the API, as Consul does.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			if err := n.ReloadTLS(); err != nil {
				cfg.Logger.Error("SIGHUP: certificate not reloaded; the old one stays", "err", err)
			}
		}
	}()
	if c.Bool("exit-with-parent") {
		// The demo holds our stdin open; when it dies, however it dies, stdin closes and
		// this agent goes with it instead of running on as an orphan.
		go func() {
			io.Copy(io.Discard, os.Stdin)
			cfg.Logger.Warn("parent gone: stopping")
			n.Kill()
			os.Exit(1)
		}()
	}
	select {
	case <-ctx.Done():
	case err := <-n.Fatal():
		n.Kill()
		return err
	}
	stop() // a second signal kills at once
	cfg.Logger.Info("signal received: handing shards off and leaving (a second signal stops at once)")
	leaveCtx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	again, stopAgain := signalContext(context.Background())
	defer stopAgain()
	go func() {
		<-again.Done()
		cancel()
	}()
	if err := n.Leave(leaveCtx); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	return nil
}

// agentConfig turns the flags into a node.Config, refusing bad values with the flag's
// name.
func agentConfig(c *cli.Context) (node.Config, func(), error) {
	noop := func() {}
	level, err := parseLevel(c.String("log-level"))
	if err != nil {
		return node.Config{}, noop, err
	}
	log := newLogger(c.App.ErrWriter, level)
	// Every field is set from its flag, on top of the defaults the node documents.
	cfg := node.DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.Join, cfg.JoinTimeout = c.String("name"), c.String("data-dir"), c.StringSlice("join"), c.Duration("join-timeout")
	cfg.BootstrapExpect, cfg.Voters, cfg.Weight = c.Int("bootstrap-expect"), c.Int("voters"), c.Int("weight")
	cfg.GossipAddr, cfg.ClusterAddr, cfg.HTTPAddr = c.String("gossip-addr"), c.String("cluster-addr"), c.String("http-addr")
	cfg.Advertise, cfg.MaxConcurrency, cfg.IdentifyWindow = c.String("advertise"), c.Int("max-concurrency"), c.Duration("identify-window")
	cfg.SessionReserve, cfg.ShardsPerCluster = c.Int("session-reserve"), c.Int("shards-per-cluster")
	cfg.ReshardAutoThreshold = c.Float64("reshard-auto-threshold")
	cfg.CheckpointInterval, cfg.Lease, cfg.MaxMoves = c.Duration("checkpoint-interval"), c.Duration("lease"), c.Int("max-moves")
	cfg.APIBase, cfg.GatewayURL, cfg.Intents = c.String("api-base"), c.String("gateway-url"), c.Uint64("intents")
	cfg.Compression, cfg.Logger = shard.Compression(c.String("compression")), log
	cfg.NoSessionStealing = c.Bool("no-session-stealing")
	for i, j := range cfg.Join {
		if !strings.Contains(j, ":") {
			cfg.Join[i] = j + ":" + strconv.Itoa(node.DefaultGossipPort)
		}
	}
	if s := c.String("shards"); s != "auto" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return cfg, noop, fmt.Errorf("--shards %q: want a positive number or auto", s)
		}
		cfg.Shards = n
	}
	switch c.String("timing") {
	case "lan":
		cfg.Timing = node.LANTiming()
	case "fast":
		cfg.Timing = node.FastTiming()
	default:
		return cfg, noop, fmt.Errorf("--timing %q: want lan or fast", c.String("timing"))
	}
	switch cfg.Compression {
	case shard.CompressionZlibStream, shard.CompressionZstdStream, shard.CompressionPayload, shard.CompressionNone:
	default:
		return cfg, noop, fmt.Errorf("--compression %q: want zlib-stream, zstd-stream, payload or none", cfg.Compression)
	}
	tok, err := readToken(c.String("token-file"))
	if err != nil {
		return cfg, noop, err
	}
	cfg.Token = tok
	httpTok, err := readHTTPToken(c)
	if err != nil {
		return cfg, noop, err
	}
	cfg.HTTPToken, cfg.HTTPInsecureLoopback = shard.Token(httpTok), c.Bool("http-insecure-loopback")
	if cfg.EncryptKey, err = readGossipKey(c); err != nil {
		return cfg, noop, err
	}
	if ca, cert, key := c.String("tls-ca"), c.String("tls-cert"), c.String("tls-key"); ca != "" || cert != "" || key != "" {
		cfg.TLS = &certs.Files{CA: ca, Cert: cert, Key: key}
	}
	cfg.HTTPTLS = c.Bool("http-tls")
	open := openSink
	if c.Bool("check") {
		open = checkSink
	}
	spec, err := agentSinkSpec(c, log)
	if err != nil {
		return cfg, noop, err
	}
	sink, closeSink, err := open(spec, c.App.Writer)
	if err != nil {
		return cfg, noop, err
	}
	cfg.Sink = sink
	if ev := strings.TrimSpace(c.String("events")); ev != "" {
		for _, e := range strings.Split(ev, ",") {
			cfg.Events = append(cfg.Events, strings.TrimSpace(e))
		}
	}
	if r, ok := sink.(node.CommandSource); ok && c.Bool("sink-commands") {
		cfg.Commands = r
	}
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
	}
	if err := cfg.Validate(); err != nil {
		closeSink()
		return cfg, noop, err
	}
	return cfg, closeSink, nil
}

// readToken takes the bot token from DISCORD_TOKEN or from a file; it never appears
// in a flag, where ps would show it.
func readToken(file string) (shard.Token, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("--token-file %s is empty", file)
		}
		return shard.Token(tok), nil
	}
	if tok := strings.TrimSpace(os.Getenv("DISCORD_TOKEN")); tok != "" {
		return shard.Token(tok), nil
	}
	return "", errors.New("no bot token: set DISCORD_TOKEN, or --token-file PATH (for a fake Discord, its token, e.g. fake-token)")
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// readGossipKey is the gossip key from --encrypt or --encrypt-file, nil for none.
func readGossipKey(c *cli.Context) ([]byte, error) {
	text, from := c.String("encrypt"), "--encrypt"
	if f := c.String("encrypt-file"); f != "" {
		if text != "" {
			return nil, errors.New("--encrypt and --encrypt-file: give one")
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--encrypt-file: %w", err)
		}
		text, from = strings.TrimSpace(string(b)), "--encrypt-file "+f
	}
	if text == "" {
		return nil, nil
	}
	k, err := node.ParseGossipKey(text)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	return k, nil
}
