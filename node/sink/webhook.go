package sink

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/discluster/discluster/internal/backoff"
	"github.com/discluster/discluster/shard"
)

// The defaults of WebhookConfig's fields.
const (
	DefaultWebhookPostEvents    = 500
	DefaultWebhookPostBytes     = 1 << 20
	DefaultWebhookInFlight      = 4
	DefaultWebhookBufferBytes   = 32 << 20
	DefaultWebhookTimeout       = 5 * time.Second // the node bounds a Deliver by the same
	DefaultWebhookMinBackoff    = 100 * time.Millisecond
	DefaultWebhookMaxBackoff    = 5 * time.Second
	DefaultWebhookMaxRetryAfter = time.Minute
)

// MinWebhookSecretLen is the shortest secret a webhook sink takes: an HMAC key
// shorter than 128 bits could be guessed.
const MinWebhookSecretLen = 16

const (
	webhookReplyShown           = 256      // bytes of a refused POST's reply kept in its error
	webhookReplyDrained         = 64 << 10 // read past an answer, so that its connection is reused
	webhookFailuresBetweenWarns = 20
	webhookSecretHint           = "give it with --sink-secret-file (or DISCLUSTER_SINK_SECRET)"
	webhookInsecureHTTP         = "the body is the bot's events (messages, members): plain http:// only to a loopback receiver, or with --sink-insecure-http"
)

// WebhookConfig configures a Webhook. A zero field takes its default.
type WebhookConfig struct {
	// URL receives the POSTs: https://, or http:// to a loopback host (or with
	// AllowInsecureHTTP).
	URL string
	// Secret is the HMAC-SHA256 key of the signature header, at least
	// MinWebhookSecretLen bytes. A shard.Token, so that no log or format verb
	// prints it.
	Secret shard.Token
	// AllowInsecureHTTP allows http:// to a host that is not loopback.
	AllowInsecureHTTP bool
	// PostEvents and PostBytes bound one POST's body (a single event larger than
	// PostBytes still goes, alone).
	PostEvents, PostBytes int
	// InFlight bounds the POSTs under way at once; while the receiver fails, one.
	InFlight int
	// BufferBytes bounds the events taken in and not yet accepted; a Deliver that
	// would pass it waits (back-pressure), unless the buffer is empty.
	BufferBytes int
	// Timeout bounds one POST, from sending to the end of the answer's headers.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential wait after a failed
	// POST; MaxRetryAfter caps a receiver's Retry-After.
	MinBackoff, MaxBackoff, MaxRetryAfter time.Duration
	// Client sends the POSTs; nil: one of the sink's own (system roots, proxies
	// from the environment, no redirects followed).
	Client *http.Client
	// Logger logs refusals and failing receivers; nil: slog.Default().
	Logger *slog.Logger

	// now and sleep are the clock; tests move a fake one.
	now   func() time.Time
	sleep func(context.Context, time.Duration) bool
}

// ParseWebhookURL checks the URL of a webhook sink. Its errors never repeat the URL,
// whose path or query may hold a credential.
func ParseWebhookURL(raw string, allowInsecureHTTP bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return nil, errors.New("webhook sink: malformed URL: want https://HOST[:PORT]/PATH")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !allowInsecureHTTP && !isLoopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("webhook sink: http:// to %s: %s", u.Hostname(), webhookInsecureHTTP)
		}
	default:
		return nil, errors.New("webhook sink: want https://HOST[:PORT]/PATH")
	}
	if u.Fragment != "" {
		return nil, errors.New("webhook sink: a URL with a #fragment: the fragment never reaches the receiver")
	}
	return u, nil
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ShownWebhookURL is u as logs and --check may show it: scheme, host and path,
// without a user's password or the query.
func ShownWebhookURL(u *url.URL) string {
	c := *u
	if c.RawQuery != "" {
		c.RawQuery = "…"
	}
	return c.Redacted()
}

func (c *WebhookConfig) setDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.PostEvents, DefaultWebhookPostEvents)
	def(&c.PostBytes, DefaultWebhookPostBytes)
	def(&c.InFlight, DefaultWebhookInFlight)
	def(&c.BufferBytes, DefaultWebhookBufferBytes)
	defDur(&c.Timeout, DefaultWebhookTimeout)
	defDur(&c.MinBackoff, DefaultWebhookMinBackoff)
	defDur(&c.MaxBackoff, DefaultWebhookMaxBackoff)
	defDur(&c.MaxRetryAfter, DefaultWebhookMaxRetryAfter)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.sleep == nil {
		c.sleep = backoff.Sleep
	}
}

