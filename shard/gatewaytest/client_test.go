package gatewaytest

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/klauspost/compress/zstd"
)

// The raw client below is deliberately minimal and independent of the
// fake's encoder: it inflates zlib-stream with the standard library and
// treats every message as a chunk of one long stream, as Discord's docs say
// a client must.

// testTimeout bounds every wait in these tests; nothing waits by sleeping.
const testTimeout = 15 * time.Second

// fakeClock is an adjustable clock for identify windows.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newTestServer starts a fake for one test. Unless the test sets it, the
// identify window is 1ns so that tests identifying several shards do not
// wait 5 s each.
func newTestServer(t testing.TB, o Options) *Server {
	t.Helper()
	if o.IdentifyWindow == 0 {
		o.IdentifyWindow = time.Nanosecond
	}
	s, err := NewServer(o)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// await waits for cond on the server's stats, failing the test on timeout.
func await(t testing.TB, s *Server, what string, cond func(Stats) bool) {
	t.Helper()
	if err := s.Await(ctxT(t), cond); err != nil {
		st := s.Stats()
		b, _ := json.Marshal(st)
		t.Fatalf("waiting for %s: %v; stats: %s", what, err, b)
	}
}

// payload is one gateway payload as a client sees it.
type payload struct {
	Op  int             `json:"op"`
	D   json.RawMessage `json:"d"`
	S   *int64          `json:"s"`
	T   *string         `json:"t"`
	raw []byte
}

func (p payload) name() string {
	if p.T == nil {
		return ""
	}
	return *p.T
}

func (p payload) seq() int64 {
	if p.S == nil {
		return -1
	}
	return *p.S
}

// wsSource feeds one long compressed stream from successive websocket
// messages, fetching the next message only when the decompressor needs
// more input.
type wsSource struct {
	ctx     context.Context
	ws      *websocket.Conn
	buf     []byte
	err     error
	msgs    int // binary messages received
	markers int // of which ended with 00 00 ff ff
}

func (w *wsSource) Read(p []byte) (int, error) {
	for len(w.buf) == 0 {
		if w.err != nil {
			return 0, w.err
		}
		typ, b, err := w.ws.Read(w.ctx)
		if err != nil {
			w.err = err
			return 0, err
		}
		if typ != websocket.MessageBinary {
			w.err = errors.New("text message on a compressed connection")
			return 0, w.err
		}
		w.msgs++
		if bytes.HasSuffix(b, syncFlushMarker) {
			w.markers++
		}
		w.buf = b
	}
	n := copy(p, w.buf)
	w.buf = w.buf[n:]
	return n, nil
}

type tclient struct {
	t        testing.TB
	ws       *websocket.Conn
	compress string
	src      *wsSource
	dec      *json.Decoder
	zstd     *zstd.Decoder
	payloads int
}

// dial connects to url with the query (e.g. "v=10&encoding=json").
func dial(t testing.TB, url, query string) *tclient {
	t.Helper()
	c, err := tryDial(t, url, query)
	if err != nil {
		t.Fatalf("dial %s?%s: %v", url, query, err)
	}
	return c
}

func tryDial(t testing.TB, url, query string) (*tclient, error) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url+"?"+query, nil)
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(-1) // READY of a big shard is large
	c := &tclient{t: t, ws: ws}
	for _, kv := range strings.Split(query, "&") {
		if v, ok := strings.CutPrefix(kv, "compress="); ok {
			c.compress = v
		}
	}
	c.src = &wsSource{ws: ws}
	t.Cleanup(func() {
		_ = ws.CloseNow()
		if c.zstd != nil {
			c.zstd.Close()
		}
	})
	return c, nil
}

