package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/discluster/discluster/internal/natstest"
	"github.com/discluster/discluster/node/sink"
)

// natsStream reads the events stream as a worker would, message by message from
// where it left off, and checks each one.
type natsStream struct {
	t       *testing.T
	js      jetstream.JetStream
	shards  int
	next    uint64
	seqs    map[string]map[int64]int // session → seq → times stored
	creates map[int]int              // shard → MESSAGE_CREATEs
	bad     int
}

func newNATSStream(t *testing.T, url string, shards int) *natsStream {
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &natsStream{t: t, js: js, shards: shards, next: 1, seqs: map[string]map[int64]int{}, creates: map[int]int{}}
}

// read takes in every message stored since the last read.
func (r *natsStream) read() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := r.js.Stream(ctx, sink.DefaultNATSStream)
	if err != nil {
		return err
	}
	for last := st.CachedInfo().State.LastSeq; r.next <= last; r.next++ {
		m, err := st.GetMsg(ctx, r.next)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if err := r.check(m); err != nil {
			if r.bad++; r.bad <= 5 {
				r.t.Errorf("stream seq %d on %s: %v: %s", r.next, m.Subject, err, m.Data)
			}
		}
	}
	return nil
}

// check checks one stored event: its subject, headers and body agree, and a
// MESSAGE_CREATE is on its guild's shard.
func (r *natsStream) check(m *jetstream.RawStreamMsg) error {
	var body struct {
		Op int    `json:"op"`
		T  string `json:"t"`
		S  int64  `json:"s"`
		D  struct {
			ID      string `json:"id"`
			GuildID string `json:"guild_id"`
		} `json:"d"`
	}
	if err := json.Unmarshal(m.Data, &body); err != nil {
		return err
	}
	shardID, err := strconv.Atoi(m.Header.Get(sink.HeaderShard))
	if err != nil || shardID < 0 || shardID >= r.shards {
		return fmt.Errorf("%s %q", sink.HeaderShard, m.Header.Get(sink.HeaderShard))
	}
	session := m.Header.Get(sink.HeaderSession)
	switch {
	case body.Op != 0 || body.S < 1 || body.T == "":
		return errors.New("not a dispatch")
	case m.Subject != "discord."+strconv.Itoa(shardID)+"."+body.T:
		return errors.New("subject does not name the shard and the type")
	case m.Header.Get(sink.HeaderEvent) != body.T || m.Header.Get(sink.HeaderSeq) != strconv.FormatInt(body.S, 10):
		return errors.New("headers disagree with the body")
	case m.Header.Get(jetstream.MsgIDHeader) != session+":"+strconv.FormatInt(body.S, 10) || session == "":
		return fmt.Errorf("%s %q", jetstream.MsgIDHeader, m.Header.Get(jetstream.MsgIDHeader))
	}
	if body.T == "MESSAGE_CREATE" {
		if body.D.ID == "" {
			return errors.New("d is not the fake's message")
		}
		if body.D.GuildID != "" {
			g, err := strconv.ParseUint(body.D.GuildID, 10, 64)
			if err != nil {
				return err
			}
			if want := int((g >> 22) % uint64(r.shards)); want != shardID {
				return fmt.Errorf("guild %d is shard %d's, not %d's", g, want, shardID)
			}
		}
		r.creates[shardID]++
	}
	if r.seqs[session] == nil {
		r.seqs[session] = map[int64]int{}
	}
	r.seqs[session][body.S]++
	return nil
}

