package gatewaytest

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"

	"github.com/coder/websocket"
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
		e := &zlibEncoder{split: split}
		zw, err := zlib.NewWriterLevel(&e.buf, zlib.BestSpeed)
		if err != nil {
			return nil, err
		}
		e.zw = zw
		return e, nil
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

// zlibEncoder writes each payload with Write+Flush (a sync flush) into one
// long zlib stream, in one binary message, or in two when split.
type zlibEncoder struct {
	buf   bytes.Buffer
	zw    *zlib.Writer
	split bool
	n     uint64
}

func (e *zlibEncoder) send(ws *websocket.Conn, p []byte) error {
	e.buf.Reset()
	if _, err := e.zw.Write(p); err != nil {
		return err
	}
	if err := e.zw.Flush(); err != nil {
		return err
	}
	b := e.buf.Bytes()
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

func (e *zlibEncoder) close() { _ = e.zw.Close() }

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
