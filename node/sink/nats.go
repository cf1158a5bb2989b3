package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers of every event the NATS sink publishes: with them a consumer names an
// event exactly, and drops duplicates, without decoding the body.
const (
	HeaderShard   = "Discord-Shard"
	HeaderSession = "Discord-Session"
	HeaderSeq     = "Discord-Seq"
	HeaderEvent   = "Discord-Event"
)

// Defaults of the NATS sink's URL options.
const (
	DefaultNATSSubject    = "discord"
	DefaultNATSStream     = "DISCORD"
	DefaultNATSMaxAge     = 24 * time.Hour
	DefaultNATSDuplicates = 2 * time.Minute // JetStream's own default window
)

// natsAckTimeout drops the sink's wait for an ack JetStream never sends (a server
// that died holding the message): the node has retried that event already, as
// each Deliver is bounded by its context.
const natsAckTimeout = 30 * time.Second

// natsMaxPending bounds the publishes awaiting an ack, across every local
// cluster's Deliver: enough for every cluster's whole batch at once.
const natsMaxPending = 16 << 10

// NATS publishes events to NATS JetStream, one message per dispatch on subject
//
//	<subject>.<shard>.<EVENT_NAME>          (discord.3.MESSAGE_CREATE)
//
// whose body is the dispatch as Discord sent it, {"op":0,"t":…,"s":…,"d":…}, in
// JSON, and whose headers name it: Discord-Shard, Discord-Session, Discord-Seq,
// Discord-Event, and Nats-Msg-Id <session>:<seq>, by which JetStream drops, within
// the stream's duplicate window, the events a failover's RESUME replays. A batch is
// published asynchronously and counts as delivered up to the first event
// JetStream has not acknowledged (stored). The stream (DISCORD over discord.>) is
// created when missing and left alone when it exists, so an operator may manage it.
//
// The connection is made in the background and kept up by nats.go's reconnects: a
// server that is down when the node starts, or later, makes a failing sink, which
// holds the shards' positions, never a node that cannot start.
type NATS struct {
	cfg     natsConfig
	maxMsgs int64
	noRetry jetstream.PublishOpt // a retry would send a reused message again

	ready   chan struct{} // closed once the first connect returned
	nc      *nats.Conn    // set before ready is closed
	js      jetstream.JetStream
	dialErr error

	streamOK atomic.Bool // the events stream was found or made
	pubs     sync.Pool   // *natsBatch
}

// natsConfig is a parsed --sink nats://… URL.
type natsConfig struct {
	servers    string // comma-separated, without credentials
	user, pass string // secrets: never printed
	token      string
	ca         string
	subject    string
	stream     string
	maxAge     time.Duration
	duplicates time.Duration
	replicas   int
}

// natsWant is the NATS sink's URL, for errors.
const natsWant = "want nats://[USER:PASSWORD@|TOKEN@]HOST:PORT[,HOST:PORT…][?subject=discord&stream=DISCORD&max_age=24h&duplicates=2m&replicas=1&ca=FILE] (tls:// for TLS)"

// CheckNATSURL checks a nats:// or tls:// sink URL. Its errors never repeat the
// URL, which may hold a password or a token.
func CheckNATSURL(spec string) error {
	_, err := parseNATS(spec)
	return err
}

// RedactNATSURL is spec with every server's password or token replaced, for logs
// and --check.
func RedactNATSURL(spec string) string {
	servers, query, hasQuery := strings.Cut(spec, "?")
	parts := strings.Split(servers, ",")
	for i, p := range parts {
		scheme, rest, ok := strings.Cut(p, "://")
		if !ok {
			scheme, rest = "", p
		} else {
			scheme += "://"
		}
		at := strings.LastIndex(rest, "@")
		if at < 0 {
			continue
		}
		user, _, hasPass := strings.Cut(rest[:at], ":")
		if hasPass {
			parts[i] = scheme + user + ":xxxxx" + rest[at:]
		} else {
			parts[i] = scheme + "xxxxx" + rest[at:] // a token
		}
	}
	out := strings.Join(parts, ",")
	if hasQuery {
		out += "?" + query
	}
	return out
}

