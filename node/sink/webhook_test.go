package sink_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/discluster/discluster/node/sink"
	"github.com/discluster/discluster/shard"
)

const hookSecret = "webhook-secret-3f9a1c7e5b2d-NEVER-PRINTED"

// hookEvent is one element of a POST's body.
type hookEvent struct {
	Node    string          `json:"node"`
	Shard   int             `json:"shard"`
	Session string          `json:"session"`
	Seq     int64           `json:"seq"`
	T       string          `json:"t"`
	D       json.RawMessage `json:"d"`
}

// receiver is an httptest webhook receiver: it verifies every POST's signature,
// answers as told, and records the events of the POSTs it answered 2xx.
type receiver struct {
	t      testing.TB
	srv    *httptest.Server
	now    func() time.Time
	answer func(try int) (status int, header http.Header, reply string) // nil: 204

	mu       sync.Mutex
	tries    int           // POSTs received, answered or not
	ids      []string      // each try's delivery id
	accepted [][]hookEvent // the events of each POST answered 2xx, in answer order
	hold     chan struct{} // while set, POSTs wait for it to close
}

func newReceiver(t testing.TB) *receiver {
	rc := &receiver{t: t, now: time.Now}
	rc.srv = httptest.NewUnstartedServer(rc)
	t.Cleanup(rc.close)
	return rc
}

func (rc *receiver) start() *receiver {
	rc.srv.Start()
	return rc
}

// close lets held POSTs go and stops the server.
func (rc *receiver) close() {
	rc.mu.Lock()
	if rc.hold != nil {
		close(rc.hold)
		rc.hold = nil
	}
	rc.mu.Unlock()
	rc.srv.Close()
}

// holdPOSTs has the POSTs from now on wait until the returned release.
func (rc *receiver) holdPOSTs() (release func()) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	ch := make(chan struct{})
	rc.hold = ch
	return func() {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		if rc.hold == ch {
			close(ch)
			rc.hold = nil
		}
	}
}

func (rc *receiver) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	if err := sink.VerifyWebhook([]byte(hookSecret), r.Header, body, rc.now(), 0); err != nil {
		rc.t.Errorf("POST %s: %v", r.Header.Get(sink.WebhookDeliveryHeader), err)
		http.Error(rw, err.Error(), http.StatusUnauthorized)
		return
	}
	if ct := r.Header.Get("Content-Type"); r.Method != http.MethodPost || ct != "application/json" {
		rc.t.Errorf("%s with Content-Type %q", r.Method, ct)
	}
	rc.mu.Lock()
	try := rc.tries
	rc.tries++
	rc.ids = append(rc.ids, r.Header.Get(sink.WebhookDeliveryHeader))
	hold := rc.hold
	rc.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
	}
	status, header, reply := http.StatusNoContent, http.Header(nil), ""
	if rc.answer != nil {
		status, header, reply = rc.answer(try)
	}
	if status/100 == 2 {
		var evs []hookEvent
		if err := json.Unmarshal(body, &evs); err != nil {
			rc.t.Errorf("POST body: %v: %.200s", err, body)
		}
		rc.mu.Lock()
		rc.accepted = append(rc.accepted, evs)
		rc.mu.Unlock()
	}
	for k, v := range header {
		rw.Header()[k] = v
	}
	rw.WriteHeader(status)
	io.WriteString(rw, reply)
}

func (rc *receiver) posts() [][]hookEvent {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([][]hookEvent(nil), rc.accepted...)
}

func (rc *receiver) tried() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.tries
}

