package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discluster/discluster/shard/gatewaytest"
	"github.com/urfave/cli/v2"
)

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestFakeDiscordServesAndPrintsURLs(t *testing.T) {
	var out, errOut syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- newApp(&out, &errOut).RunContext(ctx, []string{"discluster", "fake-discord",
			"--addr", "127.0.0.1:0", "--shards", "3", "--max-concurrency", "2", "--token", "tok"})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("fake-discord: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("fake-discord did not stop")
		}
	})
	apiRe := regexp.MustCompile(`api base:\s+(\S+)`)
	var api string
	deadline := time.Now().Add(10 * time.Second)
	for api == "" {
		if m := apiRe.FindStringSubmatch(out.String()); m != nil {
			api = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("no api base printed; stdout %q stderr %q", out.String(), errOut.String())
		} else {
			time.Sleep(5 * time.Millisecond) // polling the output of a goroutine, bounded above
		}
	}
	req, _ := http.NewRequest(http.MethodGet, api+"/gateway/bot", nil)
	req.Header.Set("Authorization", "Bot tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var gb struct {
		URL    string `json:"url"`
		Shards int    `json:"shards"`
		Limit  struct {
			MaxConcurrency int `json:"max_concurrency"`
		} `json:"session_start_limit"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&gb); err != nil {
		t.Fatal(err)
	}
	if gb.Shards != 3 || gb.Limit.MaxConcurrency != 2 || !strings.HasPrefix(gb.URL, "ws://127.0.0.1:") {
		t.Fatalf("gateway/bot = %+v", gb)
	}
	for _, want := range []string{"gateway:", "resume url:", "counters:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q: %s", want, out.String())
		}
	}
}

func TestFakeDiscordRejectsBadFlags(t *testing.T) {
	tests := [][]string{
		{"--shards", "0"},
		{"--max-concurrency", "0"},
		{"--event-rate", "-1"},
		{"--identify-window", "0s"},
		{"--guild-event-rate", "-1"},
		{"--guilds-per-shard-recommended", "0"},
		{"--max-guilds-per-shard", "0"},
		{"--shards", "many"},
		{"extra-argument"},
	}
	for _, args := range tests {
		var out, errOut syncBuffer
		err := newApp(&out, &errOut).Run(append([]string{"discluster", "fake-discord", "--addr", "127.0.0.1:0"}, args...))
		if err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}

// --split-frames reaches the fake, and a real client reads a split zlib stream.
func TestFakeDiscordSplitFrames(t *testing.T) {
	var got gatewaytest.Options
	app := newApp(io.Discard, io.Discard)
	cmd := app.Command("fake-discord")
	cmd.Action = func(c *cli.Context) error { got = fakeOptions(c); return nil }
	if err := app.Run([]string{"discluster", "fake-discord", "--split-frames"}); err != nil {
		t.Fatal(err)
	}
	if !got.SplitFrames {
		t.Fatal("--split-frames did not reach the fake's options")
	}
}

// The resharding flags reach the fake's options.
func TestFakeDiscordGuildFlags(t *testing.T) {
	var got gatewaytest.Options
	app := newApp(io.Discard, io.Discard)
	cmd := app.Command("fake-discord")
	cmd.Action = func(c *cli.Context) error { got = fakeOptions(c); return nil }
	if err := app.Run([]string{"discluster", "fake-discord", "--guild-event-rate", "2.5",
		"--guilds-per-shard-recommended", "4", "--max-guilds-per-shard", "8"}); err != nil {
		t.Fatal(err)
	}
	if got.GuildEventRate != 2.5 || got.GuildsPerShardRecommended != 4 || got.MaxGuildsPerShard != 8 {
		t.Fatalf("options %+v", got)
	}
	if err := app.Run([]string{"discluster", "fake-discord"}); err != nil {
		t.Fatal(err)
	}
	if got.GuildEventRate != 0 || got.GuildsPerShardRecommended != 1000 || got.MaxGuildsPerShard != 2500 {
		t.Fatalf("defaults: %+v, want no guild events, 1000 guilds a shard recommended, Discord's 2500 at most", got)
	}
}