func parseNATS(spec string) (natsConfig, error) {
	cfg := natsConfig{subject: DefaultNATSSubject, stream: DefaultNATSStream, maxAge: DefaultNATSMaxAge,
		duplicates: DefaultNATSDuplicates, replicas: 1}
	bad := func(format string, args ...any) (natsConfig, error) {
		return natsConfig{}, fmt.Errorf("nats sink: "+format+": "+natsWant, args...)
	}
	servers, query, _ := strings.Cut(spec, "?")
	scheme := ""
	var urls []string
	var creds *url.Userinfo
	for i, p := range strings.Split(servers, ",") {
		if i > 0 && !strings.Contains(p, "://") {
			p = scheme + "://" + p // nats.go's shorthand: the first server's scheme
		}
		u, err := url.Parse(p)
		if err != nil { // url's errors quote the URL
			return bad("server %d is not a URL", i+1)
		}
		switch {
		case u.Scheme != "nats" && u.Scheme != "tls":
			return bad("server %d: scheme %q", i+1, u.Scheme)
		case i > 0 && u.Scheme != scheme:
			return bad("server %d: every server takes the first's scheme, %s", i+1, scheme)
		case u.Hostname() == "" || u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
			return bad("server %d: want HOST:PORT", i+1)
		}
		if port := u.Port(); port != "" {
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				return bad("server %d: port %q", i+1, port)
			}
		}
		scheme = u.Scheme
		if u.User != nil {
			if creds != nil && creds.String() != u.User.String() {
				return bad("server %d's credentials differ from an earlier server's (give them once, on the first)", i+1)
			}
			creds = u.User
		}
		urls = append(urls, u.Scheme+"://"+u.Host)
	}
	if creds != nil {
		if pass, ok := creds.Password(); ok {
			cfg.user, cfg.pass = creds.Username(), pass
		} else {
			cfg.token = creds.Username()
		}
	}
	cfg.servers = strings.Join(urls, ",")
	q, err := url.ParseQuery(query)
	if err != nil {
		return bad("malformed query")
	}
	for k, vs := range q {
		v := vs[len(vs)-1]
		switch k {
		case "subject":
			if !validSubject(v) {
				return bad("subject %q: want tokens of letters, digits, _ and -, separated by dots", v)
			}
			cfg.subject = v
		case "stream":
			if v == "" || strings.ContainsAny(v, ".*> \t\r\n/\\") {
				return bad("stream %q: want a name without dots, wildcards, spaces or slashes", v)
			}
			cfg.stream = v
		case "max_age", "duplicates":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return bad("%s %q: want a duration (24h, 2m; max_age 0: no limit)", k, v)
			}
			if k == "max_age" {
				cfg.maxAge = d
			} else {
				cfg.duplicates = d
			}
		case "replicas":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 5 {
				return bad("replicas %q: want 1 to 5", v)
			}
			cfg.replicas = n
		case "ca":
			if v == "" {
				return bad("ca: want a PEM file")
			}
			cfg.ca = v
		default:
			return bad("unknown option %q", k)
		}
	}
	if cfg.duplicates == 0 || cfg.maxAge > 0 && cfg.duplicates > cfg.maxAge {
		return bad("duplicates %v: want more than 0 and at most max_age (%v)", cfg.duplicates, cfg.maxAge)
	}
	return cfg, nil
}

// validSubject reports whether s is a subject prefix of plain tokens.
func validSubject(s string) bool {
	if s == "" {
		return false
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" {
			return false
		}
		for _, c := range []byte(tok) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				return false
			}
		}
	}
	return true
}