// newWebhook is a sink to rc with cfg's settings, closed when the test ends.
func newWebhook(t testing.TB, rc *receiver, cfg sink.WebhookConfig) *sink.Webhook {
	t.Helper()
	cfg.URL, cfg.Secret = rc.srv.URL+"/discord/events", hookSecret
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	w, err := sink.NewWebhook(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// events is seqs from..to of one shard's session, MESSAGE_CREATEs whose d names its
// shard and seq.
func events(shardID int, from, to int64) []sink.Delivery {
	var out []sink.Delivery
	for s := from; s <= to; s++ {
		d := fmt.Sprintf(`{"content":"shard %d seq %d","nested":{"a":[1,2.5,"x\"y"]}}`, shardID, s)
		out = append(out, delivery(shardID, "session-"+strconv.Itoa(shardID), s, "MESSAGE_CREATE", json.RawMessage(d)))
	}
	return out
}

// waitUntil polls cond every few milliseconds until it holds, failing after d.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v, still not %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// seqsByShard is each shard's seqs in the order the receiver accepted them.
func seqsByShard(posts [][]hookEvent) map[int][]int64 {
	out := map[int][]int64{}
	for _, p := range posts {
		for _, e := range p {
			out[e.Shard] = append(out[e.Shard], e.Seq)
		}
	}
	return out
}

// A POST is a JSON array of the events with node, shard, session, seq, t and d as
// the shard received it, signed so that VerifyWebhook accepts it; a changed body,
// another secret, an old timestamp or a missing header do not verify.
func TestWebhookBodyAndSignature(t *testing.T) {
	rc := newReceiver(t)
	var body []byte
	var header http.Header
	rc.srv.Config.Handler = http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ = io.ReadAll(r.Body)
		header = r.Header.Clone()
		rw.WriteHeader(http.StatusOK)
	})
	rc.start()
	w := newWebhook(t, rc, sink.WebhookConfig{})
	d := messageCreate(t)
	batch := []sink.Delivery{
		delivery(3, "sess-3", 42, "MESSAGE_CREATE", d),
		{Node: `n"1`, Event: shard.Event{ShardID: 4, SessionID: "sess-4", Seq: 7, Type: "TYPING_START"}},
	}
	if err := w.Deliver(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	var got []hookEvent
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%v: %.300s", err, body)
	}
	want := []hookEvent{
		{Node: "n1", Shard: 3, Session: "sess-3", Seq: 42, T: "MESSAGE_CREATE", D: d},
		{Node: `n"1`, Shard: 4, Session: "sess-4", Seq: 7, T: "TYPING_START", D: json.RawMessage("null")},
	}
	if len(got) != 2 || got[0].Node != want[0].Node || got[0].Shard != 3 || got[0].Session != "sess-3" || got[0].Seq != 42 ||
		got[0].T != "MESSAGE_CREATE" || !bytes.Equal(got[0].D, bytes.TrimSpace(d)) || got[1].Node != want[1].Node ||
		got[1].Shard != 4 || got[1].T != "TYPING_START" || string(got[1].D) != "null" {
		t.Fatalf("body:\n%.300s\nwant d as sent, and %+v", body, want[1])
	}
	if header.Get(sink.WebhookDeliveryHeader) == "" || header.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", header)
	}
	now := time.Now()
	if err := sink.VerifyWebhook([]byte(hookSecret), header, body, now, 0); err != nil {
		t.Fatalf("the signature does not verify: %v", err)
	}
	ts, _ := strconv.ParseInt(header.Get(sink.WebhookTimestampHeader), 10, 64)
	sent := time.Unix(ts, 0)
	tampered := bytes.Replace(body, []byte(`"seq":42`), []byte(`"seq":43`), 1)
	noSig := header.Clone()
	noSig.Del(sink.WebhookSignatureHeader)
	for _, c := range []struct {
		name   string
		secret string
		h      http.Header
		body   []byte
		now    time.Time
	}{
		{"a changed body", hookSecret, header, tampered, now},
		{"another secret", hookSecret + "x", header, body, now},
		{"six minutes later", hookSecret, header, body, sent.Add(6 * time.Minute)},
		{"six minutes earlier", hookSecret, header, body, sent.Add(-6 * time.Minute)},
		{"no signature", hookSecret, noSig, body, now},
		{"no headers", hookSecret, http.Header{}, body, now},
	} {
		if err := sink.VerifyWebhook([]byte(c.secret), c.h, c.body, c.now, 0); !errors.Is(err, sink.ErrWebhookSignature) {
			t.Errorf("%s: VerifyWebhook = %v, want ErrWebhookSignature", c.name, err)
		}
	}
	if err := sink.VerifyWebhook([]byte(hookSecret), header, body, sent.Add(4*time.Minute), 0); err != nil {
		t.Errorf("four minutes later: %v", err)
	}
}

