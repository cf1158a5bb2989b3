package gatewaytest

import (
	"net"
	"sync"
)

// batchConn lets a connection's writer coalesce the websocket messages of
// one queue batch into few TCP writes. The websocket library flushes every
// message with its own write system call, which would make the fake, not
// the client under test, the bottleneck at high event rates.
//
// Writes made while no batch is open (HTTP, control frames the library
// answers on its own) go straight through. Close does not take the lock,
// so cutting a connection stuck in a write works at any time.
type batchConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  []byte
}

// batchFlushSize bounds the buffered bytes of one batch.
const batchFlushSize = 64 << 10

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.hold {
		return b.Conn.Write(p)
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) >= batchFlushSize {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (b *batchConn) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}

// begin opens a batch: writes are buffered until end.
func (b *batchConn) begin() {
	b.mu.Lock()
	b.hold = true
	b.mu.Unlock()
}

// end writes out the batch.
func (b *batchConn) end() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hold = false
	err := b.flushLocked()
	if cap(b.buf) > 4*batchFlushSize {
		b.buf = nil
	}
	return err
}

// batchListener hands out batchConns.
type batchListener struct{ net.Listener }

func (l batchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &batchConn{Conn: c}, nil
}
