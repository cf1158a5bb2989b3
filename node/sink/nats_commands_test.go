package sink_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/discluster/discluster/internal/natstest"
	"github.com/discluster/discluster/node/sink"
)

// publishNATSCommand publishes a command as a worker does: JSON of {shardId,
// payload} on discord_send.<shard>, waiting for JetStream's ack.
func publishNATSCommand(t *testing.T, js jetstream.JetStream, subject string, blob any) {
	t.Helper()
	b, err := json.Marshal(blob)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(t.Context(), subject, b); err != nil {
		t.Fatal(err)
	}
}

// handled records which reader handled which command.
type handled struct {
	mu    sync.Mutex
	by    map[int][]string // shard → the readers that handled its command
	bad   []string
	block chan struct{} // when set, handle waits for it (or the reader's end)
}

func (h *handled) reader(t *testing.T, s *sink.NATS, ctx context.Context, name string, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.ReadCommands(ctx, name, func(ctx context.Context, cmd sink.Command) {
			var d map[string]any
			if cmd.Op != 3 || json.Unmarshal(cmd.D, &d) != nil || d["status"] != "idle" {
				t.Errorf("command %+v (d %s) is not the presence published", cmd, cmd.D)
			}
			if h.block != nil {
				select {
				case <-h.block:
				case <-ctx.Done():
					return
				}
			}
			h.mu.Lock()
			h.by[cmd.ShardID] = append(h.by[cmd.ShardID], name)
			h.mu.Unlock()
		}, func(id string, err error) {
			h.mu.Lock()
			h.bad = append(h.bad, id+": "+err.Error())
			h.mu.Unlock()
		})
	}()
}

// waitNATS polls cond until it holds, for at most 10 s.
func waitNATS(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var natsPresence = map[string]any{"op": 3, "d": map[string]any{"since": nil, "activities": []any{}, "status": "idle", "afk": false}}

// Two nodes read the workers' commands through one durable consumer: each command
// reaches one of them, decoded; a message that is no command is reported and
// terminated; one a dead reader took but never acknowledged is redelivered after
// the ack wait; nothing stays pending.
func TestNATSReadCommands(t *testing.T) {
	defer sink.SetNATSCommandTimings(100*time.Millisecond, 500*time.Millisecond)()
	srv := natstest.Start(t)
	js := newJetStream(t, srv.URL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The first agent to read makes the stream and the consumer.
	first := newNATSSink(t, srv.URL(), 0)
	fctx, fstop := context.WithCancel(ctx)
	firstDone := make(chan struct{})
	go func() {
		defer close(firstDone)
		first.ReadCommands(fctx, "first", func(context.Context, sink.Command) { t.Error("a command before any was published") },
			func(string, error) {})
	}()
	waitNATS(t, "the consumer made", func() (bool, string) {
		_, err := js.Consumer(ctx, "DISCORD_SEND", sink.CommandsGroup)
		return err == nil, "no consumer"
	})
	fstop()
	<-firstDone
	// A reader that died holding a command: fetched, never acknowledged.
	cons, err := js.Consumer(ctx, "DISCORD_SEND", sink.CommandsGroup)
	if err != nil {
		t.Fatal(err)
	}
	publishNATSCommand(t, js, "discord_send.6", map[string]any{"shardId": 6, "payload": natsPresence})
	held, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range held.Messages() {
		n++
	}
	if n != 1 {
		t.Fatalf("the dead reader fetched %d commands (%v)", n, held.Error())
	}

	h := &handled{by: map[int][]string{}}
	var wg sync.WaitGroup
	for _, name := range []string{"a", "b"} {
		h.reader(t, newNATSSink(t, srv.URL(), 0), ctx, name, &wg)
	}
	for id := range 6 {
		publishNATSCommand(t, js, "discord_send."+strconv.Itoa(id), map[string]any{"shardId": id, "payload": natsPresence})
	}
	publishNATSCommand(t, js, "discord_send.1", map[string]any{"payload": natsPresence})                   // no shardId
	publishNATSCommand(t, js, "discord_send.2", map[string]any{"shardId": 3, "payload": natsPresence})     // another shard's subject
	publishNATSCommand(t, js, "discord_send.2", map[string]any{"shardId": 2, "payload": map[string]any{}}) // no op
	if _, err := js.Publish(ctx, "discord_send.0", []byte("not json")); err != nil {
		t.Fatal(err)
	}

	waitNATS(t, "every command handled once, nothing pending", func() (bool, string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		info, err := cons.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return len(h.by) == 7 && len(h.bad) == 4 && info.NumAckPending == 0 && info.NumPending == 0,
			"handled " + formatAny(h.by) + ", bad " + formatAny(h.bad) + ", consumer " + formatAny(info)
	})
	cancel()
	wg.Wait()
	for id, nodes := range h.by {
		if len(nodes) != 1 {
			t.Errorf("shard %d's command was handled by %v, want once", id, nodes)
		}
	}
	t.Logf("bad: %v", h.bad)
}

// A reader that stops while handling a command gives it back at once, and the
// other reader sends it, without waiting for the ack wait.
func TestNATSReadCommandsGivesBackOnStop(t *testing.T) {
	defer sink.SetNATSCommandTimings(100*time.Millisecond, time.Hour)()
	srv := natstest.Start(t)
	js := newJetStream(t, srv.URL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	stopping := &handled{by: map[int][]string{}, block: make(chan struct{})} // never unblocked
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stopping.reader(t, newNATSSink(t, srv.URL(), 0), sctx, "stopping", &wg)
	waitNATS(t, "the consumer made", func() (bool, string) {
		_, err := js.Consumer(ctx, "DISCORD_SEND", sink.CommandsGroup)
		return err == nil, "no consumer"
	})
	publishNATSCommand(t, js, "discord_send.1", map[string]any{"shardId": 1, "payload": natsPresence})
	cons, err := js.Consumer(ctx, "DISCORD_SEND", sink.CommandsGroup)
	if err != nil {
		t.Fatal(err)
	}
	waitNATS(t, "the command taken", func() (bool, string) {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 1, formatAny(info)
	})
	stop()
	wg.Wait()

	other := &handled{by: map[int][]string{}}
	other.reader(t, newNATSSink(t, srv.URL(), 0), ctx, "other", &wg)
	waitNATS(t, "the other reader sending it", func() (bool, string) {
		other.mu.Lock()
		defer other.mu.Unlock()
		return len(other.by[1]) == 1, formatAny(other.by)
	})
	cancel()
	wg.Wait()
}

func formatAny(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
