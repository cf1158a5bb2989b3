package shard

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"github.com/klauspost/compress/flate"
	"io"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
	"github.com/klauspost/compress/zstd"
)

// Compression is the transport compression a shard asks the gateway for.
type Compression string

const (
	CompressionZlibStream Compression = "zlib-stream"
	CompressionZstdStream Compression = "zstd-stream"
	CompressionNone       Compression = "none"
	// CompressionPayload asks for no transport compression but sets compress:true in
	// IDENTIFY: Discord then sends some payloads (the large ones) as binary messages,
	// each a complete zlib stream of its own, and the rest as text.
	CompressionPayload Compression = "payload"
)

// payloadReader yields the gateway payloads of one connection, in order.
type payloadReader interface {
	next(env *envelope) error
	close()
}

// messageSource presents the binary messages of one websocket as one byte stream.
// The decompressors of zlib-stream and zstd-stream both need exactly that: one
// decompression context for the life of the connection, fed message after message.
// It implements io.ByteReader so that compress/flate reads exactly the bytes it needs
// and never asks for the next message before the current one's payload is out; a
// reader that buffered ahead would hold an event back until the next one arrived.
// Each message is read whole into buf (one call into the websocket library per
// message, not per byte) and served from there; buf is lent by readBuffers until the
// decompressor has taken the message's last byte.
type messageSource struct {
	conn *websocket.Conn
	lent *[]byte
	buf  []byte
	off  int
	wire *atomic.Uint64 // the messages' bytes, compressed
}

// readBuffers lend the readers their buffers for as long as they hold unread bytes,
// so that an idle shard holds none: kept per connection, each would stay as large as
// the largest message the shard ever read (READY, a large GUILD_CREATE).
var readBuffers = sync.Pool{New: func() any { return new([]byte) }}

// maxLentBuffer is the largest buffer given back to readBuffers; larger ones (a big
// bot's READY) are left to the collector.
const maxLentBuffer = 256 << 10

func borrowBuffer() *[]byte { return readBuffers.Get().(*[]byte) }

// returnBuffer gives back the buffer lent as p, now b (grown, perhaps).
func returnBuffer(p *[]byte, b []byte) {
	if cap(b) <= maxLentBuffer {
		*p = b[:0]
		readBuffers.Put(p)
	}
}

// fill reads the next message when the current one is used up.
func (m *messageSource) fill() error {
	for m.off == len(m.buf) {
		typ, r, err := m.conn.Reader(noCancel)
		if err != nil {
			return err
		}
		if typ != websocket.MessageBinary {
			return fmt.Errorf("gateway sent a text message on a compressed connection")
		}
		if m.lent == nil {
			m.lent = borrowBuffer()
		}
		m.buf, m.off = (*m.lent)[:0], 0
		m.buf, err = readAll(r, m.buf)
		*m.lent = m.buf
		if err != nil {
			return err
		}
		m.wire.Add(uint64(len(m.buf)))
	}
	return nil
}

// consumed gives the buffer back once the decompressor has the whole message.
func (m *messageSource) consumed() {
	if m.off == len(m.buf) && m.lent != nil {
		returnBuffer(m.lent, m.buf)
		m.lent, m.buf, m.off = nil, nil, 0
	}
}

func (m *messageSource) Read(p []byte) (int, error) {
	if err := m.fill(); err != nil {
		return 0, err
	}
	n := copy(p, m.buf[m.off:])
	m.off += n
	m.consumed()
	return n, nil
}

func (m *messageSource) ReadByte() (byte, error) {
	if err := m.fill(); err != nil {
		return 0, err
	}
	b := m.buf[m.off]
	m.off++
	m.consumed()
	return b, nil
}

// readAll appends everything r has to buf, growing it geometrically; unlike io.ReadAll
// it reuses the caller's buffer from one message to the next.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// byteCounts are a shard's bytes in, summed over its connections. They are atomics,
// not fields under the shard's lock, because they grow with every message read.
type byteCounts struct {
	wire    atomic.Uint64 // as received: compressed when the connection is
	payload atomic.Uint64 // the JSON payloads, decompressed
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n *atomic.Uint64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(uint64(n))
	return n, err
}