// Validate names the first field that is wrong. Zero fields are valid: they take
// their defaults.
func (c WebhookConfig) Validate() error {
	if _, err := ParseWebhookURL(c.URL, c.AllowInsecureHTTP); err != nil {
		return err
	}
	if n := len(c.Secret.Reveal()); n < MinWebhookSecretLen {
		if n == 0 {
			return fmt.Errorf("webhook sink: no secret for the signature: %s", webhookSecretHint)
		}
		return fmt.Errorf("webhook sink: the secret has %d bytes, want at least %d (random: head -c 32 /dev/urandom | base64)", n, MinWebhookSecretLen)
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"PostEvents", int64(c.PostEvents)}, {"PostBytes", int64(c.PostBytes)}, {"InFlight", int64(c.InFlight)},
		{"BufferBytes", int64(c.BufferBytes)}, {"Timeout", int64(c.Timeout)}, {"MinBackoff", int64(c.MinBackoff)},
		{"MaxBackoff", int64(c.MaxBackoff)}, {"MaxRetryAfter", int64(c.MaxRetryAfter)},
	} {
		if f.v < 0 {
			return fmt.Errorf("webhook sink: %s is negative", f.name)
		}
	}
	return nil
}

// Webhook POSTs events to an HTTP receiver, as a JSON array of
//
//	{"node":"n1","shard":3,"session":"…","seq":42,"t":"MESSAGE_CREATE","d":{…}}
//
// (d as Discord sent it), signed with an HMAC of the secret (see
// WebhookSignatureHeader and VerifyWebhook).
//
// The batches that Deliver calls bring while POSTs are under way go out together in
// the next POST (group commit: a POST never waits to fill up), within PostEvents and
// PostBytes, at most InFlight POSTs at once. Each shard's events leave in order: a
// POST takes a shard's events only while no other POST carries some, so a batch
// larger than one POST goes out in order, one POST after the other.
//
// A Deliver returns once the receiver answered 2xx to every POST that carried its
// events, or with an error: a refusal (a 4xx other than 408 and 429, a 3xx), or its
// context's end. Connection errors, timeouts, 5xx, 408 and 429 are retried inside
// the sink until then, after a jittered exponential wait or the receiver's
// Retry-After, which holds every POST back, not only the one that failed. Events
// taken in and not yet accepted are bounded by BufferBytes: a Deliver waits for room
// (back-pressure to the shards), and nothing is ever dropped.
type Webhook struct {
	cfg        WebhookConfig
	url        string
	host       string
	secret     []byte
	client     *http.Client
	ownsClient bool
	idStart    string // random: a delivery id is new after a restart too

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every change that may let a waiter go on
	queue     []*webhookCall
	busy      map[int]int // shard → POSTs under way that carry its events
	buffered  int         // bytes taken in, not yet accepted or given up
	waiting   int         // Delivers waiting for room in the buffer
	inFlight  int
	posts     uint64 // POST bodies built (a retry of the same body is not counted): ids, Stats
	notBefore time.Time
	bo        backoff.Backoff // the receiver's failures in a row
	lastErr   error
}

// NewWebhook starts a webhook sink. It contacts nothing until the first Deliver.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	u, _ := ParseWebhookURL(cfg.URL, cfg.AllowInsecureHTTP)
	client, owns := cfg.Client, cfg.Client == nil
	if owns {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = cfg.InFlight
		tr.ResponseHeaderTimeout = cfg.Timeout
		client = &http.Client{Transport: tr,
			// A 301/302/303 would turn the POST into a GET and lose the events;
			// a redirect is answered as a refusal that names the new place.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	w := &Webhook{cfg: cfg, url: u.String(), host: u.Host, secret: []byte(cfg.Secret.Reveal()), client: client, ownsClient: owns,
		idStart: hex.EncodeToString(rnd[:]), changed: make(chan struct{}), busy: map[int]int{},
		bo: backoff.Backoff{Min: cfg.MinBackoff, Max: cfg.MaxBackoff, Jitter: 0.5}}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.wg.Add(cfg.InFlight)
	for range cfg.InFlight {
		go w.sender()
	}
	return w, nil
}

