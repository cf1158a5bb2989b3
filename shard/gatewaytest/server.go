package gatewaytest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Sentinel errors callers can branch on with errors.Is.
var (
	// ErrNoLiveConnection: a fault injector found no live connection for
	// the shard.
	ErrNoLiveConnection = errors.New("gatewaytest: shard has no live connection")
	// ErrClosed: the server is closed.
	ErrClosed = errors.New("gatewaytest: server closed")
)

// Server is a fake Discord: GET /gateway/bot and the gateway websocket.
type Server struct {
	opts      Options
	payloads  *payloads
	ln        net.Listener
	http      *http.Server
	base      string // "127.0.0.1:PORT"
	changed   notifier
	done      chan struct{} // closed by Close
	wg        sync.WaitGroup
	clock     func() time.Time // identify windows and the session start budget
	testClock atomic.Bool      // clock was replaced: ignore kernel arrival stamps
	// payloadsCompressed counts payloads sent with payload compression (IDENTIFY's
	// compress:true); the writers add to it without the server's lock.
	payloadsCompressed atomic.Int64

	// Member chunking (op 8), guarded by mu: when each guild last had an all-members
	// request answered (Discord's limit is per guild per bot, so across sessions), and,
	// when not zero, a member count that replaces every guild's (tests set it to get
	// guilds bigger than one chunk).
	lastAllMembers map[uint64]time.Time
	memberCount    int

	mu              sync.Mutex
	closed          bool
	conns           map[*conn]struct{}
	nextConnID      uint64
	sessions        map[string]*session
	nextSessionIdx  uint64
	cnt             counters
	tokenValid      bool
	tokens          []string // accepted; see AcceptTokens
	acks            bool
	lastIdentify    map[int]arrival // by bucket
	startsRemaining int
	startsResetAt   time.Time

	// Guilds and generations (generations.go), guarded by mu: the bot's guild
	// count (Options.Guilds, then AddGuilds), the open sessions by (num_shards,
	// shard), and the guild event source.
	guilds      int
	open        map[genShard][]*session
	openTotals  []int // the num_shards of the open sessions, ascending
	guildEvents guildEventSource
}

type netConnKey struct{}

// NewServer starts a fake gateway listening on opts.Addr. It serves until
// Close.
func NewServer(opts Options) (*Server, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	p, err := loadPayloads()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("gatewaytest: listen %s: %w", opts.Addr, err)
	}
	s := &Server{
		opts:            opts,
		payloads:        p,
		ln:              ln,
		base:            ln.Addr().String(),
		done:            make(chan struct{}),
		clock:           time.Now,
		conns:           map[*conn]struct{}{},
		sessions:        map[string]*session{},
		cnt:             newCounters(),
		tokenValid:      true,
		tokens:          []string{opts.Token},
		acks:            true,
		lastIdentify:    map[int]arrival{},
		startsRemaining: opts.SessionStartLimit,
		guilds:          opts.Guilds,
		open:            map[genShard][]*session{},
		guildEvents:     newGuildEventSource(opts.GuildEventRate),
	}
	s.startsResetAt = s.clock().Add(opts.SessionStartResetAfter)
	s.http = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug),
		// Keep each TCP connection reachable from its handler, so that a
		// websocket can be cut even in the middle of a close handshake.
		ConnContext: func(ctx context.Context, nc net.Conn) context.Context {
			return context.WithValue(ctx, netConnKey{}, nc)
		},
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		_ = s.http.Serve(batchListener{ln}) // returns http.ErrServerClosed after Close
	}()
	go s.runGuildEvents()
	s.opts.Logger.Info("fake gateway listening", "addr", s.base)
	return s, nil
}

// APIURL is the REST base, "http://127.0.0.1:PORT/api/v10".
func (s *Server) APIURL() string { return "http://" + s.base + "/api/v10" }

// GatewayURL is the url /gateway/bot returns.
func (s *Server) GatewayURL() string { return "ws://" + s.base + "/gateway" }

// ResumeURL is the resume_gateway_url READY returns: the same server under
// another path, so tests can tell whether a client resumes where Discord
// told it to.
func (s *Server) ResumeURL() string { return "ws://" + s.base + "/resume" }

// StatsURL serves Stats as JSON.
func (s *Server) StatsURL() string { return "http://" + s.base + "/fake/stats" }

// Close closes every connection without a close frame, stops all
// sessions and waits for every goroutine of the server. It is idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return
	}
	s.closed = true
	close(s.done)
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	_ = s.http.Close()
	for _, c := range conns {
		c.kill()
	}
	s.wg.Wait()
	s.changed.notify()
	s.opts.Logger.Info("fake gateway closed", "addr", s.base)
}

// Await returns nil as soon as cond(Stats()) is true. It re-evaluates cond
// on every change of the fake's state (no polling), and returns ctx's
// error when ctx ends first, or ErrClosed once the server is closed.
func (s *Server) Await(ctx context.Context, cond func(Stats) bool) error {
	for {
		ch := s.changed.wait()
		if cond(s.Stats()) {
			return nil
		}
		select {
		case <-ch:
		case <-s.done:
			if cond(s.Stats()) {
				return nil
			}
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// track registers an HTTP handler goroutine with the server's WaitGroup,
// so that Close waits for it; it refuses once the server is closing.
func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *Server) now() time.Time { return s.clock() }

// arrival is when a client payload reached this machine. Exact is false when the
// kernel's stamp may belong to bytes that arrived after it (see batchConn): the
// payload arrived at at or before.
type arrival struct {
	at    time.Time
	exact bool
}

// arrival is when c's current payload reached this machine: the kernel's stamp when
// it gave one, or now (without stamps, the fake judges by its read). A test clock
// (setClock) is always used as it is.
func (s *Server) arrival(c *conn) arrival {
	now := s.now()
	if s.testClock.Load() {
		return arrival{now, true}
	}
	if t, exact, ok := c.nc.lastArrival(); ok && t.Before(now) {
		return arrival{t, exact}
	}
	return arrival{now, true}
}

// refillStartsLocked starts a new session start window once the last one
// is over, as Discord's daily budget resets after reset_after.
func (s *Server) refillStartsLocked() {
	now := s.now()
	if now.Before(s.startsResetAt) {
		return
	}
	s.startsRemaining = s.opts.SessionStartLimit
	for !now.Before(s.startsResetAt) {
		s.startsResetAt = s.startsResetAt.Add(s.opts.SessionStartResetAfter)
	}
}

// setClock replaces the clock of identify windows and the session start
// budget, so tests can cross a window without waiting for it.
func (s *Server) setClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock = now
	s.testClock.Store(true)
}