// Batches that arrive while a POST is under way go out together in the next one.
func TestWebhookMergesConcurrentBatches(t *testing.T) {
	rc := newReceiver(t).start()
	w := newWebhook(t, rc, sink.WebhookConfig{InFlight: 1})
	release := rc.holdPOSTs()
	errs := make(chan error, 9)
	go func() { errs <- w.Deliver(context.Background(), events(0, 1, 3)) }()
	waitUntil(t, 10*time.Second, "the first POST at the receiver", func() bool { return rc.tried() == 1 })
	for id := 1; id <= 8; id++ {
		go func() { errs <- w.Deliver(context.Background(), events(id, 1, 3)) }()
	}
	waitUntil(t, 10*time.Second, "eight more batches waiting", func() bool { return w.Stats().Queued == 9 })
	release()
	for range 9 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	posts := rc.posts()
	if len(posts) != 2 || len(posts[0]) != 3 || len(posts[1]) != 24 {
		t.Fatalf("POSTs of %v events, want 3 then the other eight batches' 24 in one", lens(posts))
	}
	for id, seqs := range seqsByShard(posts) {
		if fmt.Sprint(seqs) != "[1 2 3]" {
			t.Errorf("shard %d: seqs %v", id, seqs)
		}
	}
}

func lens(posts [][]hookEvent) []int {
	out := make([]int, len(posts))
	for i, p := range posts {
		out[i] = len(p)
	}
	return out
}

// deliverAll delivers seqs 1..n of one shard in batches of random sizes, each batch
// from the first event not accepted, as the node does; every Deliver bounded by
// attempt. It counts the Delivers that failed in failures.
func deliverAll(t testing.TB, w sink.Sink, shardID int, n int64, attempt time.Duration, failures *atomic.Int64) {
	next := int64(1)
	for try := 0; next <= n; try++ {
		if try > 100_000 {
			t.Errorf("shard %d: still at seq %d after %d attempts", shardID, next, try)
			return
		}
		batch := events(shardID, next, min(n, next+int64(rand.IntN(12))))
		ctx, cancel := context.WithTimeout(context.Background(), attempt)
		err := w.Deliver(ctx, batch)
		cancel()
		next += int64(sink.Accepted(err, len(batch)))
		if err != nil {
			failures.Add(1)
		}
	}
}

// checkComplete fails unless each of shards' seqs 1..n reached the receiver, in
// order; with noDups, each once.
func checkComplete(t testing.TB, posts [][]hookEvent, shards int, n int64, noDups bool) {
	t.Helper()
	by := seqsByShard(posts)
	for id := range shards {
		next := int64(1) // the next seq not seen yet
		for _, s := range by[id] {
			switch {
			case s == next:
				next++
			case s > next:
				t.Fatalf("shard %d: seq %d before %d: %v", id, s, next, by[id])
			case noDups:
				t.Fatalf("shard %d: seq %d twice", id, s)
			}
		}
		if next != n+1 {
			t.Fatalf("shard %d: seqs up to %d of %d arrived", id, next-1, n)
		}
	}
}

// Concurrent Delivers, batches larger than a POST, several POSTs under way: every
// shard's events reach the receiver in order, each once.
func TestWebhookKeepsEachShardInOrder(t *testing.T) {
	rc := newReceiver(t).start()
	w := newWebhook(t, rc, sink.WebhookConfig{PostEvents: 5, InFlight: 4})
	const shards, n = 8, 300
	var wg sync.WaitGroup
	var failures atomic.Int64
	for id := range shards {
		wg.Go(func() { deliverAll(t, w, id, n, 10*time.Second, &failures) })
	}
	wg.Wait()
	if f := failures.Load(); f > 0 {
		t.Errorf("%d Delivers failed", f)
	}
	checkComplete(t, rc.posts(), shards, n, true)
	for i, p := range rc.posts() {
		if len(p) > 5 {
			t.Fatalf("POST %d holds %d events, PostEvents is 5", i, len(p))
		}
	}
}

