package gatewaytest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// closeGrace bounds how long a server-initiated close may wait for the
// pending payloads and the close handshake before the TCP connection is
// cut; a client that stopped reading must not hold the fake.
const closeGrace = 5 * time.Second

// outFrame is one entry of a connection's outbound queue: a payload, or
// (closeCode != 0) the close frame that ends the connection.
type outFrame struct {
	ev          event
	sess        *session // set for dispatches, for the session's counters
	replay      bool
	closeCode   int
	closeReason string
}

// conn is one websocket connection. Three goroutines serve it, all owned
// by the HTTP handler that accepted it: the handler reads, a writer owns
// the socket's write side and the compressor, a watchdog enforces the
// heartbeat deadline and the close grace.
type conn struct {
	srv         *Server
	ws          *websocket.Conn
	nc          *batchConn // the TCP connection under ws
	id          uint64
	onResumeURL bool
	apiVersion  int
	enc         encoder
	log         *slog.Logger

	qmu     sync.Mutex
	q       []outFrame
	qclosed bool // a close was requested or the writer is gone
	qsig    chan struct{}
	qlimit  int

	stop       chan struct{} // closed by the handler when reading is over
	closeReq   chan struct{} // closed when the fake decides to close
	closeOnce  sync.Once
	writerDone chan struct{}
	watchDone  chan struct{}
	lastBeat   atomic.Int64 // unix nanos of HELLO or of the last heartbeat
	overflowed atomic.Bool

	// Guarded by Server.mu.
	closing     bool // the fake closed or dropped it; the client's word no longer counts
	closeSent   bool // the fake queued a close frame (rather than dropping)
	shard       int  // shard the connection named in IDENTIFY/RESUME, -1 before
	total       int  // and the shard's num_shards: its generation
	counted     bool // counted in Live of shard
	sess        *session
	hbRequested bool

	// Reader goroutine only.
	sendLog []time.Time // times of the last SendLimit payloads, a ring
	sendPos int
	inBuf   []byte
}

// kill cuts the TCP connection: no close frame, and every read, write or
// close handshake in progress on ws fails at once. (ws.CloseNow cannot do
// this: it waits for a close handshake already under way.)
func (c *conn) kill() { _ = c.nc.Close() }

func (c *conn) signal() {
	select {
	case c.qsig <- struct{}{}:
	default:
	}
}

// enqueue queues payloads for the writer. A client so far behind that the
// queue would pass its limit is dropped at once, as Discord drops slow
// consumers; its session stays resumable. It reports whether the frames
// were queued.
func (c *conn) enqueue(frames ...outFrame) bool {
	c.qmu.Lock()
	if c.qclosed {
		c.qmu.Unlock()
		return false
	}
	if len(c.q)+len(frames) > c.qlimit {
		c.qclosed = true
		c.qmu.Unlock()
		c.overflowed.Store(true)
		c.log.Warn("client too slow, dropping connection", "queued", c.qlimit)
		c.kill()
		return false
	}
	c.q = append(c.q, frames...)
	c.qmu.Unlock()
	c.signal()
	return true
}

func (c *conn) sendRaw(p []byte) bool { return c.enqueue(outFrame{ev: event{raw: p}}) }

// requestClose queues the close frame after everything already queued and
// refuses anything later.
func (c *conn) requestClose(code int, reason string) {
	c.qmu.Lock()
	if !c.qclosed {
		c.qclosed = true
		c.q = append(c.q, outFrame{closeCode: code, closeReason: reason})
	}
	c.qmu.Unlock()
	c.signal()
	c.closeOnce.Do(func() { close(c.closeReq) })
}

