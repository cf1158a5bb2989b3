package gatewaytest

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"

	"github.com/coder/websocket"
	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
)

// Transport compression as Discord does it: one compression context per
// connection, shared by every payload, never reset mid-connection.

// encoder writes one gateway payload to a websocket. Only the connection's
// writer goroutine calls it.
type encoder interface {
	send(ws *websocket.Conn, payload []byte) error
	close()
}

// newEncoder makes the encoder of a connection opened with compress; compressed
// counts the payloads it sends payload-compressed.
func newEncoder(compress string, split bool, compressed *atomic.Int64) (encoder, error) {
	switch compress {
	case "":
		return &plainEncoder{compressed: compressed}, nil
	case "zlib-stream":
		return &zlibEncoder{split: split}, nil
	case "zstd-stream":
		e := &zstdEncoder{}
		zw, err := zstd.NewWriter(&e.buf, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
		if err != nil {
			return nil, err
		}
		e.zw = zw
		return e, nil
	}
	return nil, fmt.Errorf("unsupported compress %q", compress)
}

// Writes use context.Background: a context with a deadline would cost a
// timer per message, and a stuck client is cut by the connection's watchdog
// or queue limit instead.

// payloadCompressMin is the size from which payload compression compresses a
// payload: Discord compresses "some" payloads, the large ones (READY, GUILD_CREATE).
const payloadCompressMin = 1024

// plainEncoder sends each payload as one text message; once the client asked for
// payload compression (IDENTIFY's compress:true, on a connection without transport
// compression), each payload of at least payloadCompressMin bytes goes as a binary
// message that is one complete zlib stream of its own.
type plainEncoder struct {
	payloads   atomic.Bool
	buf        bytes.Buffer
	zw         *zlib.Writer
	compressed *atomic.Int64
}

// compressPayloads turns payload compression on, from the next payload.
func (e *plainEncoder) compressPayloads() { e.payloads.Store(true) }

func (e *plainEncoder) send(ws *websocket.Conn, p []byte) error {
	if !e.payloads.Load() || len(p) < payloadCompressMin {
		return ws.Write(context.Background(), websocket.MessageText, p)
	}
	e.buf.Reset()
	if e.zw == nil {
		zw, err := zlib.NewWriterLevel(&e.buf, zlib.BestSpeed)
		if err != nil {
			return err
		}
		e.zw = zw
	} else {
		e.zw.Reset(&e.buf) // a fresh stream: no context shared between payloads
	}
	if _, err := e.zw.Write(p); err != nil {
		return err
	}
	if err := e.zw.Close(); err != nil {
		return err
	}
	if e.compressed != nil {
		e.compressed.Add(1)
	}
	return ws.Write(context.Background(), websocket.MessageBinary, e.buf.Bytes())
}

func (e *plainEncoder) close() {}

// payloadCompressor is an encoder that can turn payload compression on.
type payloadCompressor interface{ compressPayloads() }

// syncFlushMarker ends every zlib-stream payload (an empty stored block from
// Z_SYNC_FLUSH); clients inflate once a message ends with it.
var syncFlushMarker = []byte{0x00, 0x00, 0xff, 0xff}

// zlibEncoder writes each payload as the next stretch of one long zlib stream,
// ended by a sync flush, in one binary message, or in two when split. A deflate
// compressor holds about 800 KiB of tables and history (0.3 ms to allocate and
// clear): one per connection was the fake's whole memory at thousands of sessions
// and much of its CPU when they all reconnected at once. So a connection holds one
// only while it writes a batch: the writer loop gives it back (idle) once the batch
// is on the socket, and the next batch continues the same stream with a fresh
// compressor that refers back to nothing before it, which deflate allows. The
// payloads of a batch (READY and its GUILD_CREATEs, a replay, a busy shard's
// backlog) share one context and refer back to each other, as Discord's do, so a
// client that does not keep one inflater per connection fails here too.
type zlibEncoder struct {
	d      *deflater // while writing a batch; nil when idle
	header bool      // the zlib header was sent
	split  bool
	n      uint64
}

// A deflater is a compressor with the buffer it writes into.
type deflater struct {
	fw  *flate.Writer
	buf bytes.Buffer
}

// zlibHeader starts the stream: deflate, 32 KiB window, fastest level (FLEVEL 0),
// no preset dictionary; the stream never ends, so its Adler-32 is never sent.
var zlibHeader = []byte{0x78, 0x01}

// idleDeflaters keeps the compressors of connections between batches: a bounded
// list rather than a sync.Pool, which a garbage collection would empty, making the
// next batches allocate 800 KiB each. Only the connections writing at the same
// moment hold one, a handful.
var idleDeflaters = make(chan *deflater, 64)

func (e *zlibEncoder) send(ws *websocket.Conn, p []byte) error {
	b, err := e.encode(p)
	if err != nil {
		return err
	}
	e.n++
	k := 0
	if e.split {
		k = splitPoint(b, e.n)
	}
	if k == 0 {
		return ws.Write(context.Background(), websocket.MessageBinary, b)
	}
	if err := ws.Write(context.Background(), websocket.MessageBinary, b[:k]); err != nil {
		return err
	}
	return ws.Write(context.Background(), websocket.MessageBinary, b[k:])
}

// encode returns p's stretch of the stream, valid until the next call.
func (e *zlibEncoder) encode(p []byte) ([]byte, error) {
	if e.d == nil {
		select {
		case e.d = <-idleDeflaters:
			e.d.fw.Reset(&e.d.buf)
		default:
			d := &deflater{}
			fw, err := flate.NewWriter(&d.buf, flate.BestSpeed)
			if err != nil {
				return nil, err
			}
			d.fw, e.d = fw, d
		}
	}
	d := e.d
	d.buf.Reset()
	if !e.header {
		d.buf.Write(zlibHeader)
		e.header = true
	}
	if _, err := d.fw.Write(p); err != nil {
		return nil, err
	}
	if err := d.fw.Flush(); err != nil {
		return nil, err
	}
	return d.buf.Bytes(), nil
}

// idle gives the compressor back: the batch was written.
func (e *zlibEncoder) idle() {
	if e.d == nil {
		return
	}
	select {
	case idleDeflaters <- e.d:
	default:
	}
	e.d = nil
}

// idler is an encoder that holds state only while it writes a batch.
type idler interface{ idle() }

// splitPoint picks where to cut the n-th compressed payload b in two, or
// 0 for no cut. The last part must end with the whole marker: that is how
// a client following the docs knows a payload is complete. So the cut
// falls in b[1:len-4], varying with n so that over many payloads it lands
// in the zlib header and all through the deflate data; and never where the
// first part would itself end with the marker, which a client could not
// tell from a whole payload.
func splitPoint(b []byte, n uint64) int {
	if len(b) < len(syncFlushMarker)+2 {
		return 0
	}
	k := 1 + int(n*7919%uint64(len(b)-len(syncFlushMarker)))
	for k > 1 && bytes.HasSuffix(b[:k], syncFlushMarker) {
		k--
	}
	return k
}

func (e *zlibEncoder) close() { e.idle() }

// zstdEncoder writes each payload with Write+Flush into one long zstd frame
// that is never ended: exactly one binary message per payload.
type zstdEncoder struct {
	buf bytes.Buffer
	zw  *zstd.Encoder
}

func (e *zstdEncoder) send(ws *websocket.Conn, p []byte) error {
	e.buf.Reset()
	if _, err := e.zw.Write(p); err != nil {
		return err
	}
	if err := e.zw.Flush(); err != nil {
		return err
	}
	return ws.Write(context.Background(), websocket.MessageBinary, e.buf.Bytes())
}

func (e *zstdEncoder) close() { _ = e.zw.Close() }
