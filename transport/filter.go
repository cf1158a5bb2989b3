package transport

import (
	"errors"
	"net"
	"sync"
)

// ErrBlocked is returned for a dial to an address the Filter blocks.
var ErrBlocked = errors.New("address blocked by the fault filter")

// Filter cuts a node off from addresses, for tests of partitions. It acts on the
// dialing side only: a test that blocks both directions (each node's filter blocks
// the other's addresses) cuts every connection, since every connection was dialed by
// one of the two. A nil *Filter blocks nothing.
type Filter struct {
	mu      sync.Mutex
	blocked map[string]bool
	conns   map[*filteredConn]struct{}
}

// NewFilter returns a filter that blocks nothing yet.
func NewFilter() *Filter {
	return &Filter{blocked: make(map[string]bool), conns: make(map[*filteredConn]struct{})}
}

// Block refuses new dials to addrs and closes the connections already dialed to them.
func (f *Filter) Block(addrs ...string) {
	f.mu.Lock()
	var doomed []*filteredConn
	for _, a := range addrs {
		f.blocked[a] = true
	}
	for c := range f.conns {
		if f.blocked[c.addr] {
			doomed = append(doomed, c)
		}
	}
	f.mu.Unlock()
	for _, c := range doomed {
		c.Close()
	}
}

// Heal unblocks every address.
func (f *Filter) Heal() {
	f.mu.Lock()
	clear(f.blocked)
	f.mu.Unlock()
}

// Blocked reports whether addr is blocked.
func (f *Filter) Blocked(addr string) bool {
	if f == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.blocked[addr]
}

// Track wraps a connection dialed to addr so that blocking addr closes it.
func (f *Filter) Track(c net.Conn, addr string) net.Conn { return f.track(c, addr) }

func (f *Filter) track(c net.Conn, addr string) net.Conn {
	if f == nil {
		return c
	}
	fc := &filteredConn{Conn: c, addr: addr, f: f}
	f.mu.Lock()
	f.conns[fc] = struct{}{}
	f.mu.Unlock()
	return fc
}

type filteredConn struct {
	net.Conn
	addr string
	f    *Filter
	once sync.Once
}

func (c *filteredConn) Close() error {
	c.once.Do(func() {
		c.f.mu.Lock()
		delete(c.f.conns, c)
		c.f.mu.Unlock()
	})
	return c.Conn.Close()
}