// testClock is a time that moves only when the sink sleeps, by what it asked.
type testClock struct {
	mu    sync.Mutex
	now   time.Time
	slept []time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Sleep(ctx context.Context, d time.Duration) bool {
	if ctx.Err() != nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.slept = append(c.slept, d)
	c.now = c.now.Add(d)
	return true
}

func (c *testClock) sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.slept...)
}

// 500, 408, 503 and 429 are retried inside one Deliver, after a jittered
// exponential wait or the receiver's Retry-After, with the same delivery id.
func TestWebhookRetries5xxAnd429WithRetryAfter(t *testing.T) {
	clk := &testClock{now: time.Unix(1_700_000_000, 0)}
	rc := newReceiver(t)
	rc.now = clk.Now
	rc.answer = func(try int) (int, http.Header, string) {
		switch try {
		case 0:
			return http.StatusInternalServerError, nil, "oops"
		case 1:
			return http.StatusRequestTimeout, nil, ""
		case 2:
			return http.StatusServiceUnavailable, http.Header{"Retry-After": {"2"}}, "maintenance"
		case 3:
			return http.StatusTooManyRequests, http.Header{"Retry-After": {"7"}}, "slow down"
		}
		return http.StatusOK, nil, ""
	}
	rc.start()
	cfg := sink.WebhookConfig{InFlight: 1, MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	sink.SetWebhookClock(&cfg, clk.Now, clk.Sleep)
	w := newWebhook(t, rc, cfg)
	if err := w.Deliver(context.Background(), events(1, 1, 4)); err != nil {
		t.Fatal(err)
	}
	s := clk.sleeps()
	if len(s) != 4 || s[0] <= 50*time.Millisecond || s[0] > 100*time.Millisecond || s[1] <= 100*time.Millisecond ||
		s[1] > 200*time.Millisecond || s[2] != 2*time.Second || s[3] != 7*time.Second {
		t.Errorf("waits %v: want (50,100] ms, (100,200] ms (jittered backoff), then 2s and 7s (Retry-After)", s)
	}
	rc.mu.Lock()
	ids := rc.ids
	rc.mu.Unlock()
	if len(ids) != 5 || ids[0] == "" || ids[1] != ids[0] || ids[4] != ids[0] {
		t.Errorf("delivery ids %v: want one id, the same on every retry", ids)
	}
	if p := rc.posts(); len(p) != 1 || len(p[0]) != 4 {
		t.Errorf("accepted POSTs %v", lens(p))
	}
}

// flakyListener closes every connection it accepts while down: a receiver that is
// not there.
type flakyListener struct {
	net.Listener
	down    atomic.Bool
	refused atomic.Int64
}

func (l *flakyListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || !l.down.Load() {
			return c, err
		}
		l.refused.Add(1)
		c.Close()
	}
}

