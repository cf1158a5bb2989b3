package main

import (
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/discluster/discluster/node/sink"
	"github.com/discluster/discluster/shard"
)

// sinkSpec is the agent's --sink flags.
type sinkSpec struct {
	spec    string // stdout, file:PATH, redis://…, nats://…, none
	payload bool   // --sink-payload: the NDJSON lines carry d
	maxLen  int64  // --sink-maxlen: a Redis stream's bound, a NATS stream's
	// An https:// sink's --sink-secret-file (or DISCLUSTER_SINK_SECRET) and
	// --sink-insecure-http, and the logger of its refusals.
	secret       shard.Token
	insecureHTTP bool
	log          *slog.Logger
}

const sinkWant = "want stdout, file:PATH, redis://HOST:PORT[/DB], https://HOST/PATH, nats://HOST:PORT[,HOST:PORT…] or none"

// agentSinkSpec reads the agent's --sink flags.
func agentSinkSpec(c *cli.Context, log *slog.Logger) (sinkSpec, error) {
	s := sinkSpec{spec: c.String("sink"), payload: c.Bool("sink-payload"), maxLen: c.Int64("sink-maxlen"),
		insecureHTTP: c.Bool("sink-insecure-http"), log: log}
	var err error
	s.secret, err = readSinkSecret(c)
	return s, err
}

// isRedis reports whether spec names a Redis sink.
func isRedis(spec string) bool {
	return strings.HasPrefix(spec, "redis://") || strings.HasPrefix(spec, "rediss://")
}

// isNATS reports whether spec names a NATS JetStream sink.
func isNATS(spec string) bool {
	return strings.HasPrefix(spec, "nats://") || strings.HasPrefix(spec, "tls://")
}

// shownSink is spec as it may be printed: a redis:// or nats:// URL without its
// password or token.
func shownSink(spec string) string {
	if isWebhook(spec) { // without a password or the query
		return shownWebhook(spec)
	}
	if isNATS(spec) {
		return sink.RedactNATSURL(spec)
	}
	if !isRedis(spec) {
		return spec
	}
	u, err := url.Parse(spec)
	if err != nil {
		return "redis://…"
	}
	return u.Redacted()
}

// checkSink checks the --sink flags without opening anything. Its errors never show
// a redis:// or nats:// URL, which may hold a password.
func checkSink(s sinkSpec, _ io.Writer) (sink.Sink, func(), error) {
	switch {
	case s.spec == "none" || s.spec == "stdout" || strings.HasPrefix(s.spec, "file:") && len(s.spec) > len("file:"):
		return nil, func() {}, nil
	case isRedis(s.spec):
		if _, err := sink.ParseRedisURL(s.spec); err != nil {
			return nil, nil, fmt.Errorf("--sink: %w", err)
		}
		if s.maxLen < 0 {
			return nil, nil, fmt.Errorf("--sink-maxlen %d: want 0 (unbounded) or more", s.maxLen)
		}
		return nil, func() {}, nil
	case isNATS(s.spec):
		if err := sink.CheckNATSURL(s.spec); err != nil {
			return nil, nil, fmt.Errorf("--sink: %w", err)
		}
		if s.maxLen < 0 {
			return nil, nil, fmt.Errorf("--sink-maxlen %d: want 0 (unbounded) or more", s.maxLen)
		}
		return nil, func() {}, nil
	case isWebhook(s.spec):
		if err := checkWebhook(s); err != nil {
			return nil, nil, err
		}
		return nil, func() {}, nil
	}
	return nil, nil, fmt.Errorf("--sink %q: %s", shownSink(s.spec), sinkWant)
}

func openSink(s sinkSpec, stdout io.Writer) (sink.Sink, func(), error) {
	switch {
	case s.spec == "none":
		return nil, func() {}, nil
	case s.spec == "stdout":
		return sink.NewNDJSON(stdout, s.payload), func() {}, nil
	case strings.HasPrefix(s.spec, "file:") && len(s.spec) > len("file:"):
		f, err := os.OpenFile(strings.TrimPrefix(s.spec, "file:"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("--sink: %w", err)
		}
		return sink.NewNDJSON(f, s.payload), func() { f.Close() }, nil
	case isRedis(s.spec):
		if _, _, err := checkSink(s, stdout); err != nil {
			return nil, nil, err
		}
		// Connected lazily: a Redis that is down at start is a failing sink, which
		// holds the shards' positions and shows in status, not a node that cannot start.
		r, err := sink.NewRedis(s.spec, s.maxLen)
		if err != nil {
			return nil, nil, fmt.Errorf("--sink: %w", err)
		}
		return r, func() { r.Close() }, nil
	case isWebhook(s.spec):
		return openWebhook(s)
	case isNATS(s.spec):
		if _, _, err := checkSink(s, stdout); err != nil {
			return nil, nil, err
		}
		// Connected in the background, as the Redis sink is lazily.
		n, err := sink.NewNATS(s.spec, s.maxLen)
		if err != nil {
			return nil, nil, fmt.Errorf("--sink: %w", err)
		}
		return n, func() { n.Close() }, nil
	}
	return nil, nil, fmt.Errorf("--sink %q: %s", shownSink(s.spec), sinkWant)
}
