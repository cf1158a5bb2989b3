// Command redis-worker is a bot's worker in Go beside discluster: it reads the
// events the agents write to Redis Streams with --sink redis://, in the layout of
// @discordjs/brokers' PubSubRedisBroker (what @discordjs/core's RedisGateway reads),
// and sends gateway commands back the way RedisGateway does, on the gateway_send
// stream, which the agents read and send through each shard's owner. It needs no
// discluster package: the streams are the whole interface, and any number of such
// workers share the events out in one consumer group.
//
//   - Events: for each event name, XREADGROUP GROUP <group> <name> ... STREAMS
//     <EVENT> >, each entry's field data the msgpack of {shardId, payload}, payload
//     the dispatch {op: 0, t, s, d}; XACK once handled. The group is made at the
//     stream's start (XGROUP CREATE <EVENT> <group> 0 MKSTREAM), as the brokers do.
//   - Duplicates: delivery is at least once (after a crash of an agent, the events
//     since its last checkpoint come again), so an event whose (shardId, session,
//     payload.s) was handled is dropped; session is discluster's field beside data.
//   - Commands: XADD gateway_send * data <msgpack of {shardId, payload: {op, d}}>.
//
// This worker answers "!ping" by setting the bot's presence to "pong" (op 3) on the
// message's shard:
//
//	go run ./examples/redis-worker --redis redis://127.0.0.1:6379/0 --group bot --name worker-1
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"
)

// commandsStream is where @discordjs/core's RedisGateway publishes gateway commands.
const commandsStream = "gateway_send"

// opPresenceUpdate is the gateway's presence update.
const opPresenceUpdate = 3

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "redis-worker:", err)
		os.Exit(1)
	}
}

// run reads events until ctx ends.
func run(ctx context.Context, args []string, logs io.Writer) error {
	fs := flag.NewFlagSet("redis-worker", flag.ContinueOnError)
	fs.SetOutput(logs)
	url := fs.String("redis", "redis://127.0.0.1:6379/0", "the Redis the agents' --sink writes to")
	group := fs.String("group", "bot", "consumer group: the workers of one service share its events out")
	name := fs.String("name", "", "this worker's name in the group, stable across restarts (default: the host name)")
	events := fs.String("events", "MESSAGE_CREATE", "event names to read, comma-separated")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		*name, _ = os.Hostname()
	}
	opt, err := redis.ParseURL(*url)
	if err != nil {
		return errors.New("--redis: want redis://[user:password@]HOST:PORT[/DB]") // its error may quote a password
	}
	w := &worker{rdb: redis.NewClient(opt), group: *group, name: *name, streams: strings.Split(*events, ","),
		log: slog.New(slog.NewTextHandler(logs, nil)), seen: newSeenSet(100_000)}
	defer w.rdb.Close()
	for _, s := range w.streams {
		err := w.rdb.XGroupCreateMkStream(ctx, s, w.group, "0").Err()
		if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
			return fmt.Errorf("XGROUP CREATE %s %s: %w", s, w.group, err)
		}
	}
	w.log.Info("reading", "streams", w.streams, "group", w.group, "name", w.name)
	return w.read(ctx)
}

type worker struct {
	rdb     *redis.Client
	group   string
	name    string
	streams []string
	log     *slog.Logger
	seen    *seenSet
}

// read reads and handles entries until ctx ends. It starts with the entries this
// worker read before but never acknowledged (it died, or their handling failed),
// then reads new ones.
func (w *worker) read(ctx context.Context) error {
	backlog := true
	for ctx.Err() == nil {
		from := ">"
		if backlog {
			from = "0" // this consumer's pending entries
		}
		ids := make([]string, len(w.streams))
		for i := range ids {
			ids[i] = from
		}
		res, err := w.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: w.group, Consumer: w.name,
			Streams: append(append([]string{}, w.streams...), ids...), Count: 100, Block: 5 * time.Second}).Result()
		switch {
		case errors.Is(err, redis.Nil):
			continue
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			w.log.Warn("cannot read; retrying in 1s", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		got := 0
		for _, s := range res {
			for _, m := range s.Messages {
				got++
				if err := w.handle(ctx, s.Stream, m); err != nil {
					// Not acknowledged: read again from this worker's backlog.
					w.log.Warn("not handled; kept for a retry", "stream", s.Stream, "id", m.ID, "err", err)
					backlog = true
					sleep(ctx, time.Second)
					continue
				}
				if err := w.rdb.XAck(ctx, s.Stream, w.group, m.ID).Err(); err != nil {
					backlog = true
				}
			}
		}
		if backlog && got == 0 {
			backlog = false
		}
	}
	return nil
}