// Close stops the sink: Delivers under way return an error, POSTs under way are
// abandoned. It waits for its goroutines and may be called more than once.
func (w *Webhook) Close() error {
	w.once.Do(func() {
		w.cancel()
		w.wg.Wait()
		if w.ownsClient {
			w.client.CloseIdleConnections()
		}
	})
	return nil
}

// webhookCall is one Deliver's events, encoded, and how far they went.
type webhookCall struct {
	buf      []byte // each event's JSON object followed by a comma
	ends     []int  // where each event's bytes end in buf
	shards   []int  // the shards of the batch, sorted, each once
	next     int    // events handed to POSTs so far
	accepted int    // events the receiver accepted (≤ next)
	held     int    // bytes still counted in the buffer
	post     *webhookPost
	gaveUp   bool // its Deliver returned early; what it has in a POST is dropped from retries
	lastErr  error
	err      error // the refusal that ended it
	done     chan struct{}
}

func (c *webhookCall) start(i int) int {
	if i == 0 {
		return 0
	}
	return c.ends[i-1]
}

// webhookSeg is a run of one call's events in a POST.
type webhookSeg struct {
	call     *webhookCall
	from, to int
}

type webhookPost struct {
	segs   []webhookSeg
	ctx    context.Context // ends when every call in it gave up, or at Close
	cancel context.CancelFunc
	id     string
}

// ErrWebhookClosed is what Deliver returns once the sink is closed.
var ErrWebhookClosed = errors.New("webhook sink: closed")

// Deliver implements Sink.
func (w *Webhook) Deliver(ctx context.Context, batch []Delivery) error {
	if len(batch) == 0 {
		return nil
	}
	c := &webhookCall{ends: make([]int, len(batch)), done: make(chan struct{})}
	size := 0
	for _, d := range batch {
		size += len(d.Event.Data) + len(d.Node) + len(d.Event.SessionID) + len(d.Event.Type) + 80
	}
	c.buf = make([]byte, 0, size)
	c.shards = make([]int, len(batch))
	for i, d := range batch {
		c.buf = appendWebhookEvent(c.buf, d)
		c.buf = append(c.buf, ',')
		c.ends[i] = len(c.buf)
		c.shards[i] = d.Event.ShardID
	}
	slices.Sort(c.shards)
	c.shards = slices.Compact(c.shards)

	if err := w.admit(ctx, c); err != nil {
		return err
	}
	select {
	case <-c.done:
		return c.result()
	case <-ctx.Done():
		return w.giveUp(c, ctx.Err())
	case <-w.ctx.Done():
		return w.giveUp(c, ErrWebhookClosed)
	}
}

// admit waits for room in the buffer and queues c.
func (w *Webhook) admit(ctx context.Context, c *webhookCall) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	waited := false
	for w.buffered > 0 && w.buffered+len(c.buf) > w.cfg.BufferBytes {
		if !waited {
			waited = true
			w.waiting++
			defer func() { w.waiting-- }()
		}
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		case <-w.ctx.Done():
		}
		w.mu.Lock()
		if w.ctx.Err() != nil {
			return ErrWebhookClosed
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("webhook sink: the buffer is full (%d bytes not yet accepted by the receiver%s): %w",
				w.buffered, w.lastErrText(), err)
		}
	}
	c.held = len(c.buf)
	w.buffered += c.held
	w.queue = append(w.queue, c)
	w.broadcast()
	return nil
}

// result is what Deliver returns for a call that ended.
func (c *webhookCall) result() error {
	switch {
	case c.err == nil:
		return nil
	case c.accepted > 0:
		return &PartialError{Accepted: c.accepted, Err: c.err}
	}
	return c.err
}

// giveUp ends a call whose Deliver stops waiting: what was accepted counts, the rest
// is not sent again (the node retries it), and a POST that carries nothing else is
// abandoned.
func (w *Webhook) giveUp(c *webhookCall, why error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-c.done:
		return c.result()
	default:
	}
	c.gaveUp = true
	w.unqueue(c)
	if p := c.post; p != nil {
		if !slices.ContainsFunc(p.segs, func(s webhookSeg) bool { return !s.call.gaveUp }) {
			p.cancel()
		}
	} else {
		w.release(c, c.held)
	}
	last := c.lastErr
	if last == nil {
		last = w.lastErr
	}
	var err error
	if last != nil && why != ErrWebhookClosed {
		err = fmt.Errorf("%w; gave up waiting: %w", last, why)
	} else {
		err = fmt.Errorf("webhook sink: %d of %d events accepted: %w", c.accepted, len(c.ends), why)
	}
	if c.accepted > 0 {
		return &PartialError{Accepted: c.accepted, Err: err}
	}
	return err
}