// A receiver that is down, then up: the Delivers fail meanwhile (the node's
// positions hold) and afterwards every seq of every shard is there, in order.
func TestWebhookReceiverDownThenUpLosesNothing(t *testing.T) {
	rc := newReceiver(t)
	fl := &flakyListener{Listener: rc.srv.Listener}
	fl.down.Store(true)
	rc.srv.Listener = fl
	rc.start()
	w := newWebhook(t, rc, sink.WebhookConfig{MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	const shards, n = 4, 200
	var wg sync.WaitGroup
	var failures atomic.Int64
	for id := range shards {
		wg.Go(func() { deliverAll(t, w, id, n, 100*time.Millisecond, &failures) })
	}
	waitUntil(t, 30*time.Second, "connections refused and Delivers failing", func() bool {
		return fl.refused.Load() >= 20 && failures.Load() >= 8
	})
	fl.down.Store(false)
	wg.Wait()
	checkComplete(t, rc.posts(), shards, n, false)
	t.Logf("%d connections refused, %d Delivers failed while down", fl.refused.Load(), failures.Load())
}

// A 4xx other than 408 and 429 is the receiver refusing the events: Deliver returns
// it at once (a PartialError when earlier POSTs of the batch were accepted), and the
// log shows the status and the reply, never the secret.
func TestWebhookRefusalIsAnError(t *testing.T) {
	rc := newReceiver(t)
	rc.answer = func(try int) (int, http.Header, string) {
		if try < 2 {
			return http.StatusOK, nil, ""
		}
		if try == 3 {
			return http.StatusPermanentRedirect, http.Header{"Location": {"https://elsewhere.example/hook?key=x"}}, ""
		}
		return http.StatusUnprocessableEntity, nil, `{"error":"unknown event type"}`
	}
	rc.start()
	var logs bytes.Buffer
	w := newWebhook(t, rc, sink.WebhookConfig{PostEvents: 2, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	err := w.Deliver(context.Background(), events(1, 1, 5))
	var pe *sink.PartialError
	var we *sink.WebhookError
	if !errors.As(err, &pe) || pe.Accepted != 4 || !errors.As(err, &we) || we.Status != 422 || we.Retried {
		t.Fatalf("Deliver = %v, want a PartialError of 4 accepted around a 422", err)
	}
	if !strings.Contains(err.Error(), "unknown event type") {
		t.Errorf("the error lacks the reply: %v", err)
	}
	err = w.Deliver(context.Background(), events(1, 5, 5))
	if !errors.As(err, &we) || we.Status != 308 || !strings.Contains(err.Error(), "https://elsewhere.example/hook?…") {
		t.Fatalf("after a redirect: %v", err)
	}
	if rc.tried() != 4 {
		t.Errorf("%d POSTs, want 4: a refusal is not retried", rc.tried())
	}
	out := logs.String()
	for _, want := range []string{"422", "unknown event type", "308"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, hookSecret) || strings.Contains(err.Error(), hookSecret) {
		t.Errorf("the secret was printed:\n%s", out)
	}
}

// With the buffer full, a Deliver waits for room; one whose context ends meanwhile
// returns, and its events never reach the receiver.
func TestWebhookBufferAppliesBackPressure(t *testing.T) {
	rc := newReceiver(t).start()
	first := events(1, 1, 10)
	size := 0
	for _, d := range first {
		size += len(d.Event.Data) + 100
	}
	w := newWebhook(t, rc, sink.WebhookConfig{BufferBytes: size * 3 / 2})
	release := rc.holdPOSTs()
	errs := make(chan error, 2)
	go func() { errs <- w.Deliver(context.Background(), first) }()
	waitUntil(t, 10*time.Second, "the first batch at the receiver", func() bool { return rc.tried() == 1 })
	go func() { errs <- w.Deliver(context.Background(), events(2, 1, 10)) }()
	waitUntil(t, 10*time.Second, "the second batch waiting for room", func() bool { return w.Stats().Waiting == 1 })
	if st := w.Stats(); st.BufferedBytes > size*3/2 || st.Queued != 1 {
		t.Errorf("stats %+v with a buffer of %d bytes", st, size*3/2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := w.Deliver(ctx, events(3, 1, 10))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "buffer is full") || sink.Accepted(err, 10) != 0 {
		t.Fatalf("a third Deliver with the buffer full: %v", err)
	}
	release()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	by := seqsByShard(rc.posts())
	if len(by[1]) != 10 || len(by[2]) != 10 || len(by[3]) != 0 {
		t.Errorf("events by shard at the receiver: %v", by)
	}
	if st := w.Stats(); st.BufferedBytes != 0 || st.Queued != 0 || st.Waiting != 0 {
		t.Errorf("stats after: %+v", st)
	}
}

// A Deliver returns when its context ends, whether the receiver hangs or asked to
// wait a minute; a POST nobody waits for is abandoned, and Close returns.
func TestWebhookDeliverReturnsOnCancel(t *testing.T) {
	t.Run("hanging receiver", func(t *testing.T) {
		rc := newReceiver(t).start()
		rc.holdPOSTs() // never released: the receiver hangs until the test ends
		w := newWebhook(t, rc, sink.WebhookConfig{Timeout: time.Minute})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := w.Deliver(ctx, events(1, 1, 3))
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
			t.Fatalf("Deliver = %v after %v", err, time.Since(start))
		}
		waitUntil(t, 5*time.Second, "the abandoned POST ended", func() bool { return w.Stats().InFlight == 0 })
		closed := make(chan struct{})
		go func() { w.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatal("Close still waits after 5s")
		}
		if err := w.Deliver(context.Background(), events(1, 1, 1)); !errors.Is(err, sink.ErrWebhookClosed) {
			t.Errorf("Deliver after Close = %v", err)
		}
	})
	t.Run("Retry-After a minute", func(t *testing.T) {
		rc := newReceiver(t)
		rc.answer = func(int) (int, http.Header, string) {
			return http.StatusTooManyRequests, http.Header{"Retry-After": {"60"}}, ""
		}
		rc.start()
		w := newWebhook(t, rc, sink.WebhookConfig{})
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := w.Deliver(ctx, events(1, 1, 3))
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "429") || time.Since(start) > 5*time.Second {
			t.Fatalf("Deliver = %v after %v, want the 429 and the deadline", err, time.Since(start))
		}
		if rc.tried() != 1 {
			t.Errorf("%d POSTs within the Retry-After", rc.tried())
		}
	})
	t.Run("Close", func(t *testing.T) {
		rc := newReceiver(t).start()
		rc.holdPOSTs()
		w := newWebhook(t, rc, sink.WebhookConfig{})
		errs := make(chan error, 1)
		go func() { errs <- w.Deliver(context.Background(), events(1, 1, 3)) }()
		waitUntil(t, 10*time.Second, "the POST at the receiver", func() bool { return rc.tried() == 1 })
		w.Close()
		select {
		case err := <-errs:
			if !errors.Is(err, sink.ErrWebhookClosed) {
				t.Errorf("Deliver = %v, want ErrWebhookClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Deliver still waits 5s after Close")
		}
	})
}

// What the URL and the secret may be, and that neither an error nor a printed
// config shows the secret or the URL's query.
func TestWebhookConfigRules(t *testing.T) {
	for _, c := range []struct {
		url     string
		secret  string
		allow   bool
		wantErr string
	}{
		{"https://hooks.example.com/discord", hookSecret, false, ""},
		{"http://127.0.0.1:8080/discord", hookSecret, false, ""},
		{"http://[::1]:8080/discord", hookSecret, false, ""},
		{"http://localhost/discord", hookSecret, false, ""},
		{"http://10.0.0.9/discord?key=QUERYSECRET", hookSecret, false, "--sink-insecure-http"},
		{"http://10.0.0.9/discord", hookSecret, true, ""},
		{"ftp://10.0.0.9/discord", hookSecret, false, "want https://"},
		{"https:///nohost?key=QUERYSECRET", hookSecret, false, "malformed"},
		{"https://h.example/x#frag", hookSecret, false, "fragment"},
		{"https://hooks.example.com/discord", "", false, "--sink-secret-file"},
		{"https://hooks.example.com/discord", "short", false, "at least 16"},
	} {
		cfg := sink.WebhookConfig{URL: c.url, Secret: shard.Token(c.secret), AllowInsecureHTTP: c.allow}
		err := cfg.Validate()
		if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
			t.Errorf("%s (secret %d bytes, allow %v): %v, want %q", c.url, len(c.secret), c.allow, err, c.wantErr)
		}
		if err != nil && (strings.Contains(err.Error(), "QUERYSECRET") || strings.Contains(err.Error(), "short")) {
			t.Errorf("%s: the error shows a secret: %v", c.url, err)
		}
		if s := fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg); c.secret != "" && strings.Contains(s, c.secret) {
			t.Errorf("printing the config shows the secret: %s", s)
		}
	}
	if _, err := sink.NewWebhook(sink.WebhookConfig{URL: "https://h.example", Secret: hookSecret, InFlight: -1}); err == nil ||
		!strings.Contains(err.Error(), "InFlight") {
		t.Errorf("a negative InFlight: %v", err)
	}
}

// receiverEnv makes the test binary the benchmark's receiver: a process of its
// own, so that the benchmark's CPU figure is the sink's alone.
const receiverEnv = "DISCLUSTER_WEBHOOK_BENCH_RECEIVER"

func TestMain(m *testing.M) {
	if os.Getenv(receiverEnv) != "" {
		benchReceiver()
		return
	}
	os.Exit(m.Run())
}

// benchReceiver serves POSTs on loopback, verifying each signature, until its
// standard input closes; it prints its address first.
func benchReceiver() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(l.Addr())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	http.Serve(l, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := sink.VerifyWebhook([]byte(hookSecret), r.Header, body, time.Now(), 0); err != nil {
			http.Error(rw, err.Error(), http.StatusUnauthorized)
			return
		}
		rw.WriteHeader(http.StatusNoContent)
	}))
}