// streamReader reads one payload after another from a decompressed stream. It asks
// the decompressor for more bytes only while the payload in its buffer is
// incomplete: a zlib or zstd reader blocks for the next websocket message once the
// current one is used up, so reading ahead of a complete payload would hold it back
// until the gateway sent something else. Each payload is scanned once when its
// bytes arrived in one read (the common case: the decompressor hands over all it
// has); a payload that takes several reads is framed by a cheap resumable pass
// (framer) and then scanned once whole, so a large READY is not rescanned per read.
type streamReader struct {
	r    io.Reader
	lent *[]byte // readBuffers' buffer, while buf holds unread bytes
	buf  []byte
	// first is what an idle reader waits with: it borrows a buffer only once the
	// stream's next bytes came, and asks the decompressor for nothing more meanwhile.
	first      [512]byte
	start, end int // the unread bytes: buf[start:end]
	frame      framer
	closeFn    func()
}

// streamReadSize is the least free space offered to the decompressor per read.
const streamReadSize = 16 << 10

func (s *streamReader) next(env *envelope) error {
	framing := false
	for {
		if s.start < s.end {
			data := s.buf[s.start:s.end]
			complete := true
			if framing {
				complete = s.frame.scan(data)
			}
			if complete {
				e, n, err := scanEnvelope(data)
				if err == nil {
					s.start += n
					e.D = bytes.Clone(e.D) // the handler owns Data; buf is reused
					*env = e
					if s.start == s.end {
						returnBuffer(s.lent, s.buf)
						s.lent, s.buf, s.start, s.end = nil, nil, 0, 0
					}
					return nil
				}
				if err != errIncomplete {
					return err
				}
				if !framing && len(data) > len(s.first) {
					framing = true
					s.frame = framer{}
					s.frame.scan(data)
				}
			}
		}
		if s.start > 0 {
			s.end = copy(s.buf, s.buf[s.start:s.end])
			s.start = 0
		}
		if s.lent == nil {
			// Idle: wait for the next bytes in this reader's own small buffer, and
			// borrow a large one only once they came.
			n, err := s.r.Read(s.first[:])
			if n == 0 {
				if err != nil {
					return err
				}
				continue
			}
			s.lent = borrowBuffer()
			s.buf = (*s.lent)[:cap(*s.lent)]
			if len(s.buf) < streamReadSize {
				s.buf = make([]byte, streamReadSize)
				*s.lent = s.buf
			}
			s.end = copy(s.buf, s.first[:n])
			if n < len(s.first) {
				continue // the decompressor had no more: scan what came
			}
			// first is full: more is likely there, read it before scanning.
		}
		if len(s.buf)-s.end < streamReadSize {
			s.buf = append(s.buf[:s.end], make([]byte, max(streamReadSize, len(s.buf)))...)
			s.buf = s.buf[:cap(s.buf)]
			*s.lent = s.buf
		}
		n, err := s.r.Read(s.buf[s.end:])
		s.end += n
		if err != nil && n == 0 {
			if err == io.EOF && skipSpace(s.buf[:s.end], 0) != s.end {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
}

func (s *streamReader) close() {
	if s.closeFn != nil {
		s.closeFn()
	}
}

// framer finds where the top-level value starting a buffer ends, without validating
// it, resumably: each call goes on from where the last stopped, so framing a
// payload costs one pass however many reads it arrives in.
type framer struct {
	pos      int // bytes of the value examined
	depth    int
	started  bool
	inString bool
	escaped  bool
}

// scan examines data (the value's bytes so far: those of the last call and more)
// and reports whether the
// first value in it is complete. A value that is not an object or array is left to
// the scanner at once.
func (f *framer) scan(data []byte) bool {
	for ; f.pos < len(data); f.pos++ {
		c := data[f.pos]
		switch {
		case f.inString:
			switch {
			case f.escaped:
				f.escaped = false
			case c == '\\':
				f.escaped = true
			case c == '"':
				f.inString = false
			}
		case c == '"':
			f.inString = true
		case c == '{' || c == '[':
			f.depth++
			f.started = true
		case c == '}' || c == ']':
			f.depth--
			if f.depth <= 0 {
				return true
			}
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
		default:
			if !f.started {
				return true
			}
		}
	}
	return false
}

// plainReader reads one uncompressed payload per text message, into a buffer
// lent by readBuffers for the time of the read.
type plainReader struct {
	conn  *websocket.Conn
	bytes *byteCounts
}

func (p *plainReader) next(env *envelope) error {
	typ, r, err := p.conn.Reader(noCancel)
	if err != nil {
		return err
	}
	if typ == websocket.MessageBinary {
		// Payload compression: the message is one complete zlib stream, with no
		// context shared with any other.
		zr, err := zlib.NewReader(&countingReader{r: r, n: &p.bytes.wire})
		if err != nil {
			return fmt.Errorf("compressed payload: %w", err)
		}
		defer zr.Close()
		r = zr
	}
	lent := borrowBuffer()
	buf, err := readAll(r, *lent)
	defer returnBuffer(lent, buf)
	if err != nil {
		return err
	}
	p.bytes.payload.Add(uint64(len(buf)))
	if typ != websocket.MessageBinary {
		p.bytes.wire.Add(uint64(len(buf)))
	}
	*env, err = decodeEnvelope(buf)
	return err
}

func (p *plainReader) close() {}

// noCancel is the context of every read: the websocket library arms a cancellation
// hook (context.AfterFunc, two allocations and a lock) for each frame read with a
// context that can end. A connection's end is one hook instead, in runConn, which
// drops the connection and so ends the read under way.
var noCancel = context.Background()

// newPayloadReader returns the reader for a connection made with compression c,
// counting its bytes in counts.
func newPayloadReader(conn *websocket.Conn, c Compression, counts *byteCounts) (payloadReader, error) {
	switch c {
	case CompressionNone, CompressionPayload:
		return &plainReader{conn: conn, bytes: counts}, nil
	case CompressionZlibStream:
		src := &messageSource{conn: conn, wire: &counts.wire}
		// zlib.NewReader reads the stream header, so it must not run before the first
		// message exists; lazyZlib defers it to the first read.
		return &streamReader{r: &countingReader{r: &lazyZlib{src: bufio.NewReaderSize(src, zlibReadAhead)}, n: &counts.payload}}, nil
	case CompressionZstdStream:
		src := &messageSource{conn: conn, wire: &counts.wire}
		// One synchronous decoder per connection: Discord never ends the zstd frame, and
		// only the synchronous decoder reads exactly one block at a time (io.ReadFull of
		// the sizes the block headers give) instead of reading ahead into messages that
		// have not arrived yet.
		zr, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, fmt.Errorf("zstd-stream decoder: %w", err)
		}
		return &streamReader{r: &countingReader{r: zr, n: &counts.payload}, closeFn: zr.Close}, nil
	}
	return nil, fmt.Errorf("unknown compression %q", c)
}

var newInflater = func(r io.Reader) io.Reader { return flate.NewReader(r) }

// zlibReadAhead is the bufio.Reader between a zlib-stream's messages and its
// inflater: klauspost's flate decodes from a *bufio.Reader without an interface call
// per byte. The bufio.Reader never reads past the current message (messageSource
// returns what the message has left), so it adds no wait; it is small because every
// idle shard keeps it.
const zlibReadAhead = 512

// lazyZlib opens the zlib stream on first use: it reads the stream's two-byte
// header and inflates the deflate data after it. It does not go through a zlib
// reader, which would sum adler32 over every byte inflated for a checksum that only
// ends a stream, and Discord's never ends.
type lazyZlib struct {
	src *bufio.Reader
	zr  io.Reader
}

func (l *lazyZlib) Read(p []byte) (int, error) {
	if l.zr == nil {
		var h [2]byte
		if _, err := io.ReadFull(l.src, h[:]); err != nil {
			return 0, fmt.Errorf("zlib-stream header: %w", err)
		}
		// RFC 1950: deflate (CM 8), window at most 32 KiB, header check, no preset dictionary.
		if h[0]&0x0f != 8 || h[0]>>4 > 7 || (uint16(h[0])<<8|uint16(h[1]))%31 != 0 || h[1]&0x20 != 0 {
			return 0, fmt.Errorf("zlib-stream header: %#x %#x is not a zlib header", h[0], h[1])
		}
		l.zr = newInflater(l.src)
	}
	return l.zr.Read(p)
}