func (w *Webhook) lastErrText() string {
	if w.lastErr == nil {
		return ""
	}
	return "; last: " + w.lastErr.Error()
}

// broadcast wakes everyone waiting for a change. Called with mu held.
func (w *Webhook) broadcast() {
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *Webhook) unqueue(c *webhookCall) {
	if i := slices.Index(w.queue, c); i >= 0 {
		w.queue = slices.Delete(w.queue, i, i+1)
	}
}

func (w *Webhook) release(c *webhookCall, n int) {
	c.held -= n
	w.buffered -= n
	w.broadcast()
}

// finish ends a call with err (nil: all accepted). Called with mu held.
func (w *Webhook) finish(c *webhookCall, err error) {
	c.err = err
	w.unqueue(c)
	w.release(c, c.held)
	close(c.done)
}

// sender is one of InFlight goroutines that take queued events into a POST and
// send it until it is accepted, refused, or no longer wanted.
func (w *Webhook) sender() {
	defer w.wg.Done()
	for {
		p := w.take()
		if p == nil {
			return
		}
		w.send(p)
	}
}

// take waits until a POST may start (the receiver's wait is over, a slot is free)
// and events are queued, and takes them into one. Nil once the sink is closed.
func (w *Webhook) take() *webhookPost {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		if w.ctx.Err() != nil {
			return nil
		}
		if d := w.notBefore.Sub(w.cfg.now()); d > 0 {
			w.mu.Unlock()
			w.cfg.sleep(w.ctx, d)
			w.mu.Lock()
			continue
		}
		if p := w.takeLocked(); p != nil {
			return p
		}
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-w.ctx.Done():
		}
		w.mu.Lock()
	}
}

func (w *Webhook) takeLocked() *webhookPost {
	limit := w.cfg.InFlight
	if w.bo.Attempt() > 0 {
		limit = 1 // a failing receiver gets one POST at a time, not a burst per retry
	}
	if w.inFlight >= limit {
		return nil
	}
	var p *webhookPost
	events, bytes := 0, 0
	for _, c := range w.queue {
		if c.post != nil || c.next == len(c.ends) || slices.ContainsFunc(c.shards, func(s int) bool { return w.busy[s] > 0 }) {
			continue
		}
		from := c.next
		to := from
		for to < len(c.ends) && events < w.cfg.PostEvents {
			n := c.ends[to] - c.start(to)
			if events > 0 && bytes+n > w.cfg.PostBytes {
				break
			}
			events, bytes, to = events+1, bytes+n, to+1
		}
		if to == from {
			break // the POST is full
		}
		if p == nil {
			p = &webhookPost{}
		}
		c.next, c.post = to, p
		for _, s := range c.shards {
			w.busy[s]++
		}
		p.segs = append(p.segs, webhookSeg{call: c, from: from, to: to})
	}
	if p == nil {
		return nil
	}
	w.inFlight++
	p.ctx, p.cancel = context.WithCancel(w.ctx)
	return p
}

// send POSTs p until the receiver accepts or refuses it, or nobody waits for it
// any more.
func (w *Webhook) send(p *webhookPost) {
	defer w.done(p)
	var body []byte
	for {
		body = w.body(p, body)
		if body == nil {
			return
		}
		retryAfter, err := w.post(p, body)
		if err == nil {
			w.accepted(p)
			return
		}
		var we *WebhookError
		if errors.As(err, &we) && !we.Retried {
			w.refused(p, err)
			return
		}
		if p.ctx.Err() != nil {
			return
		}
		w.failed(p, err, retryAfter)
		if !w.wait(p.ctx) {
			return
		}
	}
}

