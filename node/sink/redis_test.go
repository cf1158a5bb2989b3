package sink_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/discluster/discluster/internal/redistest"
	"github.com/discluster/discluster/node/sink"
	"github.com/discluster/discluster/shard"
)

// messageCreate is the recorded MESSAGE_CREATE the fake Discord sends.
func messageCreate(t testing.TB) json.RawMessage {
	t.Helper()
	b, err := os.ReadFile("../../shard/gatewaytest/testdata/message_create.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// brokersMessage is a decoded blob: @discordjs/brokers' RedisGateway message.
type brokersMessage struct {
	ShardID int `msgpack:"shardId"`
	Payload struct {
		Op int    `msgpack:"op"`
		T  string `msgpack:"t"`
		S  int64  `msgpack:"s"`
		D  any    `msgpack:"d"`
	} `msgpack:"payload"`
}

// jsonValue is what JSON.parse makes of raw, in the shape msgpack decodes to here:
// numbers as float64, so both sides compare as JavaScript numbers.
func jsonValue(t testing.TB, raw []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// asJS normalizes a decoded msgpack value to JSON's shapes (every number a float64).
func asJS(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = asJS(e)
		}
	case []any:
		for i, e := range v {
			v[i] = asJS(e)
		}
	case int8:
		return float64(v)
	case int16:
		return float64(v)
	case int32:
		return float64(v)
	case int64:
		return float64(v)
	case uint8:
		return float64(v)
	case uint16:
		return float64(v)
	case uint32:
		return float64(v)
	case uint64:
		return float64(v)
	case float32:
		return float64(v)
	}
	return v
}

func decodeBlob(t testing.TB, b []byte) brokersMessage {
	t.Helper()
	var m brokersMessage
	if err := msgpack.Unmarshal(b, &m); err != nil {
		t.Fatalf("blob does not decode: %v", err)
	}
	m.Payload.D = asJS(m.Payload.D)
	return m
}

// The blob is {shardId, payload: {op: 0, t, s, d}}, d the event's data with its
// values as JSON.parse gives them: integers as msgpack integers of the smallest
// size, other numbers as float64.
func TestBrokersBlob(t *testing.T) {
	d := messageCreate(t)
	var buf bytes.Buffer
	if err := sink.AppendBrokersBlob(&buf, 7, "MESSAGE_CREATE", 42, d); err != nil {
		t.Fatal(err)
	}
	m := decodeBlob(t, buf.Bytes())
	if m.ShardID != 7 || m.Payload.Op != 0 || m.Payload.T != "MESSAGE_CREATE" || m.Payload.S != 42 {
		t.Errorf("envelope %+v", m)
	}
	if want := jsonValue(t, d); !reflect.DeepEqual(m.Payload.D, want) {
		t.Errorf("d decodes to\n%v\nwant\n%v", m.Payload.D, want)
	}
	var top map[string]any
	if err := msgpack.Unmarshal(buf.Bytes(), &top); err != nil || len(top) != 2 {
		t.Errorf("top level %v (%v): want exactly shardId and payload", top, err)
	}

	for _, tc := range []struct {
		json string
		want []byte // msgpack
	}{
		{`0`, []byte{0x00}},
		{`127`, []byte{0x7f}},
		{`-1`, []byte{0xff}},
		{`300`, []byte{0xcd, 0x01, 0x2c}},
		{`1.5`, []byte{0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0}},
		{`1e2`, []byte{0x64}},      // JSON.parse makes it 100, an integer
		{`null`, []byte{0xc0}},     // nil
		{`true`, []byte{0xc3}},     // true
		{`"a"`, []byte{0xa1, 'a'}}, // fixstr
		{`[]`, []byte{0x90}},       // fixarray
		{`{"a":[1]}`, []byte{0x81, 0xa1, 'a', 0x91, 0x01}},
	} {
		var b bytes.Buffer
		if err := sink.AppendBrokersBlob(&b, 0, "X", 1, json.RawMessage(tc.json)); err != nil {
			t.Fatal(err)
		}
		// The blob ends with d.
		if got := b.Bytes(); !bytes.HasSuffix(got, append([]byte{0xa1, 'd'}, tc.want...)) {
			t.Errorf("%s: blob ends % x, want d = % x", tc.json, got[max(0, len(got)-len(tc.want)-2):], tc.want)
		}
	}
	if err := sink.AppendBrokersBlob(&buf, 0, "X", 1, json.RawMessage(`{"a":`)); err == nil {
		t.Error("malformed data encoded")
	}
}

func delivery(shardID int, session string, seq int64, typ string, d json.RawMessage) sink.Delivery {
	return sink.Delivery{Node: "n1", Event: shard.Event{ShardID: shardID, SessionID: session, Seq: seq, Type: typ, Data: d}}
}

func newRedisSink(t testing.TB, url string, maxLen int64) *sink.Redis {
	t.Helper()
	r, err := sink.NewRedis(url, maxLen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func newClient(t testing.TB, url string) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// entry is one stream entry read back.
type entry struct {
	session string
	msg     brokersMessage
}

func readStream(t testing.TB, c *redis.Client, stream string) []entry {
	t.Helper()
	xs, err := c.XRange(context.Background(), stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]entry, len(xs))
	for i, x := range xs {
		data, ok := x.Values["data"].(string)
		if !ok {
			t.Fatalf("%s %s: no data field: %v", stream, x.ID, x.Values)
		}
		session, _ := x.Values["session"].(string)
		out[i] = entry{session: session, msg: decodeBlob(t, []byte(data))}
	}
	return out
}

// A batch becomes one entry per event, in its event's stream, in order, with the
// brokers' data field and the session beside it.
func TestRedisSinkWritesTheBrokersLayout(t *testing.T) {
	srv := redistest.Start(t, false)
	s := newRedisSink(t, srv.URL(), 1000)
	c := newClient(t, srv.URL())
	d := messageCreate(t)
	var batch []sink.Delivery
	for seq := int64(1); seq <= 50; seq++ {
		typ := "MESSAGE_CREATE"
		if seq%10 == 0 {
			typ = "GUILD_CREATE"
		}
		batch = append(batch, delivery(int(seq%3), "sess", seq, typ, d))
	}
	if err := s.Deliver(t.Context(), batch); err != nil {
		t.Fatal(err)
	}
	if err := s.Deliver(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	for _, e := range readStream(t, c, "MESSAGE_CREATE") {
		if e.session != "sess" || e.msg.Payload.T != "MESSAGE_CREATE" || e.msg.ShardID != int(e.msg.Payload.S%3) {
			t.Errorf("entry %+v", e)
		}
		seqs = append(seqs, e.msg.Payload.S)
	}
	if len(seqs) != 45 || seqs[0] != 1 || seqs[44] != 49 {
		t.Errorf("MESSAGE_CREATE seqs %v", seqs)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Errorf("out of order: %v", seqs)
		}
	}
	if g := readStream(t, c, "GUILD_CREATE"); len(g) != 5 || g[4].msg.Payload.S != 50 {
		t.Errorf("GUILD_CREATE: %d entries", len(g))
	}
}

// MAXLEN ~ bounds each stream: Redis trims whole nodes of entries, so a stream stays
// at its bound or a little above it, never grows without end.
func TestRedisSinkTrimsToMaxLen(t *testing.T) {
	srv := redistest.Start(t, false)
	const maxLen = 200
	s := newRedisSink(t, srv.URL(), maxLen)
	c := newClient(t, srv.URL())
	batch := make([]sink.Delivery, 100)
	for round := range 30 {
		for i := range batch {
			batch[i] = delivery(0, "s", int64(round*100+i+1), "TYPING_START", json.RawMessage(`{"x":1}`))
		}
		if err := s.Deliver(t.Context(), batch); err != nil {
			t.Fatal(err)
		}
	}
	n, err := c.XLen(t.Context(), "TYPING_START").Result()
	if err != nil {
		t.Fatal(err)
	}
	if n < maxLen || n > 2*maxLen {
		t.Errorf("XLEN %d after 3000 entries, want about %d", n, maxLen)
	}
	last := readStream(t, c, "TYPING_START")
	if got := last[len(last)-1].msg.Payload.S; got != 3000 {
		t.Errorf("last seq %d, want 3000", got)
	}
}

// A paused or dead Redis refuses the batch within Deliver's context, and a retry
// once it is back delivers it: nothing is dropped, and what the retry resends at
// most duplicates (at least once).
func TestRedisSinkDownRefusesAndRecovers(t *testing.T) {
	srv := redistest.Start(t, true)
	s := newRedisSink(t, srv.URL(), 0)
	c := newClient(t, srv.URL())
	d := json.RawMessage(`{"id":"1"}`)
	seq := int64(0)
	next := func(n int) []sink.Delivery {
		b := make([]sink.Delivery, n)
		for i := range b {
			seq++
			b[i] = delivery(1, "s", seq, "MESSAGE_CREATE", d)
		}
		return b
	}
	// deliverRetrying is the node's loop, in short: retry from the first event not
	// accepted until all are.
	deliverRetrying := func(b []sink.Delivery) (failures int) {
		deadline := time.Now().Add(30 * time.Second)
		for len(b) > 0 {
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			err := s.Deliver(ctx, b)
			cancel()
			b = b[sink.Accepted(err, len(b)):]
			if err != nil {
				failures++
				if time.Now().After(deadline) {
					t.Fatalf("still failing after 30 s: %v", err)
				}
			}
		}
		return failures
	}
	if f := deliverRetrying(next(10)); f != 0 {
		t.Fatalf("%d failures with Redis up", f)
	}

	for _, how := range []string{"paused", "killed"} {
		switch how {
		case "paused":
			srv.Pause()
		case "killed":
			srv.Kill()
		}
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		start := time.Now()
		err := s.Deliver(ctx, next(20))
		cancel()
		seq -= 20 // the refused batch is sent again below
		if err == nil {
			t.Fatalf("%s: Deliver accepted a batch", how)
		}
		if sink.Accepted(err, 20) != 0 {
			t.Errorf("%s: %d events accepted", how, sink.Accepted(err, 20))
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("%s: Deliver took %v past its context", how, took)
		}
		if errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v", how, err)
		}
		t.Logf("%s: %v", how, err)
		b := next(20)
		done := make(chan int)
		go func() { done <- deliverRetrying(b) }()
		switch how {
		case "paused":
			srv.Continue()
		case "killed":
			srv.Restart()
		}
		if f := <-done; f == 0 && how == "killed" {
			t.Logf("%s: delivered at once after the restart", how)
		}
	}
	// Every seq from 1 to the last is there, in order, none missing.
	got := readStream(t, c, "MESSAGE_CREATE")
	have := map[int64]int{}
	for _, e := range got {
		have[e.msg.Payload.S]++
	}
	for s := int64(1); s <= seq; s++ {
		if have[s] == 0 {
			t.Errorf("seq %d missing from the stream", s)
		}
	}
	t.Logf("%d entries for %d seqs", len(got), seq)
}

// A PartialError carries how many events were accepted.
func TestAccepted(t *testing.T) {
	base := errors.New("down")
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 10},
		{base, 0},
		{&sink.PartialError{Accepted: 4, Err: base}, 4},
		{fmt.Errorf("wrapped: %w", &sink.PartialError{Accepted: 3, Err: base}), 3},
		{&sink.PartialError{Accepted: 40, Err: base}, 10},
		{&sink.PartialError{Accepted: -1, Err: base}, 0},
	} {
		if got := sink.Accepted(tc.err, 10); got != tc.want {
			t.Errorf("Accepted(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
	if !errors.Is(&sink.PartialError{Accepted: 1, Err: base}, base) {
		t.Error("PartialError does not unwrap")
	}
}

// A URL's password never shows in an error.
func TestRedisURL(t *testing.T) {
	for _, bad := range []string{"http://x", "redis://:s3cret@host:notaport", "redis://:s3cret@h:1/notadb"} {
		_, err := sink.NewRedis(bad, 10)
		if err == nil {
			t.Errorf("%s accepted", bad)
			continue
		}
		if bytes.Contains([]byte(err.Error()), []byte("s3cret")) {
			t.Errorf("error shows the password: %v", err)
		}
	}
	if _, err := sink.NewRedis("redis://127.0.0.1:1/2", -1); err == nil {
		t.Error("negative max length accepted")
	}
	if _, err := sink.ParseRedisURL("redis://127.0.0.1:6379/3"); err != nil {
		t.Error(err)
	}
}

// BenchmarkRedisSink measures events/s through the Redis sink into a real
// redis-server on this machine: batches of 256 recorded MESSAGE_CREATEs (as a busy
// cluster's queue hands them over), and the sink's own CPU per million events.
func BenchmarkRedisSink(b *testing.B) {
	for _, size := range []int{1, 32, 256} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			srv := redistest.Start(b, false)
			s := newRedisSink(b, srv.URL(), sink.DefaultRedisMaxLen)
			d := messageCreate(b)
			batch := make([]sink.Delivery, size)
			for i := range batch {
				batch[i] = delivery(i%16, "bench-session", int64(i+1), "MESSAGE_CREATE", d)
			}
			var ru0, ru1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			b.ResetTimer()
			events := 0
			for b.Loop() {
				if err := s.Deliver(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
				events += size
			}
			b.StopTimer()
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
			b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(cpu.Seconds()/float64(events)*1e6, "cpu-s/Mevents")
			b.ReportMetric(0, "ns/op")
		})
	}
}
