package main

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/discluster/discluster/node/sink"
	"github.com/discluster/discluster/shard"
)

// sinkSecretEnv holds the webhook's HMAC secret itself. There is no flag for it: ps
// shows a process's flags to every user of the machine.
const sinkSecretEnv = "DISCLUSTER_SINK_SECRET"

// The agent's flags for an https:// sink.
var (
	sinkSecretFileFlag   = &cli.StringFlag{Name: "sink-secret-file", Usage: "with an https:// sink, the file holding the HMAC secret that signs each POST (or set " + sinkSecretEnv + ")", EnvVars: env("SINK_SECRET_FILE")}
	sinkInsecureHTTPFlag = &cli.BoolFlag{Name: "sink-insecure-http", Usage: "allow an http:// sink to a host that is not loopback (the events travel in clear)", EnvVars: env("SINK_INSECURE_HTTP")}
)

// isWebhook reports whether spec names a webhook sink.
func isWebhook(spec string) bool {
	return strings.HasPrefix(spec, "https://") || strings.HasPrefix(spec, "http://")
}

// shownWebhook is a webhook URL as it may be printed: without a password or the
// query, either of which may hold a credential.
func shownWebhook(spec string) string {
	u, err := url.Parse(spec)
	if err != nil {
		return spec[:strings.Index(spec, "://")+3] + "…"
	}
	return sink.ShownWebhookURL(u)
}

// readSinkSecret is the webhook's secret from --sink-secret-file or
// DISCLUSTER_SINK_SECRET; "" when neither is set. Neither may be set for another
// sink, where a secret would silently do nothing.
func readSinkSecret(c *cli.Context) (shard.Token, error) {
	file, env := c.String("sink-secret-file"), os.Getenv(sinkSecretEnv)
	if file == "" && env == "" {
		return "", nil
	}
	if !isWebhook(c.String("sink")) {
		return "", errors.New("--sink-secret-file or " + sinkSecretEnv + " is set, but --sink is not an https:// webhook")
	}
	if file == "" {
		return shard.Token(strings.TrimSpace(env)), nil
	}
	if env != "" {
		return "", errors.New("--sink-secret-file and " + sinkSecretEnv + ": give one")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--sink-secret-file: %w", err)
	}
	sec := strings.TrimSpace(string(b))
	if sec == "" {
		return "", fmt.Errorf("--sink-secret-file %s is empty", file)
	}
	return shard.Token(sec), nil
}

// webhookConfig is the webhook sink the --sink flags describe.
func webhookConfig(s sinkSpec) sink.WebhookConfig {
	return sink.WebhookConfig{URL: s.spec, Secret: s.secret, AllowInsecureHTTP: s.insecureHTTP, Logger: s.log}
}

func checkWebhook(s sinkSpec) error {
	if err := webhookConfig(s).Validate(); err != nil {
		return fmt.Errorf("--sink: %w", err)
	}
	return nil
}

// openWebhook starts a webhook sink. It connects at its first POST: a receiver that
// is down at start is a failing sink, which holds the shards' positions and shows in
// status, not a node that cannot start.
func openWebhook(s sinkSpec) (sink.Sink, func(), error) {
	w, err := sink.NewWebhook(webhookConfig(s))
	if err != nil {
		return nil, nil, fmt.Errorf("--sink: %w", err)
	}
	return w, func() { w.Close() }, nil
}
