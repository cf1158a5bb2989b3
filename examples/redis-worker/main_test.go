package main

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/discluster/discluster/internal/redistest"
	"github.com/discluster/discluster/internal/testlock"
	"github.com/discluster/discluster/node"
	"github.com/discluster/discluster/node/sink"
	"github.com/discluster/discluster/shard"
	"github.com/discluster/discluster/shard/gatewaytest"
)

const testToken = "redis-worker-test-token-0123456789"

// syncBuf is the worker's log, written by its goroutine while the test reads it.
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

// waitFor polls cond until it holds, or fails the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, still not %s: %v", d, what, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// The worker against a real redis-server and an agent whose sink writes to it: it
// receives the MESSAGE_CREATEs of both shards, answers a user's "!ping" on shard 1
// with a presence update published to gateway_send, which the agent sends on shard
// 1's connection, and drops a copy of an event it handled.
func TestWorkerReadsEventsAndSendsACommand(t *testing.T) {
	testlock.Cluster(t)
	srv := redistest.Start(t, false)
	fake, err := gatewaytest.NewServer(gatewaytest.Options{Shards: 2, Token: testToken, IdentifyWindow: 50 * time.Millisecond,
		HeartbeatInterval: time.Second, HeartbeatTimeout: 5 * time.Second, EventRate: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()

	// An agent with --sink redis:// (and the commands it reads from there).
	rs, err := sink.NewRedis(srv.URL(), 10_000)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	cfg := node.DefaultConfig()
	cfg.Name, cfg.DataDir = "a1", t.TempDir()
	cfg.GossipAddr, cfg.ClusterAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Shards, cfg.IdentifyWindow, cfg.Timing = 2, 200*time.Millisecond, node.FastTiming()
	cfg.Token, cfg.APIBase = shard.Token(testToken), fake.APIURL()
	cfg.Intents = 1<<0 | 1<<9 | 1<<15 // GUILDS, GUILD_MESSAGES, MESSAGE_CONTENT
	cfg.Sink, cfg.Commands, cfg.Events = rs, rs, []string{"MESSAGE_CREATE"}
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	agent, err := node.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Kill()

	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	waitFor(t, 30*time.Second, "the agents' group on gateway_send", func() error {
		groups, err := rdb.XInfoGroups(ctx, commandsStream).Result()
		if err != nil || len(groups) == 0 {
			return fmt.Errorf("groups %v, %v", groups, err)
		}
		return nil
	})

	var logs syncBuf
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--redis", srv.URL(), "--group", "bot", "--name", "w1", "--events", "MESSAGE_CREATE"}, &logs)
	}()
	defer func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("the worker: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the worker still runs 30 s after it was stopped")
		}
		t.Log(logs.String())
	}()

	received := regexp.MustCompile(`msg=MESSAGE_CREATE shard=(\d)`)
	waitFor(t, 60*time.Second, "MESSAGE_CREATEs of both shards at the worker", func() error {
		by := map[string]int{}
		for _, m := range received.FindAllStringSubmatch(logs.String(), -1) {
			by[m[1]]++
		}
		if by["0"] < 3 || by["1"] < 3 {
			return fmt.Errorf("MESSAGE_CREATEs by shard: %v", by)
		}
		return nil
	})

	if err := fake.SendMessage(1, "!ping"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the presence update on shard 1", func() error {
		sh := fake.Stats().Shards[1]
		if sh.Commands[3] != 1 || !strings.Contains(string(sh.LastCommand), `"name":"pong"`) {
			return fmt.Errorf("shard 1's commands: %v, last %s", sh.Commands, sh.LastCommand)
		}
		return nil
	})
	if !strings.Contains(logs.String(), "msg=\"answered !ping\" shard=1") {
		t.Fatalf("the worker did not log its answer:\n%s", logs.String())
	}

	// The !ping event again, as Discord replays it to the next owner after a crash:
	// dropped, and not answered twice.
	var ping redis.XMessage
	entries, err := rdb.XRange(ctx, "MESSAGE_CREATE", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if data, _ := e.Values["data"].(string); strings.Contains(data, "!ping") {
			ping = e
		}
	}
	if ping.ID == "" {
		t.Fatal("no !ping in the MESSAGE_CREATE stream")
	}
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "MESSAGE_CREATE", Values: []any{"data", ping.Values["data"], "session", ping.Values["session"]}}).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the copy dropped", func() error {
		if !strings.Contains(logs.String(), "msg=\"duplicate dropped\" shard=1") {
			return fmt.Errorf("no duplicate dropped")
		}
		return nil
	})
	if n, err := rdb.XLen(ctx, commandsStream).Result(); err != nil || n != 1 {
		t.Fatalf("gateway_send holds %d commands (%v), want the one answer", n, err)
	}
	if strings.Contains(logs.String(), testToken) {
		t.Error("the worker saw the bot token")
	}
}

// The set of handled events keeps the most recent ones, up to its bound.
func TestSeenSetForgetsTheOldest(t *testing.T) {
	s := newSeenSet(3)
	for seq := range int64(5) {
		if !s.add(eventKey{1, "s", seq}) {
			t.Fatalf("seq %d seen before it was added", seq)
		}
	}
	for _, seq := range []int64{2, 3, 4} {
		if s.add(eventKey{1, "s", seq}) {
			t.Errorf("seq %d, among the last 3, was not taken for a duplicate", seq)
		}
	}
	if !s.add(eventKey{1, "s", 0}) {
		t.Error("seq 0, older than the last 3, is still remembered")
	}
	if !s.add(eventKey{2, "s", 4}) || !s.add(eventKey{1, "t", 4}) {
		t.Error("seq 4 of another shard or session was taken for a duplicate")
	}
}

// testWriter shows the agent's warnings with -v or a failure.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
