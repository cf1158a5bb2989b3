package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discluster/discluster/internal/testlock"
	"github.com/discluster/discluster/shard/gatewaytest"
)

const testToken = "embed-test-token-0123456789"

// syncBuf is the bot's log, written by its goroutines while the test reads it.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The bot against the fake Discord: a user's "!ping" on shard 1 has the bot's
// presence set to "pong" on shard 1, and "!members" on shard 0 has the guild's
// members asked for with the bot's nonce and their chunk logged; on Ctrl-C the bot
// leaves and run returns nil. The token never reaches the log.
func TestEmbedBotAnswersThroughTheCommandsPath(t *testing.T) {
	testlock.Cluster(t)
	fake, err := gatewaytest.NewServer(gatewaytest.Options{Shards: 2, Token: testToken, IdentifyWindow: 50 * time.Millisecond,
		HeartbeatInterval: time.Second, HeartbeatTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncBuf
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--name", "b1", "--data-dir", t.TempDir(), "--gossip-addr", "127.0.0.1:0",
			"--cluster-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--shards", "2", "--timing", "fast",
			"--identify-window", "200ms", "--api-base", fake.APIURL(), "--token-file", tokenFile}, &logs)
	}()
	stopped := false
	defer func() {
		if !stopped { // a failure: stop the bot before the fake and the dirs go
			stop()
			select {
			case <-done:
			case <-time.After(time.Minute):
				t.Error("the bot still runs a minute after it was stopped")
			}
		}
	}()
	await := func(what string, cond func(gatewaytest.Stats) bool) {
		t.Helper()
		actx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		if err := fake.Await(actx, cond); err != nil {
			t.Fatalf("waiting for %s: %v\n%s", what, err, logs.String())
		}
	}
	await("both shards connected", func(st gatewaytest.Stats) bool {
		return st.Shards[0].Live == 1 && st.Shards[1].Live == 1
	})

	if err := fake.SendMessage(1, "!ping"); err != nil {
		t.Fatal(err)
	}
	await("the presence update on shard 1", func(st gatewaytest.Stats) bool {
		return st.Shards[1].Commands[3] == 1 && strings.Contains(string(st.Shards[1].LastCommand), `"name":"pong"`)
	})
	if err := fake.SendMessage(0, "!members"); err != nil {
		t.Fatal(err)
	}
	waitLog := func(what string, ok func(string) bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !ok(logs.String()) {
			if time.Now().After(deadline) {
				t.Fatalf("no %s in the bot's log:\n%s", what, logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitLog("chunk of guild 0's members", func(l string) bool {
		return strings.Contains(l, `msg=members guild=131072 chunk=1/1 count=3 nonce=embed:0.`)
	})
	if st := fake.Stats(); st.Shards[0].Commands[8] != 1 || st.Shards[1].Commands[3] != 1 || len(st.Shards[0].Commands)+len(st.Shards[1].Commands) != 2 {
		t.Fatalf("the fake got commands %v on shard 0 and %v on shard 1, want one member request and one presence", st.Shards[0].Commands, st.Shards[1].Commands)
	}

	stop()
	stopped = true
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after Ctrl-C: %v\n%s", err, logs.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("the bot still runs a minute after Ctrl-C")
	}
	t.Log(logs.String())
	if strings.Contains(logs.String(), testToken) {
		t.Error("the bot's log shows the token")
	}
}