// body builds p's body from the events of calls still waiting, dropping the others;
// nil when none is left. The delivery id changes only when the content does.
func (w *Webhook) body(p *webhookPost, prev []byte) []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	kept := p.segs[:0]
	for _, s := range p.segs {
		if s.call.gaveUp {
			w.drop(s, false)
			continue
		}
		kept = append(kept, s)
	}
	changed := len(kept) != len(p.segs) || prev == nil
	clear(p.segs[len(kept):])
	p.segs = kept
	if len(kept) == 0 {
		return nil
	}
	if !changed {
		return prev
	}
	w.posts++
	p.id = w.idStart + "-" + strconv.FormatUint(w.posts, 10)
	n := 1
	for _, s := range kept {
		n += s.call.ends[s.to-1] - s.call.start(s.from)
	}
	body := make([]byte, 0, n)
	body = append(body, '[')
	for _, s := range kept {
		body = append(body, s.call.buf[s.call.start(s.from):s.call.ends[s.to-1]]...)
	}
	body[len(body)-1] = ']' // the last event's comma
	return body
}

// drop takes s out of its POST: its shards are free again; a call that gave up no
// longer holds the buffer; accepted events count, and the others go back to be sent
// in a later POST. Called with mu held.
func (w *Webhook) drop(s webhookSeg, accepted bool) {
	for _, sh := range s.call.shards {
		if w.busy[sh]--; w.busy[sh] == 0 {
			delete(w.busy, sh)
		}
	}
	c := s.call
	c.post = nil
	switch {
	case c.gaveUp:
		w.release(c, c.held)
	case accepted:
		c.accepted = s.to
		w.release(c, c.ends[s.to-1]-c.start(s.from))
	default:
		c.next = s.from
		w.broadcast()
	}
}

// done ends a POST: whatever it still carries goes back (or away, for calls that
// gave up).
func (w *Webhook) done(p *webhookPost) {
	p.cancel()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range p.segs {
		w.drop(s, false)
	}
	p.segs = nil
	w.inFlight--
	w.broadcast()
}

func (w *Webhook) accepted(p *webhookPost) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.bo.Attempt() > 0 {
		w.cfg.Logger.Info("webhook receiver accepting again", "url_host", w.host, "failures", w.bo.Attempt())
	}
	w.bo.Reset()
	w.notBefore, w.lastErr = time.Time{}, nil
	for _, s := range p.segs {
		s.call.lastErr = nil
		w.drop(s, true)
		if c := s.call; !c.gaveUp && c.accepted == len(c.ends) {
			w.finish(c, nil)
		}
	}
	p.segs = nil
}

func (w *Webhook) refused(p *webhookPost, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cfg.Logger.Error("webhook receiver refused a POST; the node retries from its first event", "url_host", w.host,
		"delivery", p.id, "err", err)
	for _, s := range p.segs {
		w.drop(s, false)
		if !s.call.gaveUp {
			w.finish(s.call, err)
		}
	}
	p.segs = nil
}

func (w *Webhook) failed(p *webhookPost, err error, retryAfter time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wait := w.bo.Next()
	if retryAfter > 0 {
		wait = min(retryAfter, w.cfg.MaxRetryAfter)
	}
	if until := w.cfg.now().Add(wait); until.After(w.notBefore) {
		w.notBefore = until
	}
	w.lastErr = err
	for _, s := range p.segs {
		s.call.lastErr = err
	}
	if k := w.bo.Attempt(); k == 1 || k%webhookFailuresBetweenWarns == 0 {
		w.cfg.Logger.Warn("webhook POST failed; retrying, the shards' positions hold", "url_host", w.host,
			"delivery", p.id, "attempt", k, "retry_in", wait, "err", err)
	}
}

// wait waits until POSTs may start again; false if ctx ended first.
func (w *Webhook) wait(ctx context.Context) bool {
	for range 1000 {
		w.mu.Lock()
		d := w.notBefore.Sub(w.cfg.now())
		w.mu.Unlock()
		if d <= 0 {
			return ctx.Err() == nil
		}
		if !w.cfg.sleep(ctx, d) {
			return false
		}
	}
	return ctx.Err() == nil
}

// WebhookError is a POST the receiver answered with other than 2xx.
type WebhookError struct {
	Status     int
	Reply      string // the first bytes of the answer's body
	Retried    bool   // 5xx, 408, 429: the sink retries it; else the receiver refused the events
	RetryAfter time.Duration
	Location   string // where a 3xx points
}

