package transport

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func listen(t *testing.T, f *Filter) *Mux {
	t.Helper()
	m, err := Listen("127.0.0.1:0", f, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// accept returns the next connection of l, or fails the test after a deadline.
func accept(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	got := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			got <- c
		}
	}()
	select {
	case c := <-got:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted within 5s")
		return nil
	}
}

func TestMuxRoutesByFirstByte(t *testing.T) {
	server, client := listen(t, nil), listen(t, nil)
	addr := server.Addr().String()

	for _, tc := range []struct {
		name  string
		proto byte
		l     net.Listener
	}{{"raft", ProtoRaft, server.raft}, {"rpc", ProtoRPC, server.RPC()}} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.Dial(addr, tc.proto, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("hello " + tc.name)); err != nil {
				t.Fatal(err)
			}
			s := accept(t, tc.l)
			buf := make([]byte, len("hello "+tc.name))
			if _, err := io.ReadFull(s, buf); err != nil {
				t.Fatal(err)
			}
			if string(buf) != "hello "+tc.name {
				t.Fatalf("got %q: the protocol byte leaked into the stream or the wrong listener got it", buf)
			}
		})
	}
}

func TestMuxClosesUnknownProtocol(t *testing.T) {
	server := listen(t, nil)
	c, err := net.Dial("tcp", server.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{0xff, 'x'})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("read = %v, want the connection closed by the mux", err)
	}
}

func TestAcceptAfterCloseFails(t *testing.T) {
	m := listen(t, nil)
	m.Close()
	if _, err := m.RPC().Accept(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Accept after Close = %v, want ErrClosed", err)
	}
	if _, err := m.Dial("127.0.0.1:1", ProtoRPC, time.Second); !errors.Is(err, ErrClosed) {
		t.Fatalf("Dial after Close = %v, want ErrClosed", err)
	}
}

func TestFilterCutsDialedConnections(t *testing.T) {
	f := NewFilter()
	server, client := listen(t, nil), listen(t, f)
	addr := server.Addr().String()
	c, err := client.Dial(addr, ProtoRPC, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s := accept(t, server.RPC())

	f.Block(addr)
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("server side read = %v, want EOF once the dialer's filter blocked it", err)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("write on a blocked connection succeeded")
	}
	if _, err := client.Dial(addr, ProtoRPC, time.Second); !errors.Is(err, ErrBlocked) {
		t.Fatalf("dial while blocked = %v, want ErrBlocked", err)
	}
	f.Heal()
	c2, err := client.Dial(addr, ProtoRPC, time.Second)
	if err != nil {
		t.Fatalf("dial after Heal: %v", err)
	}
	c2.Close()
}

// A flood of connections from one address is closed at accept once it holds the
// per-address limit; a place freed by a close is taken again.
func TestConnectionLimitPerAddress(t *testing.T) {
	m, err := Listen("127.0.0.1:0", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.limits.SetLimits(Limits{Total: MaxConns, PerIP: 3})
	dial := func() net.Conn {
		c, err := net.Dial("tcp", m.ListenAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	closedAtOnce := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	open := m.limits.Open
	var held []net.Conn
	for range 3 {
		held = append(held, dial())
	}
	deadline := time.Now().Add(5 * time.Second)
	for open() < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := open(); n != 3 {
		t.Fatalf("%d connections counted, want 3", n)
	}
	extra := dial()
	if !closedAtOnce(extra) {
		t.Fatal("a connection over the limit was held")
	}
	extra.Close()
	held[0].Close()
	// The mux closes its side when the client goes (the first-byte read fails).
	deadline = time.Now().Add(15 * time.Second)
	for open() > 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	again := dial()
	defer again.Close()
	if closedAtOnce(again) {
		t.Fatal("a freed place was not taken again")
	}
	for _, c := range held[1:] {
		c.Close()
	}
}

// countHandler counts the records logged at warning or above.
type countHandler struct {
	mu   sync.Mutex
	msgs []string
	last []slog.Attr
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	h.last = nil
	r.Attrs(func(a slog.Attr) bool { h.last = append(h.last, a); return true })
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }

// A stranger's connections with a wrong protocol byte are each refused, and logged
// once per limitLogPeriod, not once each; the next line counts those kept quiet.
func TestRefusedConnectionsAreLoggedOncePerPeriod(t *testing.T) {
	h := &countHandler{}
	m, err := Listen("127.0.0.1:0", nil, slog.New(h))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for range 30 {
		c, err := net.Dial("tcp", m.ListenAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{99})
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("a connection with a wrong protocol byte got an answer")
		}
		c.Close()
	}
	h.mu.Lock()
	if len(h.msgs) != 1 || !strings.Contains(h.msgs[0], "unknown protocol byte") {
		t.Fatalf("logged %q, want one line about the protocol byte", h.msgs)
	}
	h.mu.Unlock()
	m.lastRefused.Add(-int64(limitLogPeriod)) // the period has passed
	c, err := net.Dial("tcp", m.ListenAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte{99})
	c.Read(make([]byte, 1))
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		n, last := len(h.msgs), h.last
		h.mu.Unlock()
		if n == 2 {
			var refused int64
			for _, a := range last {
				if a.Key == "refused" {
					refused = a.Value.Int64()
				}
			}
			if refused != 30 {
				t.Fatalf("the second line says refused=%d, want 30 (29 kept quiet, and this one)", refused)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d lines after the period, want 2", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