// dispatch is one event, as RedisGateway publishes it.
type dispatch struct {
	ShardID int `msgpack:"shardId"`
	Payload struct {
		Op int                `msgpack:"op"`
		T  string             `msgpack:"t"`
		S  int64              `msgpack:"s"`
		D  msgpack.RawMessage `msgpack:"d"`
	} `msgpack:"payload"`
}

type message struct {
	ID      string `msgpack:"id"`
	Content string `msgpack:"content"`
	Author  struct {
		Bot bool `msgpack:"bot"`
	} `msgpack:"author"`
}

// handle handles one entry; an error leaves it unacknowledged.
func (w *worker) handle(ctx context.Context, stream string, m redis.XMessage) error {
	data, _ := m.Values["data"].(string)
	var ev dispatch
	if err := msgpack.Unmarshal([]byte(data), &ev); err != nil {
		w.log.Warn("not a brokers' entry: skipped", "stream", stream, "id", m.ID, "err", err)
		return nil
	}
	session, _ := m.Values["session"].(string)
	if !w.seen.add(eventKey{ev.ShardID, session, ev.Payload.S}) {
		w.log.Info("duplicate dropped", "shard", ev.ShardID, "session", session, "seq", ev.Payload.S)
		return nil
	}
	if ev.Payload.T != "MESSAGE_CREATE" {
		return nil
	}
	var msg message
	if err := msgpack.Unmarshal(ev.Payload.D, &msg); err != nil {
		w.log.Warn("a MESSAGE_CREATE that is not a message: skipped", "shard", ev.ShardID, "seq", ev.Payload.S, "err", err)
		return nil
	}
	w.log.Info("MESSAGE_CREATE", "shard", ev.ShardID, "seq", ev.Payload.S, "message", msg.ID)
	if msg.Author.Bot || strings.TrimSpace(msg.Content) != "!ping" {
		return nil
	}
	presence := map[string]any{"since": nil, "status": "online", "afk": false,
		"activities": []any{map[string]any{"name": "pong", "type": 0}}}
	if err := w.publish(ctx, ev.ShardID, opPresenceUpdate, presence); err != nil {
		w.seen.forget(eventKey{ev.ShardID, session, ev.Payload.S}) // handled again when read again
		return err
	}
	w.log.Info("answered !ping", "shard", ev.ShardID, "seq", ev.Payload.S)
	return nil
}

// publish sends a gateway command as RedisGateway.send does: the agents take it from
// gateway_send and send it through the shard's owner. Nothing answers: a command the
// cluster cannot send is logged by the agent that took it.
func (w *worker) publish(ctx context.Context, shardID, op int, d any) error {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true) // as @msgpack/msgpack writes a JavaScript number
	err := enc.Encode(map[string]any{"shardId": shardID, "payload": map[string]any{"op": op, "d": d}})
	if err != nil {
		return err
	}
	return w.rdb.XAdd(ctx, &redis.XAddArgs{Stream: commandsStream, ID: "*", Values: []any{"data", buf.Bytes()}}).Err()
}

// eventKey names one event across the cluster: a shard's session and its seq.
type eventKey struct {
	shard   int
	session string
	seq     int64
}

// seenSet holds the most recent events handled, up to a bound: duplicates come soon
// after the original (the events since a checkpoint, about a second of them).
type seenSet struct {
	set   map[eventKey]struct{}
	order []eventKey // ring, oldest at next once full
	next  int
}

func newSeenSet(n int) *seenSet {
	return &seenSet{set: make(map[eventKey]struct{}, n), order: make([]eventKey, 0, n)}
}

// add reports whether k is new, and remembers it.
func (s *seenSet) add(k eventKey) bool {
	if _, ok := s.set[k]; ok {
		return false
	}
	if len(s.order) < cap(s.order) {
		s.order = append(s.order, k)
	} else {
		delete(s.set, s.order[s.next])
		s.order[s.next] = k
		s.next = (s.next + 1) % len(s.order)
	}
	s.set[k] = struct{}{}
	return true
}

// forget drops k, an event whose handling failed, so that its next reading counts.
func (s *seenSet) forget(k eventKey) { delete(s.set, k) }

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
