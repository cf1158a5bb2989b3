package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Shard is one Discord gateway session. Run keeps it connected; Stop hands the
// session back as a ResumeState that any other Shard, on any node, can continue.
type Shard struct {
	cfg Config
	log *slog.Logger
	ws  *http.Client // websocket dials; records the TCP conn so a close can be forced

	mu          sync.Mutex
	state       State
	resume      ResumeState
	lastErr     error
	latency     time.Duration
	lastEvent   time.Time
	counters    Counters
	bytes       byteCounts // read by Info, added to by the read loop without s.mu
	established uint64     // READY or RESUMED seen, for the supervisor's backoff reset
	gatewayURL  string
	resumeDead  bool // the resume URL refused a dial: fall back to the gateway URL
	conn        *connection
	running     bool
	stopping    bool
	cancelRun   context.CancelFunc
	done        chan struct{} // closed when the current Run returns
}

// FatalError is returned by Run when the gateway closed with a code that no reconnect
// can fix (4004, 4010-4014). errors.Is(err, ErrFatal) is true for it.
type FatalError struct {
	ShardID int
	Code    int
	Cause   string
}

// ErrFatal matches every FatalError.
var ErrFatal = errors.New("fatal gateway close")

func (e *FatalError) Error() string {
	return fmt.Sprintf("shard %d: gateway closed with %d: %s; not retrying", e.ShardID, e.Code, e.Cause)
}

func (e *FatalError) Is(target error) bool { return target == ErrFatal }

// New validates cfg and returns an idle shard.
func New(cfg Config) (*Shard, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Shard{
		cfg:        cfg,
		log:        cfg.Logger.With("shard", cfg.ShardID),
		resume:     cfg.Resume,
		gatewayURL: cfg.GatewayURL,
	}
	s.ws = &http.Client{Transport: &http.Transport{
		Proxy:       http.ProxyFromEnvironment,
		DialContext: dialRecording,
	}}
	s.observe(LifecycleCreated, "", nil)
	return s, nil
}

// ID returns the shard id.
func (s *Shard) ID() int { return s.cfg.ShardID }

// ResumeState returns the session as it stands: the sequence number is the last one
// the Dispatcher accepted.
func (s *Shard) ResumeState() ResumeState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resume
}

// Info returns a snapshot for status output.
func (s *Shard) Info() Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	info := Info{
		ShardID:   s.cfg.ShardID,
		State:     s.state,
		SessionID: s.resume.SessionID,
		Seq:       s.resume.Seq,
		Latency:   s.latency,
		LastEvent: s.lastEvent,
		Counters:  s.counters,
	}
	info.Counters.WireBytes, info.Counters.PayloadBytes = s.bytes.wire.Load(), s.bytes.payload.Load()
	if s.lastErr != nil {
		info.Err = s.lastErr.Error()
	}
	return info
}

// Run connects and keeps the session alive: it reconnects at once, resuming or
// re-identifying as the protocol says, as long as connections get somewhere. It
// returns nil after Stop, ctx.Err() when ctx ends, a *FatalError for a fatal close
// code, and any other error when a connection failed before it could establish a
// session (dial refused, no HELLO, closed at once); calling Run again then continues
// the session, so a supervisor retries with backoff.
func (s *Shard) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	switch {
	case s.running:
		s.mu.Unlock()
		return errors.New("shard: Run is already running")
	case s.stopping:
		s.mu.Unlock()
		return ErrStopped
	}
	s.running, s.cancelRun, s.done = true, cancel, make(chan struct{})
	done := s.done
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running, s.cancelRun = false, nil
		close(done)
		s.mu.Unlock()
	}()

	for {
		if s.isStopping() {
			return s.finishStopped()
		}
		o := s.runConn(ctx)
		switch {
		case o.stop || s.isStopping():
			return s.finishStopped()
		case ctx.Err() != nil:
			s.setState(StateStopped, nil)
			return ctx.Err()
		case o.action == actionFatal:
			err := &FatalError{ShardID: s.cfg.ShardID, Code: o.code, Cause: o.reason}
			s.setState(StateFailed, err)
			s.log.Error("shard failed", "code", o.code, "cause", o.reason)
			s.observe(LifecycleFailed, o.reason, err)
			return err
		}
		if o.action == actionIdentify {
			s.mu.Lock()
			s.resume = ResumeState{}
			s.counters.InvalidSessions++
			s.mu.Unlock()
			s.observe(LifecycleInvalidated, o.reason, nil)
		}
		s.mu.Lock()
		s.state = StateReconnecting
		s.counters.Reconnects++
		s.lastErr = o.err
		s.mu.Unlock()
		s.log.Info("shard reconnecting", "reason", o.reason, "then", o.action, "err", o.err)
		s.observe(LifecycleReconnecting, o.reason, o.err)
		if !o.progress {
			if o.err == nil {
				o.err = errors.New(o.reason)
			}
			return fmt.Errorf("shard %d: %w", s.cfg.ShardID, o.err)
		}
		if o.invalidDelay {
			d := s.cfg.InvalidSessionDelayMin + rand.N(s.cfg.InvalidSessionDelayMax-s.cfg.InvalidSessionDelayMin+1)
			if err := sleepUntil(ctx, time.Now().Add(d)); err != nil {
				continue // the loop head and runConn see the stop or the ctx
			}
		}
	}
}

