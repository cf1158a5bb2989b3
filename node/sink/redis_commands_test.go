package sink_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/discluster/discluster/internal/redistest"
	"github.com/discluster/discluster/node/sink"
)

// publish adds a command as @discordjs/brokers' PubSubRedisBroker.publish does:
// XADD gateway_send * data <msgpack of {shardId, payload}>.
func publish(t *testing.T, c *redis.Client, blob any) {
	t.Helper()
	b, err := msgpack.Marshal(blob)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.XAdd(context.Background(), &redis.XAddArgs{Stream: sink.CommandsStream, Values: []any{"data", b}}).Err(); err != nil {
		t.Fatal(err)
	}
}

// Two nodes read the workers' commands: each command reaches one of them, decoded;
// an entry that is no command is reported and acknowledged; one a dead reader took
// but never acknowledged is taken over; nothing stays pending.
func TestReadCommands(t *testing.T) {
	defer sink.SetCommandTimings(100*time.Millisecond, 300*time.Millisecond)()
	srv := redistest.Start(t, false)
	c := newClient(t, srv.URL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// A reader that died holding a command: read, never acknowledged.
	if err := c.XGroupCreateMkStream(ctx, sink.CommandsStream, sink.CommandsGroup, "$").Err(); err != nil {
		t.Fatal(err)
	}
	presence := map[string]any{"op": 3, "d": map[string]any{"since": nil, "activities": []any{}, "status": "idle", "afk": false}}
	publish(t, c, map[string]any{"shardId": 6, "payload": presence})
	held, err := c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: sink.CommandsGroup, Consumer: "dead", Streams: []string{sink.CommandsStream, ">"}, Count: 1, Block: -1}).Result()
	if err != nil || len(held) != 1 || len(held[0].Messages) != 1 {
		t.Fatalf("the dead reader's read: %v, %v", held, err)
	}

	var mu sync.Mutex
	got := map[int][]string{} // shard → the nodes that handled it
	var bad []string
	var wg sync.WaitGroup
	for _, node := range []string{"a", "b"} {
		r := newRedisSink(t, srv.URL(), 0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.ReadCommands(ctx, node, func(_ context.Context, cmd sink.Command) {
				var d map[string]any
				if cmd.Op != 3 || json.Unmarshal(cmd.D, &d) != nil || d["status"] != "idle" {
					t.Errorf("command %+v (d %s) is not the presence published", cmd, cmd.D)
				}
				mu.Lock()
				got[cmd.ShardID] = append(got[cmd.ShardID], node)
				mu.Unlock()
			}, func(id string, err error) {
				mu.Lock()
				bad = append(bad, err.Error())
				mu.Unlock()
			})
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for id := range 6 {
		publish(t, c, map[string]any{"shardId": id, "payload": presence})
	}
	publish(t, c, map[string]any{"payload": presence}) // no shardId

	for {
		mu.Lock()
		n, nb := len(got), len(bad)
		mu.Unlock()
		pending, _ := c.XPending(ctx, sink.CommandsStream, sink.CommandsGroup).Result()
		if n == 7 && nb == 1 && pending != nil && pending.Count == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handled %v, bad %v, pending %+v", got, bad, pending)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	for id, nodes := range got {
		if len(nodes) != 1 {
			t.Errorf("shard %d's command was handled by %v, want once", id, nodes)
		}
	}
	if len(bad) != 1 {
		t.Errorf("bad entries %v, want the one without shardId", bad)
	}
}
