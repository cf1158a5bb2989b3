package gatewaytest

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// batchConn lets a connection's writer coalesce the websocket messages of
// one queue batch into few TCP writes. The websocket library flushes every
// message with its own write system call, which would make the fake, not
// the client under test, the bottleneck at high event rates.
//
// Writes made while no batch is open (HTTP, control frames the library
// answers on its own) go straight through. Close does not take the lock,
// so cutting a connection stuck in a write works at any time.
//
// Reads go through the kernel with arrival stamps where it offers them (Linux):
// see stampArrivals.
type batchConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  []byte

	raw     syscall.RawConn // nil: plain reads, no stamps
	oob     []byte          // used by the one reading goroutine only
	arrival atomic.Int64    // Unix ns when the last segment read arrived; 0 if unknown
}

func (b *batchConn) Read(p []byte) (int, error) {
	if b.raw == nil {
		return b.Conn.Read(p)
	}
	n, stamp, err := readStamped(b.raw, p, b.oob)
	if n > 0 {
		b.arrival.Store(stamp)
	}
	return n, err
}

// lastArrival is when the last bytes read arrived, or ok false when unknown. A
// websocket message is handled right after its last bytes were read, so this is its
// arrival.
func (b *batchConn) lastArrival() (t time.Time, ok bool) {
	ns := b.arrival.Load()
	if ns == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
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
	bc := &batchConn{Conn: c}
	if bc.raw = stampArrivals(c); bc.raw != nil {
		bc.oob = make([]byte, syscall.CmsgSpace(16))
	}
	return bc, nil
}
