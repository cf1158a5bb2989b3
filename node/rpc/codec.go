package rpc

import (
	"bufio"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"time"
)

// Limits of an RPC connection. gob accepts a message of up to 1 GiB and allocates it
// as soon as its length arrives, so the length is checked here first.
const (
	// MaxRequest bounds one message a caller sends: a checkpoint of every shard of a
	// node running 20,000 is about 2 MiB.
	MaxRequest = 4 << 20
	// MaxReply bounds one message of an answer (a node's shard list for status); the
	// asker dialed a node it knows, so this bound only stops a runaway.
	MaxReply = 64 << 20
	// IdleTimeout closes a connection that sent no request for this long; the pool
	// dials afresh before it reuses one idle for half of it.
	IdleTimeout = 5 * time.Minute
	// MessageTimeout bounds how long one message may take to arrive once its first
	// byte has, and how long a write may take: a slow peer cannot hold a connection
	// open by trickling bytes.
	MessageTimeout = 10 * time.Second
)

// The timeouts in force; tests shorten them.
var (
	idleTimeout    = IdleTimeout
	messageTimeout = MessageTimeout
)

// ErrTooLarge refuses a message over its limit, before it is read.
var ErrTooLarge = errors.New("rpc message over its size limit")

// hello is the first message of every connection: the caller names itself, and every
// RPC on the connection is the named node's.
type hello struct {
	From string
}

// frames reads a gob stream one message at a time: it checks each message's length
// against max before gob sees it, gives the message MessageTimeout to arrive, and
// lets the connection idle between messages for at most idle (zero: forever).
type frames struct {
	conn  net.Conn
	br    *bufio.Reader
	max   int
	idle  time.Duration
	first bool // the hello is due: no idling before it
	left  int  // bytes of the current message not read yet, its length included
}

func newFrames(conn net.Conn, max int, idle time.Duration) *frames {
	return &frames{conn: conn, br: bufio.NewReader(conn), max: max, idle: idle, first: true}
}

func (f *frames) Read(p []byte) (int, error) {
	if f.left == 0 {
		if err := f.next(); err != nil {
			return 0, err
		}
	}
	if len(p) > f.left {
		p = p[:f.left] // never into the next message, whose length is not checked yet
	}
	n, err := f.br.Read(p)
	f.left -= n
	return n, err
}

// next waits for the next message and checks its length, which gob encodes as one
// byte below 128, else as a negated byte count followed by that many big-endian bytes.
func (f *frames) next() error {
	switch {
	case f.first:
		f.conn.SetReadDeadline(time.Now().Add(messageTimeout))
		f.first = false
	case f.idle > 0:
		f.conn.SetReadDeadline(time.Now().Add(f.idle))
	default:
		f.conn.SetReadDeadline(time.Time{})
	}
	b, err := f.br.Peek(1)
	if err != nil {
		return err
	}
	f.conn.SetReadDeadline(time.Now().Add(messageTimeout))
	size, prefix := uint64(b[0]), 1
	if b[0] >= 0x80 {
		n := -int(int8(b[0]))
		if n < 1 || n > 8 {
			return fmt.Errorf("rpc: malformed message length (first byte %#x)", b[0])
		}
		if b, err = f.br.Peek(1 + n); err != nil {
			return err
		}
		size = 0
		for _, c := range b[1:] {
			size = size<<8 | uint64(c)
		}
		prefix += n
	}
	if size > uint64(f.max) {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, size, f.max)
	}
	f.left = prefix + int(size)
	return nil
}

// codec is net/rpc's gob codec over frames, with a deadline on every write. One type
// serves both ends: the server reads requests and writes responses, the client the
// other way round.
type codec struct {
	conn net.Conn
	dec  *gob.Decoder
	enc  *gob.Encoder
	buf  *bufio.Writer
}

func newCodec(conn net.Conn, maxIn int, idle time.Duration) *codec {
	buf := bufio.NewWriter(conn)
	return &codec{conn: conn, dec: gob.NewDecoder(newFrames(conn, maxIn, idle)), enc: gob.NewEncoder(buf), buf: buf}
}

// write sends a header and a body as one flush, within MessageTimeout.
func (c *codec) write(header, body any) error {
	c.conn.SetWriteDeadline(time.Now().Add(messageTimeout))
	if err := c.enc.Encode(header); err != nil {
		c.conn.Close()
		return err
	}
	if body != nil {
		if err := c.enc.Encode(body); err != nil {
			c.conn.Close()
			return err
		}
	}
	if err := c.buf.Flush(); err != nil {
		c.conn.Close()
		return err
	}
	return nil
}

func (c *codec) ReadRequestHeader(r *rpc.Request) error        { return c.dec.Decode(r) }
func (c *codec) ReadRequestBody(body any) error                { return c.dec.Decode(body) }
func (c *codec) WriteResponse(r *rpc.Response, body any) error { return c.write(r, body) }
func (c *codec) WriteRequest(r *rpc.Request, body any) error   { return c.write(r, body) }
func (c *codec) ReadResponseHeader(r *rpc.Response) error      { return c.dec.Decode(r) }
func (c *codec) ReadResponseBody(body any) error               { return c.dec.Decode(body) }
func (c *codec) Close() error                                  { return c.conn.Close() }

var (
	_ rpc.ServerCodec = (*codec)(nil)
	_ rpc.ClientCodec = (*codec)(nil)
	_ io.Reader       = (*frames)(nil)
)
