package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"
)

// DefaultRedisMaxLen is the default bound of each stream (XADD MAXLEN ~).
const DefaultRedisMaxLen = 100_000

// Redis writes events to Redis Streams in the layout of @discordjs/brokers'
// PubSubRedisBroker, as @discordjs/brokers' RedisGateway publishes a gateway's
// dispatches, so that @discordjs/core workers (and any PubSubRedisBroker consumer
// group) read discluster's events unchanged:
//
//	XADD <EVENT_NAME> MAXLEN ~ <maxlen> * data <blob> session <session id>
//
// one stream per event name (MESSAGE_CREATE, GUILD_CREATE, …), where blob is the
// msgpack encoding (what the brokers' default encoder, @msgpack/msgpack, produces)
// of {shardId, payload}, payload being the dispatch as Discord sent it:
// {op: 0, t, s, d}. That is RedisGateway.toPublishArgs's BrokerProps<GatewayDispatchPayload>,
// which @discordjs/core's Client reads as dispatch.t and dispatch.d. The brokers'
// reader takes the field named data and ignores others; session is there for
// consumers that drop duplicates by (shardId, session, payload.s).
//
// A batch goes out as one pipeline: one round trip. The sink never retries by itself
// (the node does, from the first event Redis did not accept); it keeps no buffer.
type Redis struct {
	client *redis.Client
	maxLen int64
	bufs   sync.Pool // *bytes.Buffer
}

// NewRedis connects lazily to the Redis that url names
// (redis://[user:password@]HOST:PORT[/DB] or rediss:// for TLS), bounding each
// stream to about maxLen entries (0: unbounded).
func NewRedis(url string, maxLen int64) (*Redis, error) {
	opt, err := ParseRedisURL(url)
	if err != nil {
		return nil, err
	}
	if maxLen < 0 {
		return nil, fmt.Errorf("redis sink: max length %d is negative", maxLen)
	}
	r := &Redis{client: redis.NewClient(opt), maxLen: maxLen}
	r.bufs.New = func() any { return new(bytes.Buffer) }
	return r, nil
}

// ParseRedisURL checks a redis:// URL and returns the client options the sink uses.
// Its errors never repeat the URL, which may hold a password.
func ParseRedisURL(url string) (*redis.Options, error) {
	if !strings.HasPrefix(url, "redis://") && !strings.HasPrefix(url, "rediss://") {
		return nil, errors.New("redis sink: want redis://HOST:PORT[/DB]")
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		// go-redis's errors quote parts of the URL; keep only what cannot hold a secret.
		return nil, errors.New("redis sink: malformed URL: want redis://[user:password@]HOST:PORT[/DB]")
	}
	// The node retries a failed batch itself, from the first event not accepted; a
	// retry inside the client would send the whole pipeline again.
	opt.MaxRetries = -1
	opt.ContextTimeoutEnabled = true
	opt.DisableIdentity = true
	return opt, nil
}

// Close closes the connections.
func (r *Redis) Close() error { return r.client.Close() }

// Ping checks that Redis answers.
func (r *Redis) Ping(ctx context.Context) error { return r.client.Ping(ctx).Err() }

