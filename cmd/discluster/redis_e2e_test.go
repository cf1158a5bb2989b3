package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/discluster/discluster/internal/proccluster"
	"github.com/discluster/discluster/internal/redistest"
	"github.com/discluster/discluster/node/sink"
)

// brokersJS is the directory of the @discordjs/brokers consumer, where .ci/run runs
// npm ci.
var brokersJS = filepath.Join("..", "..", "testdata", "brokers-js")

// needBrokersJS skips (or, under .ci/run, fails) when node or the consumer's
// node_modules are missing.
func needBrokersJS(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(brokersJS, "node_modules", "@discordjs", "brokers", "package.json"))
	}
	if err != nil {
		if os.Getenv(redistest.RequireEnv) != "" {
			t.Fatalf("node or @discordjs/brokers missing (%v), and %s is set: run npm ci in %s", err, redistest.RequireEnv, brokersJS)
		}
		t.Skipf("node or @discordjs/brokers missing (%v): install nodejs and run npm ci in %s (.ci/run does)", err, brokersJS)
	}
	return node
}

// brokersLine is one line of consume.mjs: an event as a PubSubRedisBroker handed it
// to its listener.
type brokersLine struct {
	Event   string `json:"event"`
	ShardID int    `json:"shardId"`
	Payload struct {
		Op int    `json:"op"`
		T  string `json:"t"`
		S  int64  `json:"s"`
		D  struct {
			ID        string `json:"id"`
			GuildID   string `json:"guild_id"`
			ChannelID string `json:"channel_id"`
			Author    struct {
				ID string `json:"id"`
			} `json:"author"`
		} `json:"d"`
	} `json:"payload"`
	Subscribed []string `json:"subscribed"`
}

