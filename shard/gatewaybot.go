package shard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// GatewayBot is the answer of GET /gateway/bot.
type GatewayBot struct {
	URL               string            `json:"url"`
	Shards            int               `json:"shards"`
	SessionStartLimit SessionStartLimit `json:"session_start_limit"`
}

// SessionStartLimit is the bot's daily IDENTIFY budget. Spending all of it makes
// Discord end every session and reset the token.
type SessionStartLimit struct {
	Total          int `json:"total"`
	Remaining      int `json:"remaining"`
	ResetAfter     int `json:"reset_after"` // milliseconds
	MaxConcurrency int `json:"max_concurrency"`
}

// ResetIn is how long until Remaining is refilled.
func (l SessionStartLimit) ResetIn() time.Duration {
	return time.Duration(l.ResetAfter) * time.Millisecond
}

// ErrUnauthorized means Discord refused the token (HTTP 401).
var ErrUnauthorized = errors.New("discord rejected the bot token (401 Unauthorized)")

// FetchGatewayBot asks apiBase (for example DefaultAPIBase) for the gateway URL, the
// recommended shard count and the session start limit. The token goes only into the
// Authorization header; no error it returns contains it.
func FetchGatewayBot(ctx context.Context, client *http.Client, apiBase string, token Token) (GatewayBot, error) {
	if client == nil {
		client = http.DefaultClient
	}
	url := strings.TrimRight(apiBase, "/") + "/gateway/bot"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return GatewayBot{}, fmt.Errorf("get %s: %w", url, err)
	}
	req.Header.Set("Authorization", "Bot "+token.Reveal())
	req.Header.Set("User-Agent", "DiscordBot (https://github.com/discluster/discluster, 0)")
	resp, err := client.Do(req)
	if err != nil {
		return GatewayBot{}, fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return GatewayBot{}, fmt.Errorf("get %s: read body: %w", url, err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return GatewayBot{}, fmt.Errorf("get %s: %w", url, ErrUnauthorized)
	case resp.StatusCode != http.StatusOK:
		return GatewayBot{}, fmt.Errorf("get %s: HTTP %d: %.200s", url, resp.StatusCode, body)
	}
	var gb GatewayBot
	if err := json.Unmarshal(body, &gb); err != nil {
		return GatewayBot{}, fmt.Errorf("get %s: decode: %w", url, err)
	}
	if gb.URL == "" || gb.Shards < 1 || gb.SessionStartLimit.MaxConcurrency < 1 {
		return GatewayBot{}, fmt.Errorf("get %s: incomplete answer (url %q, shards %d, max_concurrency %d)",
			url, gb.URL, gb.Shards, gb.SessionStartLimit.MaxConcurrency)
	}
	return gb, nil
}
