package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"
)

// CommandsStream is the stream @discordjs/brokers' RedisGateway publishes a worker's
// gateway commands to, one {shardId, payload} entry in field data each, payload
// being the gateway payload {op, d}.
const CommandsStream = "gateway_send"

// CommandsGroup is the consumer group every node reads CommandsStream in, each node
// its own consumer: one node takes each command and sends it through the shard's
// owner, which any node can reach, so a command published while its shard moves is
// sent once the move ends instead of being dropped by whichever node held it then.
const CommandsGroup = "discluster"

// Timings of the command reader; tests shorten them.
var (
	commandsBlock = 2 * time.Second // XREADGROUP BLOCK: how long one read waits
	// commandsClaimIdle is how long a command may sit read but not acknowledged (its
	// reader died) before another node takes it over.
	commandsClaimIdle = 30 * time.Second
)

// Command is one gateway command a worker published.
type Command struct {
	ID      string // the stream entry's id
	ShardID int
	Op      int
	D       json.RawMessage
}

// ReadCommands reads CommandsStream as consumer node of CommandsGroup until ctx ends,
// calling handle for each command, one at a time, and acknowledging it once handle
// returns, whatever it returned: handle owns the retries a command deserves. An entry
// that is not a command is acknowledged and reported through bad. Commands another
// node read but never acknowledged are taken over after commandsClaimIdle. The stream
// is trimmed to about maxLen entries, as the event streams are (0: never).
func (r *Redis) ReadCommands(ctx context.Context, node string, handle func(context.Context, Command), bad func(id string, err error)) error {
	// From the newest entry at the group's creation on: commands published while no
	// node ran are old news.
	if err := r.client.XGroupCreateMkStream(ctx, CommandsStream, CommandsGroup, "$").Err(); err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("redis: creating the %s group of %s: %w", CommandsGroup, CommandsStream, err)
	}
	lastClaim := time.Time{}
	for ctx.Err() == nil {
		var msgs []redis.XMessage
		if time.Since(lastClaim) >= commandsClaimIdle/2 {
			lastClaim = time.Now()
			claimed, _, err := r.client.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: CommandsStream, Group: CommandsGroup,
				Consumer: node, MinIdle: commandsClaimIdle, Start: "0-0", Count: 100}).Result()
			if err == nil {
				msgs = claimed
			}
		}
		if len(msgs) == 0 {
			streams, err := r.client.XReadGroup(ctx, &redis.XReadGroupArgs{Group: CommandsGroup, Consumer: node,
				Streams: []string{CommandsStream, ">"}, Count: 100, Block: commandsBlock}).Result()
			switch {
			case errors.Is(err, redis.Nil):
				continue
			case err != nil && ctx.Err() == nil:
				if strings.Contains(err.Error(), "NOGROUP") { // the stream was deleted: make it again
					r.client.XGroupCreateMkStream(ctx, CommandsStream, CommandsGroup, "$")
				}
				sleep(ctx, time.Second)
				continue
			case err != nil:
				return ctx.Err()
			}
			for _, s := range streams {
				msgs = append(msgs, s.Messages...)
			}
		}
		for _, m := range msgs {
			c, err := decodeCommand(m)
			if err != nil {
				bad(m.ID, err)
			} else {
				handle(ctx, c)
			}
			r.client.XAck(ctx, CommandsStream, CommandsGroup, m.ID)
		}
		if r.maxLen > 0 && len(msgs) > 0 {
			r.client.XTrimMaxLenApprox(ctx, CommandsStream, r.maxLen, 0)
		}
	}
	return ctx.Err()
}

// decodeCommand reads a brokers' {shardId, payload: {op, d}} blob.
func decodeCommand(m redis.XMessage) (Command, error) {
	data, ok := m.Values["data"].(string)
	if !ok {
		return Command{}, errors.New("no data field")
	}
	var blob struct {
		ShardID *int           `msgpack:"shardId"`
		Payload map[string]any `msgpack:"payload"`
	}
	if err := msgpack.Unmarshal([]byte(data), &blob); err != nil {
		return Command{}, fmt.Errorf("not msgpack of {shardId, payload}: %w", err)
	}
	if blob.ShardID == nil || blob.Payload == nil {
		return Command{}, errors.New("not {shardId, payload}")
	}
	op, ok := asInt(blob.Payload["op"])
	if !ok {
		return Command{}, errors.New("payload.op is not a number")
	}
	d, err := json.Marshal(blob.Payload["d"])
	if err != nil {
		return Command{}, fmt.Errorf("payload.d: %w", err)
	}
	return Command{ID: m.ID, ShardID: *blob.ShardID, Op: op, D: d}, nil
}

// asInt is a msgpack number as an int, if it is a whole one.
func asInt(v any) (int, bool) {
	switch n := v.(type) {
	case int8:
		return int(n), true
	case int16:
		return int(n), true
	case int32:
		return int(n), true
	case int64:
		return int(n), true
	case uint8:
		return int(n), true
	case uint16:
		return int(n), true
	case uint32:
		return int(n), true
	case uint64:
		return int(n), true
	case float64:
		if n == float64(int(n)) {
			return int(n), true
		}
	}
	return 0, false
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