// NewNATS starts connecting, in the background, to the JetStream that spec names
// (see natsWant), bounding the streams it creates to maxMsgs messages (0: no bound
// but max_age).
func NewNATS(spec string, maxMsgs int64) (*NATS, error) {
	cfg, err := parseNATS(spec)
	if err != nil {
		return nil, err
	}
	if maxMsgs < 0 {
		return nil, fmt.Errorf("nats sink: max messages %d is negative", maxMsgs)
	}
	s := &NATS{cfg: cfg, maxMsgs: maxMsgs, noRetry: jetstream.WithRetryAttempts(0), ready: make(chan struct{})}
	s.pubs.New = func() any { return newNATSBatch() }
	go func() {
		defer close(s.ready)
		s.nc, s.js, s.dialErr = dialNATS(cfg)
	}()
	return s, nil
}

// dialNATS connects once; past a failure nats.go reconnects in the background for
// as long as the connection is open. It returns within the dial timeout per server.
func dialNATS(cfg natsConfig) (*nats.Conn, jetstream.JetStream, error) {
	opts := []nats.Option{
		nats.Name("discluster"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.Timeout(2 * time.Second),
		// A paused server is found dead within about 15 s, not nats.go's 4 minutes.
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
		// No buffering while disconnected: a publish then fails at once (the node
		// retries it) instead of going out minutes later from a buffer.
		nats.ReconnectBufSize(-1),
	}
	switch {
	case cfg.token != "":
		opts = append(opts, nats.Token(cfg.token))
	case cfg.user != "" || cfg.pass != "":
		opts = append(opts, nats.UserInfo(cfg.user, cfg.pass))
	}
	if cfg.ca != "" {
		opts = append(opts, nats.RootCAs(cfg.ca))
	}
	nc, err := nats.Connect(cfg.servers, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("nats sink: %w", err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(natsMaxPending),
		jetstream.WithPublishAsyncTimeout(natsAckTimeout))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("nats sink: %w", err)
	}
	return nc, js, nil
}

// Close closes the connection, once the first connect returned.
func (s *NATS) Close() error {
	<-s.ready
	if s.nc != nil {
		s.nc.Close()
	}
	return nil
}

// connected returns the JetStream context once the connection is up.
func (s *NATS) connected(ctx context.Context) (jetstream.JetStream, error) {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("nats: still connecting: %w", ctx.Err())
	}
	if s.dialErr != nil {
		return nil, s.dialErr
	}
	if st := s.nc.Status(); st != nats.CONNECTED {
		if err := s.nc.LastError(); err != nil {
			return nil, fmt.Errorf("nats: not connected (%s): %w", st, err)
		}
		return nil, fmt.Errorf("nats: not connected (%s)", st)
	}
	return s.js, nil
}

// streamConfig is the configuration of a stream the sink creates.
func (s *NATS) streamConfig(name, subjects, what string) jetstream.StreamConfig {
	maxMsgs := s.maxMsgs
	if maxMsgs == 0 {
		maxMsgs = -1
	}
	return jetstream.StreamConfig{
		Name: name, Description: what + " (created by discluster)", Subjects: []string{subjects},
		Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld, Storage: jetstream.FileStorage,
		MaxAge: s.cfg.maxAge, MaxMsgs: maxMsgs, Duplicates: s.cfg.duplicates, Replicas: s.cfg.replicas,
	}
}

// ensureStream creates the stream when none of that name exists; one that exists is
// the operator's, and left as it is.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	_, err := js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // another node made it meanwhile
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("nats: stream %s over %s: %w", cfg.Name, cfg.Subjects[0], err)
	}
	return nil
}

// natsBatch is one Deliver's reusable state: the message (JetStream's client
// encodes it as it is published, so one serves the whole batch), its headers, the
// body's buffer and the futures.
type natsBatch struct {
	msg     nats.Msg
	body    []byte
	subject []byte
	futures []jetstream.PubAckFuture
}

func newNATSBatch() *natsBatch {
	b := &natsBatch{}
	b.msg.Header = nats.Header{HeaderShard: {""}, HeaderSession: {""}, HeaderSeq: {""}, HeaderEvent: {""}, jetstream.MsgIDHeader: {""}}
	return b
}