// read returns the next payload, or the error that ended the connection.
func (c *tclient) read() (payload, error) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var raw json.RawMessage
	switch c.compress {
	case "":
		typ, b, err := c.ws.Read(ctx)
		if err != nil {
			return payload{}, err
		}
		if typ != websocket.MessageText {
			return payload{}, errors.New("binary message on an uncompressed connection")
		}
		raw = b
	default:
		c.src.ctx = ctx
		if c.dec == nil {
			var r io.Reader
			if c.compress == "zlib-stream" {
				zr, err := zlib.NewReader(c.src)
				if err != nil {
					return payload{}, c.srcErr(err)
				}
				r = zr
			} else {
				zr, err := zstd.NewReader(c.src, zstd.WithDecoderConcurrency(1))
				if err != nil {
					return payload{}, err
				}
				c.zstd, r = zr, zr
			}
			c.dec = json.NewDecoder(r)
		}
		if err := c.dec.Decode(&raw); err != nil {
			return payload{}, c.srcErr(err)
		}
	}
	var p payload
	if err := json.Unmarshal(raw, &p); err != nil {
		return payload{}, err
	}
	p.raw = raw
	c.payloads++
	return p, nil
}

func (c *tclient) srcErr(err error) error {
	if c.src.err != nil {
		return c.src.err
	}
	return err
}

func (c *tclient) mustRead() payload {
	c.t.Helper()
	p, err := c.read()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return p
}

// expect reads the next payload and checks its op (and name for op 0).
func (c *tclient) expect(op int, name string) payload {
	c.t.Helper()
	p := c.mustRead()
	if p.Op != op || (op == opDispatch && p.name() != name) {
		c.t.Fatalf("got op %d t %q, want op %d t %q: %s", p.Op, p.name(), op, name, p.raw)
	}
	return p
}

// expectClose reads until the connection ends and checks the close code.
func (c *tclient) expectClose(code int) {
	c.t.Helper()
	for {
		p, err := c.read()
		if err != nil {
			if got := int(websocket.CloseStatus(err)); got != code {
				c.t.Fatalf("connection ended with %v (code %d), want close %d", err, got, code)
			}
			return
		}
		_ = p
	}
}

func (c *tclient) sendRaw(b []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *tclient) send(op int, d any) {
	c.t.Helper()
	b, err := json.Marshal(map[string]any{"op": op, "d": d})
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(b)
}

func (c *tclient) hello() payload { c.t.Helper(); return c.expect(opHello, "") }

const testIntents = 1<<0 | intentGuildMessages | intentDirectMessages | intentMessageContent

func identifyD(token string, shard []int, intents int64) map[string]any {
	d := map[string]any{
		"token":      token,
		"properties": map[string]string{"os": "linux", "browser": "gatewaytest", "device": "gatewaytest"},
		"intents":    intents,
	}
	if shard != nil {
		d["shard"] = shard
	}
	return d
}

func (c *tclient) identify(shard []int) {
	c.t.Helper()
	c.send(opIdentify, identifyD(defaultToken, shard, testIntents))
}

func (c *tclient) resume(sessionID string, seq int64) {
	c.t.Helper()
	c.send(opResume, map[string]any{"token": defaultToken, "session_id": sessionID, "seq": seq})
}

type readyD struct {
	V                int    `json:"v"`
	SessionID        string `json:"session_id"`
	ResumeGatewayURL string `json:"resume_gateway_url"`
	Shard            []int  `json:"shard"`
	User             struct {
		ID  string `json:"id"`
		Bot bool   `json:"bot"`
	} `json:"user"`
	Guilds []struct {
		ID          string `json:"id"`
		Unavailable bool   `json:"unavailable"`
	} `json:"guilds"`
	Application struct {
		ID    string `json:"id"`
		Flags int64  `json:"flags"`
	} `json:"application"`
}

// start dials the gateway, reads HELLO, identifies as shard and reads READY
// and the shard's GUILD_CREATEs. It returns READY's d and the last seq.
func start(t testing.TB, s *Server, query string, shard []int) (*tclient, readyD, int64) {
	t.Helper()
	c := dial(t, s.GatewayURL(), query)
	c.hello()
	c.identify(shard)
	p := c.expect(opDispatch, "READY")
	var r readyD
	if err := json.Unmarshal(p.D, &r); err != nil {
		t.Fatalf("READY: %v", err)
	}
	last := p.seq()
	for range r.Guilds {
		g := c.expect(opDispatch, "GUILD_CREATE")
		if g.seq() != last+1 {
			t.Fatalf("GUILD_CREATE seq %d after %d", g.seq(), last)
		}
		last = g.seq()
	}
	return c, r, last
}