// Deliver implements Sink: one XADD per event, in one pipeline. When Redis refuses or
// does not answer, the events from the first one without a reply are not accepted
// (a *PartialError says how many before it were).
func (r *Redis) Deliver(ctx context.Context, batch []Delivery) error {
	if len(batch) == 0 {
		return nil
	}
	buf := r.bufs.Get().(*bytes.Buffer)
	defer r.bufs.Put(buf)
	buf.Reset()
	ends := make([]int, len(batch))
	for i, d := range batch {
		if err := AppendBrokersBlob(buf, d.Event.ShardID, d.Event.Type, d.Event.Seq, d.Event.Data); err != nil {
			return fmt.Errorf("shard %d seq %d (%s): %w", d.Event.ShardID, d.Event.Seq, d.Event.Type, err)
		}
		ends[i] = buf.Len()
	}
	blobs := buf.Bytes()
	pipe := r.client.Pipeline()
	start := 0
	for i, d := range batch {
		pipe.XAdd(ctx, &redis.XAddArgs{
			Stream: d.Event.Type, MaxLen: r.maxLen, Approx: r.maxLen > 0, ID: "*",
			Values: []any{"data", blobs[start:ends[i]], "session", d.Event.SessionID},
		})
		start = ends[i]
	}
	cmds, err := pipe.Exec(ctx)
	if err == nil {
		return nil
	}
	for i, c := range cmds {
		if c.Err() != nil {
			err := fmt.Errorf("redis XADD %s: %w", batch[i].Event.Type, c.Err())
			if i == 0 {
				return err
			}
			return &PartialError{Accepted: i, Err: err}
		}
	}
	return fmt.Errorf("redis: %w", err)
}

// AppendBrokersBlob appends to buf the msgpack of @discordjs/brokers' RedisGateway
// message for one dispatch: {shardId, payload: {op: 0, t, s, d}}, d transcoded from
// JSON (objects to maps, integers to the smallest integer format, other numbers to
// float64, as @msgpack/msgpack encodes what JSON.parse returns).
func AppendBrokersBlob(buf *bytes.Buffer, shardID int, typ string, seq int64, d json.RawMessage) error {
	enc := msgpack.NewEncoder(buf)
	enc.UseCompactInts(true)
	enc.UseCompactFloats(false)
	mark := buf.Len()
	err := errors.Join(
		enc.EncodeMapLen(2),
		enc.EncodeString("shardId"), enc.EncodeInt(int64(shardID)),
		enc.EncodeString("payload"), enc.EncodeMapLen(4),
		enc.EncodeString("op"), enc.EncodeInt(0),
		enc.EncodeString("t"), enc.EncodeString(typ),
		enc.EncodeString("s"), enc.EncodeInt(seq),
		enc.EncodeString("d"),
	)
	if err == nil {
		err = transcodeJSON(enc, d)
	}
	if err != nil {
		buf.Truncate(mark)
	}
	return err
}

// maxSafeInt is JavaScript's Number.MAX_SAFE_INTEGER.
const maxSafeInt = 1<<53 - 1

// transcodeJSON writes the JSON value raw as msgpack.
func transcodeJSON(enc *msgpack.Encoder, raw json.RawMessage) error {
	if len(raw) == 0 {
		return enc.EncodeNil()
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("event data: %w", err)
	}
	return encodeValue(enc, v)
}

func encodeValue(enc *msgpack.Encoder, v any) error {
	switch v := v.(type) {
	case nil:
		return enc.EncodeNil()
	case bool:
		return enc.EncodeBool(v)
	case string:
		return enc.EncodeString(v)
	case json.Number:
		// What JSON.parse makes of it: a double, which @msgpack/msgpack encodes as an
		// integer when it is a safe integer (Number.isSafeInteger), else as float64.
		if i, err := v.Int64(); err == nil && i >= -maxSafeInt && i <= maxSafeInt {
			return enc.EncodeInt(i)
		}
		f, err := v.Float64()
		if err != nil && !math.IsInf(f, 0) { // beyond a double's range: ±Infinity, as in JavaScript
			return fmt.Errorf("event data: number %s: %w", v, err)
		}
		if f == math.Trunc(f) && math.Abs(f) <= maxSafeInt {
			return enc.EncodeInt(int64(f))
		}
		return enc.EncodeFloat64(f)
	case []any:
		if err := enc.EncodeArrayLen(len(v)); err != nil {
			return err
		}
		for _, e := range v {
			if err := encodeValue(enc, e); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		if err := enc.EncodeMapLen(len(v)); err != nil {
			return err
		}
		for k, e := range v {
			if err := enc.EncodeString(k); err != nil {
				return err
			}
			if err := encodeValue(enc, e); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("event data: unexpected %T", v)
}