func (s *Shard) finishStopped() error {
	s.setState(StateStopped, nil)
	s.observe(LifecycleStopped, "", nil)
	return nil
}

// Stop closes the connection with a resumable close code (CloseResumable), waits for
// Run to return, and returns the final resume state: every sequence number up to its
// Seq was accepted by the Dispatcher, none after it, so a shard started elsewhere from
// it RESUMEs without losing or repeating an event. Stop is idempotent; after it Run
// refuses to start.
func (s *Shard) Stop(ctx context.Context) (ResumeState, error) {
	return s.stop(ctx, CloseResumable, "discluster: session handoff")
}

// End closes the connection with 1000, which ends the Discord session for good (it
// cannot be resumed), and waits for Run to return: a session no one is to continue,
// such as one of a shard count the bot no longer runs. Like Stop, it is idempotent
// and Run refuses to start after it.
func (s *Shard) End(ctx context.Context) error {
	_, err := s.stop(ctx, CloseSessionEnded, "discluster: session ended")
	return err
}

func (s *Shard) stop(ctx context.Context, code int, reason string) (ResumeState, error) {
	s.mu.Lock()
	s.stopping = true
	c, cancel, done := s.conn, s.cancelRun, s.done
	running := s.running
	if !running && s.state != StateFailed {
		s.state = StateStopped
	}
	s.mu.Unlock()
	if !running {
		return s.ResumeState(), nil
	}
	if c != nil {
		c.closeGracefully(code, reason)
	}
	cancel()
	select {
	case <-done:
		return s.ResumeState(), nil
	case <-ctx.Done():
		return s.ResumeState(), fmt.Errorf("stop shard %d: %w", s.cfg.ShardID, ctx.Err())
	}
}

func (s *Shard) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

func (s *Shard) setState(st State, err error) {
	s.mu.Lock()
	s.state = st
	if err != nil {
		s.lastErr = err
	}
	s.mu.Unlock()
}

func (s *Shard) observe(kind LifecycleKind, reason string, err error) {
	if s.cfg.Observe != nil {
		s.cfg.Observe(Lifecycle{ShardID: s.cfg.ShardID, Kind: kind, At: time.Now(), Reason: reason, Err: err})
	}
}

// Send sends a gateway command (presence update, request guild members, voice state,
// ...) on the live connection, waiting for room under the send limit. A payload over
// MaxPayloadSize is refused and never sent.
func (s *Shard) Send(ctx context.Context, op int, d any) error {
	switch op {
	case OpHeartbeat, OpIdentify, OpResume:
		return fmt.Errorf("send op %d: %w", op, ErrManagedOpcode)
	}
	payload, err := marshalPayload(op, d)
	if err != nil {
		return fmt.Errorf("send op %d: %w", op, err)
	}
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil || !c.isEstablished() {
		return fmt.Errorf("send op %d: %w", op, ErrNotConnected)
	}
	return c.send(ctx, payload, false)
}

// connectURL picks where the next connection goes and whether it resumes.
func (s *Shard) connectURL(ctx context.Context) (string, bool, error) {
	s.mu.Lock()
	rs, gw, resumeDead := s.resume, s.gatewayURL, s.resumeDead
	s.mu.Unlock()
	if rs.Resumable() && rs.ResumeURL != "" && !resumeDead {
		u, err := gatewayQuery(rs.ResumeURL, s.cfg.Compression)
		return u, true, err
	}
	if gw == "" {
		gb, err := FetchGatewayBot(ctx, s.cfg.HTTPClient, s.cfg.APIBase, s.cfg.Token)
		if err != nil {
			return "", false, err
		}
		gw = gb.URL
		s.mu.Lock()
		s.gatewayURL = gw
		s.mu.Unlock()
	}
	u, err := gatewayQuery(gw, s.cfg.Compression)
	return u, rs.Resumable(), err
}

// gatewayQuery adds the query every gateway connection needs; a resume must use the
// same version, encoding and compression as the session it resumes.
func gatewayQuery(raw string, c Compression) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("gateway url %q: %w", raw, err)
	}
	q := u.Query()
	q.Set("v", "10")
	q.Set("encoding", "json")
	if c != CompressionNone && c != CompressionPayload {
		q.Set("compress", string(c))
	} else {
		q.Del("compress")
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

type rawConnKey struct{}

// rawConnSlot receives the TCP connection a websocket dial made.
type rawConnSlot struct {
	mu   sync.Mutex
	conn net.Conn
}

func (r *rawConnSlot) get() net.Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conn
}

var netDialer = &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}

// dialRecording dials like http.Transport would and records the connection in the
// request's rawConnSlot. The websocket library's Close waits up to 10 s for a peer
// that may be dead (a zombie connection, a paused gateway); closing the TCP
// connection is the only way to bound that.
func dialRecording(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := netDialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if slot, ok := ctx.Value(rawConnKey{}).(*rawConnSlot); ok {
		slot.mu.Lock()
		slot.conn = conn
		slot.mu.Unlock()
	}
	return conn, nil
}

func (s *Shard) establishedCount() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.established
}