// A cluster of agents with --sink nats:// publishes its shards' events to a real
// nats-server's JetStream: MESSAGE_CREATEs on discord.<shard>.MESSAGE_CREATE of
// their guild's shard; a presence update a worker publishes to discord_send.2
// reaches the fake Discord on shard 2. nats-server is killed under load and
// started again (the agents hold their positions meanwhile), then an agent is
// killed and its shards RESUME elsewhere, Discord replaying what it had not
// checkpointed: afterwards every seq of every session is in the stream exactly
// once, the replays dropped by Nats-Msg-Id.
func TestNATSSinkEndToEnd(t *testing.T) {
	const shards = 4
	srv := natstest.Start(t)
	e := newE2E(t, shards)
	e.startAgentsWith(3, func(int) []string { return []string{"--sink", srv.URL()} })
	e.allReady(60*time.Second, e.nodes...)
	r := newNATSStream(t, srv.URL(), shards)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e.waitFor(30*time.Second, "the agents reading the commands stream", func() error {
		_, err := r.js.Consumer(ctx, sink.NATSCommandsStream(sink.DefaultNATSStream), sink.CommandsGroup)
		return err
	})

	// A worker as the README shows it: a durable consumer of the MESSAGE_CREATEs,
	// which answers the first one of shard 2 with a presence update published to
	// discord_send.2, for an agent to write on shard 2's connection.
	var mu sync.Mutex
	seen := map[int]int{} // shard → MESSAGE_CREATEs the worker received
	cons, err := r.js.CreateOrUpdateConsumer(ctx, sink.DefaultNATSStream, jetstream.ConsumerConfig{
		Durable: "bot", FilterSubject: "discord.*.MESSAGE_CREATE", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var ev struct {
			T string          `json:"t"`
			S int64           `json:"s"`
			D json.RawMessage `json:"d"`
		}
		if err := json.Unmarshal(m.Data(), &ev); err != nil || ev.T != "MESSAGE_CREATE" {
			t.Errorf("the worker got %s: %v", m.Data(), err)
		}
		shardID, _ := strconv.Atoi(m.Headers().Get(sink.HeaderShard))
		m.Ack()
		mu.Lock()
		defer mu.Unlock()
		if seen[shardID]++; shardID == 2 && seen[2] == 1 {
			cmd, _ := json.Marshal(map[string]any{"shardId": shardID, "payload": map[string]any{"op": 3,
				"d": map[string]any{"since": nil, "activities": []any{map[string]any{"name": "from a NATS worker", "type": 0}}, "status": "dnd", "afk": false}}})
			if _, err := r.js.Publish(ctx, "discord_send."+strconv.Itoa(shardID), cmd); err != nil {
				t.Errorf("publishing the command: %v", err)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	e.waitFor(60*time.Second, "MESSAGE_CREATEs of every shard at the worker", func() error {
		mu.Lock()
		defer mu.Unlock()
		for id := range shards {
			if seen[id] < 5 {
				return fmt.Errorf("MESSAGE_CREATEs by shard: %v", seen)
			}
		}
		return nil
	})
	e.waitFor(30*time.Second, "the fake Discord receiving the worker's presence on shard 2", func() error {
		sh := e.mustStats().Shards[2]
		if sh.Commands[3] != 1 || !strings.Contains(string(sh.LastCommand), "from a NATS worker") {
			return fmt.Errorf("shard 2's commands: %v, last %s", sh.Commands, sh.LastCommand)
		}
		return nil
	})
	mu.Lock()
	t.Logf("the worker received MESSAGE_CREATEs by shard: %v", seen)
	mu.Unlock()

	// nats-server killed under load, then started again on its store.
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
	during := e.mustStats()
	srv.Restart()
	e.waitFor(60*time.Second, "events flowing again after the outage", func() error {
		if got := e.mustStats().EventsSent; got < during.EventsSent+100 {
			return fmt.Errorf("%d events sent since nats-server came back", got-during.EventsSent)
		}
		return nil
	})

	// An agent killed: its shards resume on the others, Discord replaying the
	// events since their last checkpoint, which the stream has already.
	resumes := e.mustStats().Resumes
	victim := e.others(e.leader(e.nodes...))[0]
	sendSignal(t, victim.Child, syscall.SIGKILL)
	exited(t, victim.Child, 30*time.Second)
	e.allReady(60*time.Second, e.others(victim)...)

	// What the fake sent before this point must all reach the stream, once.
	sent := e.mustStats()
	e.waitFor(60*time.Second, "the stream holding what the fake sent", func() error {
		if err := r.read(); err != nil {
			return err
		}
		for sid, ss := range sent.Sessions {
			for s := ss.FirstSeq; s <= ss.LastSeq; s++ {
				if r.seqs[sid][s] == 0 {
					return fmt.Errorf("session %s (shard %d): seq %d not in the stream yet", sid, ss.ShardID, s)
				}
			}
		}
		return nil
	})
	stored, twice := 0, 0
	for sid, m := range r.seqs {
		for s, n := range m {
			stored++
			if n > 1 {
				if twice++; twice <= 5 {
					t.Errorf("session %s seq %d stored %d times", sid, s, n)
				}
			}
		}
	}
	replayed := int64(0)
	for _, ss := range sent.Sessions {
		replayed += ss.Replayed
	}
	if sent.Resumes <= resumes {
		t.Errorf("resumes %d → %d: the killed agent's shards should have resumed", resumes, sent.Resumes)
	}
	if sent.IdentifyViolations != 0 {
		t.Errorf("%d identify violations", sent.IdentifyViolations)
	}
	t.Logf("%d sessions, %d seqs in the stream, each once, though the fake replayed %d events to RESUMEs over the run",
		len(r.seqs), stored, replayed)
}

// --check prints a NATS sink without its password or token, and a malformed one's
// error does not show them either.
func TestCheckHidesTheNATSSinksSecrets(t *testing.T) {
	t.Setenv("DISCORD_TOKEN", "t")
	for spec, shown := range map[string]string{
		"nats://bot:hunter2@127.0.0.1:4222,127.0.0.1:4223?stream=EV": "nats://bot:xxxxx@127.0.0.1:4222,127.0.0.1:4223?stream=EV",
		"tls://hunter2@127.0.0.1:4222":                               "tls://xxxxx@127.0.0.1:4222",
	} {
		out, _, err := run(t, "agent", "--data-dir", t.TempDir(), "--sink", spec, "--check")
		if err != nil || !strings.Contains(out, "configuration OK") {
			t.Fatalf("--check: %v\n%s", err, out)
		}
		if strings.Contains(out, "hunter2") || !strings.Contains(out, "sink "+shown) {
			t.Errorf("the sink as --check prints it: %s", out)
		}
	}
	for _, bad := range []string{"nats://bot:hunter2@127.0.0.1:notaport", "nats://hunter2@127.0.0.1:4222?stream=a.b", "nats://bot:hunter2@h:1?x=1"} {
		out, errOut, err := run(t, "agent", "--data-dir", t.TempDir(), "--sink", bad, "--check")
		if err == nil {
			t.Errorf("--sink %s accepted", bad)
		}
		if all := out + errOut + fmt.Sprint(err); strings.Contains(all, "hunter2") {
			t.Errorf("--sink %s: the error shows the secret: %s", bad, all)
		}
	}
}