// Deliver implements Sink: every event of the batch is published without waiting,
// then their acks are awaited in order; the events up to the first without an ack
// are accepted (a *PartialError when some are not).
func (s *NATS) Deliver(ctx context.Context, batch []Delivery) error {
	if len(batch) == 0 {
		return nil
	}
	js, err := s.connected(ctx)
	if err != nil {
		return err
	}
	if !s.streamOK.Load() {
		if err := ensureStream(ctx, js, s.streamConfig(s.cfg.stream, s.cfg.subject+".>", "Discord gateway events")); err != nil {
			return err
		}
		s.streamOK.Store(true)
	}
	b := s.pubs.Get().(*natsBatch)
	defer s.pubs.Put(b)
	b.futures = b.futures[:0]
	h := b.msg.Header
	var pubErr error
	for _, d := range batch {
		ev := &d.Event
		b.subject = appendSubjectToken(append(strconv.AppendInt(append(append(b.subject[:0], s.cfg.subject...), '.'), int64(ev.ShardID), 10), '.'), ev.Type)
		b.msg.Subject = string(b.subject)
		b.body = appendDispatch(b.body[:0], ev.Type, ev.Seq, ev.Data)
		b.msg.Data = b.body
		h[HeaderShard][0] = strconv.Itoa(ev.ShardID)
		h[HeaderSession][0] = ev.SessionID
		h[HeaderSeq][0] = strconv.FormatInt(ev.Seq, 10)
		h[HeaderEvent][0] = ev.Type
		h[jetstream.MsgIDHeader][0] = ev.SessionID + ":" + h[HeaderSeq][0]
		f, err := js.PublishMsgAsync(&b.msg, s.noRetry)
		if errors.Is(err, nats.ErrMaxPayload) {
			err = fmt.Errorf("%w: %d bytes, the server's max_payload is %d (raise it, up to 64 MB, or leave %s out with --events)",
				err, len(b.body), s.nc.MaxPayload(), ev.Type)
		}
		if err != nil {
			pubErr = fmt.Errorf("nats publish %s: %w", b.msg.Subject, err)
			break
		}
		b.futures = append(b.futures, f)
	}
	b.msg.Data = nil
	for i, f := range b.futures {
		var err error
		select {
		case <-f.Ok():
			continue
		case err = <-f.Err():
			if errors.Is(err, jetstream.ErrNoStreamResponse) {
				s.streamOK.Store(false) // deleted? look again next time
				err = fmt.Errorf("%w (no stream takes %s.>: is stream %s there, over it?)", err, s.cfg.subject, s.cfg.stream)
			}
		case <-ctx.Done():
			err = fmt.Errorf("waiting for JetStream's ack: %w", ctx.Err())
		}
		ev := &batch[i].Event
		err = fmt.Errorf("nats: shard %d seq %d (%s): %w", ev.ShardID, ev.Seq, ev.Type, err)
		if i == 0 {
			return err
		}
		return &PartialError{Accepted: i, Err: err}
	}
	if pubErr != nil {
		if len(b.futures) == 0 {
			return pubErr
		}
		return &PartialError{Accepted: len(b.futures), Err: pubErr}
	}
	return nil
}

// appendDispatch appends the gateway dispatch {"op":0,"t":typ,"s":seq,"d":d}.
func appendDispatch(b []byte, typ string, seq int64, d json.RawMessage) []byte {
	b = append(b, `{"op":0,"t":`...)
	b = appendQuotedName(b, typ)
	b = append(b, `,"s":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"d":`...)
	if len(d) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, d...)
	}
	return append(b, '}')
}

// appendQuotedName appends s quoted; event names need no escaping, so only an odd
// one costs an encoding.
func appendQuotedName(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	return append(append(append(b, '"'), s...), '"')
}

// appendSubjectToken appends typ as one subject token: a character that would end
// the token or the subject (a dot, a wildcard, white space) becomes _, and an empty
// type _.
func appendSubjectToken(b []byte, typ string) []byte {
	if typ == "" {
		return append(b, '_')
	}
	for i := 0; i < len(typ); i++ {
		c := typ[i]
		if c <= ' ' || c == '.' || c == '*' || c == '>' || c == 0x7f {
			c = '_'
		}
		b = append(b, c)
	}
	return b
}