// BenchmarkWebhookSink sends the fake's recorded 1.8 KB MESSAGE_CREATE through the
// sink to a receiver in another process on loopback, from 8 goroutines at once (a
// node's local clusters), and reports events/s and the sink's CPU per million events.
func BenchmarkWebhookSink(b *testing.B) {
	for _, size := range []int{1, 32, 256} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), receiverEnv+"=1")
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { stdin.Close(); cmd.Wait() })
			addr, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil {
				b.Fatal(err)
			}
			w, err := sink.NewWebhook(sink.WebhookConfig{URL: "http://" + strings.TrimSpace(addr) + "/", Secret: hookSecret,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			d := messageCreate(b)
			var next atomic.Int64
			var ru0, ru1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			b.SetParallelism(4) // 8 goroutines on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				id := int(next.Add(1))
				batch := make([]sink.Delivery, size)
				seq := int64(0)
				for pb.Next() {
					for i := range batch {
						seq++
						batch[i] = delivery(id, "bench-session", seq, "MESSAGE_CREATE", d)
					}
					if err := w.Deliver(context.Background(), batch); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
			events := float64(b.N * size)
			b.ReportMetric(events/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(cpu.Seconds()/events*1e6, "cpu-s/Mevents")
			b.ReportMetric(events/float64(w.Stats().Posts), "events/POST")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkWebhookGzip is the measurement behind sending bodies uncompressed: what
// gzip (klauspost's, at its fastest level) would cost per million events and save,
// on one event alone and on a body of 256 (the same recorded MESSAGE_CREATE, so
// the best case: real bodies of different events lie between the two).
func BenchmarkWebhookGzip(b *testing.B) {
	d := messageCreate(b)
	for _, n := range []int{1, 256} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			body := []byte{'['}
			for i := range n {
				if i > 0 {
					body = append(body, ',')
				}
				body = fmt.Appendf(body, `{"node":"n1","shard":%d,"session":"bench-session","seq":%d,"t":"MESSAGE_CREATE","d":%s}`,
					i%16, i+1, bytes.TrimSpace(d))
			}
			body = append(body, ']')
			var out bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&out, gzip.BestSpeed)
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				out.Reset()
				zw.Reset(&out)
				zw.Write(body)
				zw.Close()
			}
			b.ReportMetric(float64(len(body))/float64(out.Len()), "ratio")
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N*n)*1e6, "cpu-s/Mevents")
			b.ReportMetric(0, "ns/op")
		})
	}
}
