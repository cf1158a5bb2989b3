package transport

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// The first byte of every connection. Never renumber them: nodes of different
// versions talk to each other during a rolling upgrade.
const (
	ProtoRaft byte = 1
	ProtoRPC  byte = 2
)

// ErrClosed is returned by Accept and Dial after Close.
var ErrClosed = errors.New("transport closed")

// handshakeTimeout bounds how long an accepted connection may take to send its first
// byte; a port scanner or a stuck peer must not hold a goroutine forever.
const handshakeTimeout = 10 * time.Second

// Connection limits of the cluster port: a flood of connections is closed at accept
// rather than held. A node keeps a few connections to each peer (Raft's pool of 3,
// one RPC client, short-lived probes), and every peer of a test cluster on one
// machine shares one IP, hence the generous per-address bound.
const (
	MaxConns       = 4096
	MaxConnsPerIP  = 256
	limitLogPeriod = 10 * time.Second
)

// Mux is the node's one TCP listener, split by first byte into a Raft stream and an
// RPC stream.
type Mux struct {
	ln     net.Listener
	filter *Filter
	log    *slog.Logger
	tls    TLS
	raft   *listener
	rpc    *listener

	advMu     sync.Mutex
	advertise net.Addr

	limits *Limiter // open accepted connections; see MaxConns

	// The last time a refused handshake or an unknown protocol byte was logged;
	// see limitLogPeriod.
	lastRefused atomic.Int64
	refused     atomic.Int64

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
}

// TLS is the cluster port's mutual TLS: the handshake comes before the protocol byte,
// so a peer without an accepted certificate never reaches Raft or RPC. Zero means
// plain TCP.
type TLS struct {
	Server *tls.Config // accepting
	Client *tls.Config // dialing
}

// Listen opens addr ("host:port"; port 0 picks one). A nil filter blocks nothing.
func Listen(addr string, filter *Filter, log *slog.Logger) (*Mux, error) {
	return ListenTLS(addr, filter, log, TLS{})
}

// ListenTLS is Listen with mutual TLS on every connection, both ways.
func ListenTLS(addr string, filter *Filter, log *slog.Logger, t TLS) (*Mux, error) {
	if (t.Server == nil) != (t.Client == nil) {
		return nil, errors.New("cluster port TLS: both the server and the client config, or neither")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster port: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Mux{ln: ln, filter: filter, log: log, tls: t, done: make(chan struct{}),
		limits: NewLimiter("cluster port", Limits{Total: MaxConns, PerIP: MaxConnsPerIP}, log)}
	m.raft = &listener{mux: m, proto: ProtoRaft, conns: make(chan net.Conn)}
	m.rpc = &listener{mux: m, proto: ProtoRPC, conns: make(chan net.Conn)}
	m.wg.Add(1)
	go m.acceptLoop()
	return m, nil
}

// Addr is the address other nodes reach the mux at: the advertised one once set,
// else the one it listens on. Raft sends it to followers as the leader's address.
func (m *Mux) Addr() net.Addr {
	m.advMu.Lock()
	defer m.advMu.Unlock()
	if m.advertise != nil {
		return m.advertise
	}
	return m.ln.Addr()
}

// ListenAddr is the address the mux listens on.
func (m *Mux) ListenAddr() net.Addr { return m.ln.Addr() }

// SetAdvertise sets the address Addr returns ("ip:port"); a mux bound to 0.0.0.0
// must not tell its peers to dial 0.0.0.0.
func (m *Mux) SetAdvertise(addr string) error {
	a, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return err
	}
	m.advMu.Lock()
	m.advertise = a
	m.advMu.Unlock()
	return nil
}

// Raft returns the stream layer to build raft's NetworkTransport on.
func (m *Mux) Raft() raft.StreamLayer { return m.raft }

// RPC returns the listener of RPC connections.
func (m *Mux) RPC() net.Listener { return m.rpc }

// Dial connects to another node's mux and announces proto.
func (m *Mux) Dial(addr string, proto byte, timeout time.Duration) (net.Conn, error) {
	select {
	case <-m.done:
		return nil, ErrClosed
	default:
	}
	if m.filter.Blocked(addr) {
		return nil, fmt.Errorf("dial %s: %w", addr, ErrBlocked)
	}
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	if m.tls.Client != nil {
		tc := tls.Client(conn, m.tls.Client)
		tc.SetDeadline(time.Now().Add(timeout))
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return nil, fmt.Errorf("dial %s: TLS: %w", addr, err)
		}
		tc.SetDeadline(time.Time{})
		conn = tc
	}
	if err := conn.SetWriteDeadline(time.Now().Add(timeout)); err == nil {
		_, err = conn.Write([]byte{proto})
		if err == nil {
			err = conn.SetWriteDeadline(time.Time{})
		}
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return m.filter.track(conn, addr), nil
}

// Close stops accepting; connections already handed out stay open until their
// owners close them.
func (m *Mux) Close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.done)
		err = m.ln.Close()
		m.wg.Wait()
	})
	return err
}

func (m *Mux) acceptLoop() {
	defer m.wg.Done()
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			m.log.Error("cluster port stopped accepting", "err", err)
			return
		}
		conn, ok := m.limits.wrap(conn)
		if !ok {
			continue
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.route(conn)
		}()
	}
}

func (m *Mux) route(conn net.Conn) {
	if m.tls.Server != nil {
		tc := tls.Server(conn, m.tls.Server)
		tc.SetDeadline(time.Now().Add(handshakeTimeout))
		if err := tc.Handshake(); err != nil {
			// Refused before a single byte of Raft or RPC is read.
			m.logRefused("cluster port: TLS handshake refused", conn, "err", err)
			conn.Close()
			return
		}
		tc.SetDeadline(time.Time{})
		conn = tc
	}
	var first [1]byte
	conn.SetReadDeadline(time.Now().Add(handshakeTimeout))
	if _, err := io.ReadFull(conn, first[:]); err != nil {
		conn.Close()
		return
	}
	conn.SetReadDeadline(time.Time{})
	var l *listener
	switch first[0] {
	case ProtoRaft:
		l = m.raft
	case ProtoRPC:
		l = m.rpc
	default:
		m.logRefused("cluster port: unknown protocol byte; closing (is something else talking to this port?)", conn, "byte", first[0])
		conn.Close()
		return
	}
	select {
	case l.conns <- conn:
	case <-m.done:
		conn.Close()
	}
}

// logRefused logs a refused connection, at most once per limitLogPeriod: a flood of
// strangers must not become a flood of log lines. The line counts the refusals it
// stands for.
func (m *Mux) logRefused(msg string, conn net.Conn, args ...any) {
	n := m.refused.Add(1)
	now := time.Now().UnixNano()
	last := m.lastRefused.Load()
	if last != 0 && now-last < int64(limitLogPeriod) || !m.lastRefused.CompareAndSwap(last, now) {
		return
	}
	m.refused.Add(-n)
	args = append([]any{"from", conn.RemoteAddr().String()}, args...)
	m.log.Warn(msg+" (logged once per 10s)", append(args, "refused", n)...)
}

// listener is one protocol's share of the mux.
type listener struct {
	mux   *Mux
	proto byte
	conns chan net.Conn
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.mux.done:
		return nil, ErrClosed
	}
}

// Close closes the whole mux: raft's transport closes its stream layer on shutdown,
// and the node shuts the two down together.
func (l *listener) Close() error { return l.mux.Close() }

func (l *listener) Addr() net.Addr { return l.mux.Addr() }

// Dial implements raft.StreamLayer.
func (l *listener) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return l.mux.Dial(string(addr), l.proto, timeout)
}
