package gatewaytest

import (
	"encoding/binary"
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
// see stampArrivals. The kernel stamps a read with the arrival of the last
// segment it took, and merges a segment that arrives while the one before it
// waits unread into that one, stamp included. So a frame read while later bytes
// already wait (the fake's reader waited for the CPU) may carry their later
// stamp: an IDENTIFY read together with a heartbeat the client sent 2 s later
// would be dated 2 s late, and the bucket's next IDENTIFY, on time, would look
// early. Once the websocket handshake is done (framesFollow), a read returns at
// most the rest of one client frame, and a frame after which bytes still wait has
// a stamp that is only an upper bound (lastArrival's exact false).
type batchConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  []byte

	raw     syscall.RawConn // nil: plain reads, no stamps
	oob     []byte          // used by the one reading goroutine only
	arrival atomic.Int64    // Unix ns when the last segment read arrived; 0 if unknown

	frames    atomic.Bool // the websocket handshake is done: client frames follow
	frameLeft int         // bytes of the current frame not read yet (the reader's)
	header    [14]byte    // the longest client frame header: 2 + 8 of length + 4 of mask
	inexact   atomic.Bool // bytes waited behind the last frame read: its stamp may be theirs
}

func (b *batchConn) Read(p []byte) (int, error) {
	if b.raw == nil {
		return b.Conn.Read(p)
	}
	if b.frames.Load() {
		if b.frameLeft == 0 {
			n, err := peek(b.raw, b.header[:])
			if err != nil {
				return 0, err
			}
			b.frameLeft = frameLen(b.header[:n])
		}
		if b.frameLeft > 0 && len(p) > b.frameLeft {
			p = p[:b.frameLeft]
		}
	}
	framed := b.frameLeft > 0
	n, stamp, err := readStamped(b.raw, p, b.oob)
	if n > 0 {
		b.arrival.Store(stamp)
		b.frameLeft = max(b.frameLeft-n, 0)
		// Unframed reads (before the handshake, or a header the kernel split) take
		// all that waits, so their stamp is the last byte's; a frame's end leaves the
		// bytes behind it in the queue, whose stamp it may have taken.
		b.inexact.Store(framed && b.frameLeft == 0 && queued(b.raw) != 0)
	}
	return n, err
}

// framesFollow marks the websocket handshake done: from here reads keep to frame
// boundaries. The client sends nothing between its upgrade request and HELLO, so
// no read has taken a frame's bytes yet.
func (b *batchConn) framesFollow() { b.frames.Store(true) }

// frameLen is the length of the websocket frame whose first bytes are h (RFC 6455
// 5.2), or 0 when h is too short to tell: that read is then not cut at a frame's
// end, and the next one starts from wherever it ended. A client's frames are small
// and each comes in one write, so a header split over two segments does not occur
// in practice; a frame of more than 1 MiB is left to the library to refuse.
func frameLen(h []byte) int {
	if len(h) < 2 {
		return 0
	}
	size, n := uint64(h[1]&0x7f), 2
	switch size {
	case 126:
		if len(h) < 4 {
			return 0
		}
		size, n = uint64(binary.BigEndian.Uint16(h[2:4])), 4
	case 127:
		if len(h) < 10 {
			return 0
		}
		size, n = binary.BigEndian.Uint64(h[2:10]), 10
	}
	if h[1]&0x80 != 0 {
		n += 4 // the masking key
	}
	if size > 1<<20 {
		return 0
	}
	return n + int(size)
}

// lastArrival is when the last bytes read arrived, or ok false when unknown. A
// websocket message is handled right after its last bytes were read, so this is its
// arrival; exact is false when later bytes already waited behind them, and the
// stamp may be theirs: the message arrived at t or earlier.
func (b *batchConn) lastArrival() (t time.Time, exact, ok bool) {
	ns := b.arrival.Load()
	if ns == 0 {
		return time.Time{}, false, false
	}
	return time.Unix(0, ns), !b.inexact.Load(), true
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