func (e *WebhookError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "webhook receiver answered %d %s", e.Status, http.StatusText(e.Status))
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (Retry-After %s)", e.RetryAfter)
	}
	if e.Location != "" {
		fmt.Fprintf(&b, ", redirecting to %q: point --sink there", e.Location)
	}
	if e.Reply != "" {
		fmt.Fprintf(&b, ": %q", e.Reply)
	}
	return b.String()
}

// post sends body once. The error is a *WebhookError for an answer, else the
// request's failure (retried).
func (w *Webhook) post(p *webhookPost, body []byte) (retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(p.ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("webhook POST to %s: %w", w.host, err)
	}
	ts := strconv.FormatInt(w.cfg.now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "discluster-webhook")
	req.Header.Set(WebhookTimestampHeader, ts)
	req.Header.Set(WebhookSignatureHeader, SignWebhook(w.secret, ts, body))
	req.Header.Set(WebhookDeliveryHeader, p.id)
	resp, err := w.client.Do(req)
	if err != nil {
		// url.Error repeats the URL, whose path or query may hold a credential.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) && p.ctx.Err() == nil {
			err = fmt.Errorf("no answer within %s", w.cfg.Timeout)
		}
		return 0, fmt.Errorf("webhook POST to %s: %w", w.host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		io.Copy(io.Discard, io.LimitReader(resp.Body, webhookReplyDrained)) // so the connection is reused
		return 0, nil
	}
	reply, _ := io.ReadAll(io.LimitReader(resp.Body, webhookReplyShown))
	io.Copy(io.Discard, io.LimitReader(resp.Body, webhookReplyDrained))
	for !utf8.Valid(reply) && len(reply) > 0 {
		reply = reply[:len(reply)-1] // cut inside a character
	}
	e := &WebhookError{Status: resp.StatusCode, Reply: strings.TrimSpace(string(reply))}
	switch s := resp.StatusCode; {
	case s >= 500, s == http.StatusRequestTimeout, s == http.StatusTooManyRequests:
		e.Retried = true
		e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), w.cfg.now())
	case s >= 300 && s < 400:
		if loc, err := resp.Location(); err == nil {
			e.Location = ShownWebhookURL(loc)
		}
	}
	return e.RetryAfter, e
}

// parseRetryAfter reads Retry-After: seconds, or an HTTP date. Zero when absent or
// unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
		if s <= 0 || s > int64(24*time.Hour/time.Second) {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// WebhookStats is what a webhook sink holds now.
type WebhookStats struct {
	BufferedBytes int    // taken in, not yet accepted
	Queued        int    // Delivers waiting for their events to be accepted
	Waiting       int    // Delivers waiting for room in the buffer
	InFlight      int    // POSTs under way
	Posts         uint64 // POST bodies built so far (a retry of the same body counts once)
}

// Stats reports the sink's buffer and POSTs.
func (w *Webhook) Stats() WebhookStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return WebhookStats{BufferedBytes: w.buffered, Queued: len(w.queue), Waiting: w.waiting, InFlight: w.inFlight, Posts: w.posts}
}

// appendWebhookEvent appends d's JSON object to buf. d is the event's data as the
// shard received it, valid JSON already (the shard decoded the frame that held it).
func appendWebhookEvent(buf []byte, d Delivery) []byte {
	buf = append(buf, `{"node":`...)
	buf = appendJSONString(buf, d.Node)
	buf = append(buf, `,"shard":`...)
	buf = strconv.AppendInt(buf, int64(d.Event.ShardID), 10)
	buf = append(buf, `,"session":`...)
	buf = appendJSONString(buf, d.Event.SessionID)
	buf = append(buf, `,"seq":`...)
	buf = strconv.AppendInt(buf, d.Event.Seq, 10)
	buf = append(buf, `,"t":`...)
	buf = appendJSONString(buf, d.Event.Type)
	buf = append(buf, `,"d":`...)
	if len(d.Event.Data) == 0 {
		buf = append(buf, "null"...)
	} else {
		buf = append(buf, d.Event.Data...)
	}
	return append(buf, '}')
}

// appendJSONString appends s as a JSON string: directly when it needs no escaping
// (names, session ids and event names always do), else as encoding/json writes it.
func appendJSONString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' {
			b, _ := json.Marshal(s)
			return append(buf, b...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}