// A real @discordjs/brokers PubSubRedisBroker, in a consumer group, receives the
// MESSAGE_CREATEs of a cluster of agents with --sink redis://, each with the shardId
// its guild belongs to and the message as the fake Discord sent it. Then Redis is
// paused under load and continued, and later killed and kept down for 30 s under
// load before it starts again from its append-only file: the agents hold their
// shards' positions meanwhile (back-pressure), start no session, and afterwards no
// seq of any session is missing from the streams.
func TestRedisSinkToDiscordjsBrokers(t *testing.T) {
	node := needBrokersJS(t)
	const shards = 4
	srv := redistest.Start(t, true)
	e := newE2E(t, shards)
	e.startAgentsWith(2, func(int) []string { return []string{"--sink", srv.URL(), "--sink-maxlen", "50000"} })
	e.allReady(60*time.Second, e.nodes...)

	script, err := filepath.Abs(filepath.Join(brokersJS, "consume.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	worker, err := e.procs.Start(proccluster.Spec{Name: "brokers-worker", Path: node,
		Args: []string{script, srv.URL(), "discluster-test-workers", "MESSAGE_CREATE"}})
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	seen := map[int]int{} // shard → MESSAGE_CREATEs received
	var lines int
	e.waitFor(60*time.Second, "MESSAGE_CREATEs of every shard at the @discordjs/brokers worker", func() error {
		if !worker.Running() {
			return fmt.Errorf("the worker exited: %v\n%s", worker.Err(), worker.Tail(2000))
		}
		out := worker.Output()
		sc := bufio.NewScanner(strings.NewReader(out))
		sc.Buffer(nil, 1<<20)
		n := 0
		for sc.Scan() {
			n++
			if n <= lines {
				continue
			}
			var l brokersLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Subscribed != nil {
				continue // a log line, or the subscription
			}
			if err := checkBrokersLine(l, shards); err != nil {
				if bad++; bad <= 5 {
					t.Errorf("%v: %s", err, sc.Bytes())
				}
				continue
			}
			seen[l.ShardID]++
		}
		if strings.HasSuffix(out, "\n") || out == "" {
			lines = n
		} else {
			lines = n - 1 // the last line is still being written
		}
		for id := range shards {
			if seen[id] < 5 {
				return fmt.Errorf("MESSAGE_CREATEs by shard: %v", seen)
			}
		}
		return nil
	})
	t.Logf("the worker received MESSAGE_CREATEs by shard: %v", seen)

	// A command back, as @discordjs/core's RedisGateway sends one: published to
	// gateway_send, taken by one agent, written on shard 2's connection by its owner.
	publisher, err := filepath.Abs(filepath.Join(brokersJS, "publish.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	presence := `{"op":3,"d":{"since":null,"activities":[{"name":"from a brokers worker","type":0}],"status":"dnd","afk":false}}`
	pctx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer pcancel()
	if out, err := exec.CommandContext(pctx, node, publisher, srv.URL(), "2", presence).CombinedOutput(); err != nil {
		t.Fatalf("publishing the command: %v\n%s", err, out)
	}
	e.waitFor(30*time.Second, "the fake Discord receiving the published presence on shard 2", func() error {
		sh := e.mustStats().Shards[2]
		if sh.Commands[3] != 1 || !strings.Contains(string(sh.LastCommand), "from a brokers worker") {
			return fmt.Errorf("shard 2's commands: %v, last %s", sh.Commands, sh.LastCommand)
		}
		return nil
	})

	// Back-pressure: Redis paused under load, then continued.
	before := e.mustStats().EventsSent
	srv.Pause()
	e.waitFor(30*time.Second, "the agents' sinks failing in status", func() error {
		st, err := e.status(e.nodes[0])
		if err != nil {
			return err
		}
		for _, p := range st.Problems {
			if strings.Contains(p, "sink failing") {
				return nil
			}
		}
		return fmt.Errorf("problems: %v", st.Problems)
	})
	if strings.Contains(worker.Output(), e2eToken) {
		t.Error("the worker saw the bot token")
	}
	srv.Continue()
	e.waitFor(30*time.Second, "events flowing again", func() error {
		if got := e.mustStats().EventsSent; got < before+100 {
			return fmt.Errorf("%d events sent since the pause", got-before)
		}
		return nil
	})
	checkStreams(t, e, srv.URL())

	// Redis down for 30 s under load (the test): killed, so every connection
	// is refused, then started again from its append-only file.
	down := e.mustStats()
	srv.Kill()
	e.waitFor(30*time.Second, "the agents' sinks failing in status", func() error {
		st, err := e.status(e.nodes[0])
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(st.Problems, func(p string) bool { return strings.Contains(p, "sink failing") }) {
			return fmt.Errorf("problems: %v", st.Problems)
		}
		return nil
	})
	holdRedisDown(t, e, 30*time.Second)
	during := e.mustStats()
	srv.Restart()
	e.waitFor(60*time.Second, "events flowing again after the outage", func() error {
		if got := e.mustStats().EventsSent; got < during.EventsSent+100 {
			return fmt.Errorf("%d events sent since Redis came back", got-during.EventsSent)
		}
		return nil
	})
	checkStreams(t, e, srv.URL())
	after := e.mustStats()
	if after.Identifies != down.Identifies || after.IdentifyViolations != 0 {
		t.Errorf("identifies %d → %d (violations %d): the outage cost sessions", down.Identifies, after.Identifies, after.IdentifyViolations)
	}
	e.maxLive("through the Redis outage")
	t.Logf("Redis down 30 s: the fake sent %d events meanwhile, %d RESUMEs; none lost", during.EventsSent-down.EventsSent, after.Resumes-down.Resumes)
}

// holdRedisDown keeps Redis down for d, the length of the outage under test (so a
// duration, not a wait for a condition), checking all along that every agent answers
// status and still holds its shards.
func holdRedisDown(t *testing.T, e *e2e, d time.Duration) {
	t.Helper()
	end := time.Now().Add(d)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for range tick.C {
		for _, a := range e.nodes {
			st, err := e.status(a)
			if err != nil {
				t.Fatalf("%s did not answer status with Redis down: %v", a.name, err)
			}
			if !st.Lease.Held {
				t.Fatalf("%s lost its lease with Redis down: %s", a.name, st.Lease.Reason)
			}
		}
		if !time.Now().Before(end) {
			return
		}
	}
}

// checkBrokersLine checks one event as the brokers' worker received it.
func checkBrokersLine(l brokersLine, shards int) error {
	p := l.Payload
	switch {
	case l.Event != "MESSAGE_CREATE" || p.T != "MESSAGE_CREATE" || p.Op != 0 || p.S < 1:
		return errors.New("not a MESSAGE_CREATE dispatch")
	case p.D.ID == "" || p.D.ChannelID == "" || p.D.Author.ID == "":
		return errors.New("d is not the fake's message")
	case l.ShardID < 0 || l.ShardID >= shards:
		return fmt.Errorf("shardId %d", l.ShardID)
	}
	if p.D.GuildID != "" {
		g, err := strconv.ParseUint(p.D.GuildID, 10, 64)
		if err != nil {
			return err
		}
		if want := int((g >> 22) % uint64(shards)); want != l.ShardID {
			return fmt.Errorf("guild %d is shard %d's, not %d's", g, want, l.ShardID)
		}
	}
	return nil
}

// checkStreams reads every stream back and checks that, per session, every seq from
// the first in the streams to the last is there: none lost, across the pause.
func checkStreams(t *testing.T, e *e2e, url string) {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// What the fake sent before this point must reach the streams first.
	st := e.mustStats()
	seqs := map[string]map[int64]bool{}
	e.waitFor(30*time.Second, "the streams holding what the fake sent", func() error {
		clear(seqs)
		keys, err := c.Keys(ctx, "*").Result()
		if err != nil {
			return err
		}
		for _, k := range keys {
			if k == sink.CommandsStream {
				continue // the workers' commands, not events
			}
			xs, err := c.XRange(ctx, k, "-", "+").Result()
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			for _, x := range xs {
				data, _ := x.Values["data"].(string)
				session, _ := x.Values["session"].(string)
				var m struct {
					ShardID int `msgpack:"shardId"`
					Payload struct {
						S int64 `msgpack:"s"`
					} `msgpack:"payload"`
				}
				if err := msgpack.Unmarshal([]byte(data), &m); err != nil {
					t.Fatalf("%s %s: %v", k, x.ID, err)
				}
				if seqs[session] == nil {
					seqs[session] = map[int64]bool{}
				}
				seqs[session][m.Payload.S] = true
			}
		}
		for sid, ss := range st.Sessions {
			for s := ss.FirstSeq; s <= ss.LastSeq; s++ {
				if !seqs[sid][s] {
					return fmt.Errorf("session %s (shard %d): seq %d not in the streams yet", sid, ss.ShardID, s)
				}
			}
		}
		return nil
	})
	n := 0
	for _, m := range seqs {
		n += len(m)
	}
	t.Logf("%d sessions, %d distinct seqs in the streams, none missing", len(seqs), n)
}