func (c *conn) writeLoop() {
	defer close(c.writerDone)
	defer c.enc.close()
	var batch []outFrame
	var buf []byte
	for {
		select {
		case <-c.qsig:
		case <-c.stop:
			return
		}
		c.qmu.Lock()
		batch, c.q = c.q, batch[:0]
		c.qmu.Unlock()
		closeAt := -1
		c.nc.begin()
		for i := range batch {
			f := &batch[i]
			if f.closeCode != 0 {
				closeAt = i
				break
			}
			p := f.ev.render(buf[:0])
			if f.ev.raw == nil {
				buf = p
			}
			if err := c.enc.send(c.ws, p); err != nil {
				c.writeFailed()
				return
			}
		}
		if err := c.nc.end(); err != nil {
			c.writeFailed()
			return
		}
		// An encoder that holds state only while it writes gives it back: a
		// compressor is 800 KiB, and a connection is idle most of the time.
		if e, ok := c.enc.(idler); ok {
			e.idle()
		}
		// Count only what reached the socket.
		for i := range batch {
			f := &batch[i]
			if i == closeAt {
				break
			}
			if f.sess != nil {
				f.sess.eventsSent.Add(1)
				if f.replay {
					f.sess.replayed.Add(1)
				}
			}
			*f = outFrame{}
		}
		c.srv.changed.notify()
		if closeAt >= 0 {
			f := batch[closeAt]
			_ = c.ws.Close(websocket.StatusCode(f.closeCode), f.closeReason)
			return
		}
	}
}

func (c *conn) writeFailed() {
	c.qmu.Lock()
	c.qclosed = true
	c.qmu.Unlock()
	c.kill()
}

// watchdog closes the connection when no heartbeat arrived within
// HeartbeatInterval+HeartbeatTimeout of HELLO or of the previous heartbeat,
// and cuts it when a close takes longer than closeGrace.
func (c *conn) watchdog() {
	defer close(c.watchDone)
	limit := c.srv.opts.HeartbeatInterval + c.srv.opts.HeartbeatTimeout
	hb := time.NewTimer(limit)
	defer hb.Stop()
	closeReq := c.closeReq
	var grace <-chan time.Time
	for {
		select {
		case <-c.stop:
			return
		case <-closeReq:
			closeReq = nil
			t := time.NewTimer(closeGrace)
			defer t.Stop()
			grace = t.C
		case <-grace:
			grace = nil
			c.kill()
		case <-hb.C:
			due := time.Unix(0, c.lastBeat.Load()).Add(limit)
			if left := time.Until(due); left > 0 {
				hb.Reset(left)
				continue
			}
			c.srv.heartbeatTimedOut(c)
		}
	}
}

// errOversize ends the read loop after a payload over maxPayload: the rest
// of that message is never read, the close handshake discards it.
var errOversize = errors.New("payload over 4096 bytes")

// readLoop reads client payloads until the connection ends.
func (c *conn) readLoop() error {
	for {
		_, r, err := c.ws.Reader(context.Background())
		if err != nil {
			return err
		}
		// Read one byte past the limit to tell "exactly 4096" from "more".
		b := c.inBuf[:0]
		lr := io.LimitReader(r, maxPayload+1)
		for {
			if len(b) == cap(b) {
				b = append(b, 0)[:len(b)]
			}
			n, err := lr.Read(b[len(b):cap(b)])
			b = b[:len(b)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		c.inBuf = b
		c.srv.handlePayload(c, b)
		if len(b) > maxPayload {
			return errOversize
		}
	}
}

// rateLimited records one payload and reports whether it is one more than
// SendLimit within SendWindow. The window slides, which is stricter than a
// window fixed from connect: a client that passes here passes Discord
// whichever of the two Discord uses.
func (c *conn) rateLimited(now time.Time) bool {
	lim := c.srv.opts.SendLimit
	if len(c.sendLog) < lim {
		c.sendLog = append(c.sendLog, now)
		return false
	}
	oldest := c.sendLog[c.sendPos]
	c.sendLog[c.sendPos] = now
	c.sendPos = (c.sendPos + 1) % lim
	return now.Sub(oldest) < c.srv.opts.SendWindow
}
