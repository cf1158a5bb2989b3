package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// maxString bounds every string field: ids, addresses, URLs and session ids are short.
const maxString = 4096

// encoder appends a compact binary encoding: varints and length-prefixed strings.
type encoder struct{ buf []byte }

func (e *encoder) byte(b byte)      { e.buf = append(e.buf, b) }
func (e *encoder) uvarint(v uint64) { e.buf = binary.AppendUvarint(e.buf, v) }
func (e *encoder) varint(v int64)   { e.buf = binary.AppendVarint(e.buf, v) }
func (e *encoder) int(v int)        { e.varint(int64(v)) }
func (e *encoder) str(s string) {
	e.uvarint(uint64(len(s)))
	e.buf = append(e.buf, s...)
}

var errTruncated = errors.New("truncated")

// decoder reads what encoder wrote. The first error sticks; every later read returns
// zero values, so decoding code reads straight through and checks err once.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.buf) == 0 {
		d.fail(errTruncated)
		return 0
	}
	b := d.buf[0]
	d.buf = d.buf[1:]
	return b
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 || !minimal(d.buf, n) {
		d.fail(varintErr(n))
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.buf)
	if n <= 0 || !minimal(d.buf, n) {
		d.fail(varintErr(n))
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

// int reads a varint that must fit an int32-sized range: shard ids, weights, counts.
func (d *decoder) int() int {
	v := d.varint()
	if v < -1<<31 || v > 1<<31-1 {
		d.fail(fmt.Errorf("integer %d out of range", v))
		return 0
	}
	return int(v)
}

func (d *decoder) str() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > maxString || n > uint64(len(d.buf)) {
		d.fail(fmt.Errorf("string of %d bytes: %w", n, errTruncated))
		return ""
	}
	s := string(d.buf[:n])
	d.buf = d.buf[n:]
	return s
}

// count reads a batch length, bounded by what the remaining bytes could hold (each
// entry takes at least minEntry bytes), so garbage cannot make us allocate gigabytes.
func (d *decoder) count(minEntry int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(len(d.buf)/minEntry) {
		d.fail(fmt.Errorf("batch of %d entries in %d bytes: %w", n, len(d.buf), errTruncated))
		return 0
	}
	return int(n)
}

// end fails if bytes are left over: a command is exactly its encoding.
func (d *decoder) end() {
	if d.err == nil && len(d.buf) != 0 {
		d.fail(fmt.Errorf("%d trailing bytes", len(d.buf)))
	}
}

// minimal reports whether the n-byte varint at the start of p is in its shortest
// form: a longer form (a last byte of 0) would give one command two encodings.
func minimal(p []byte, n int) bool { return n == 1 || p[n-1] != 0 }

// varintErr explains a varint that binary.Uvarint or minimal refused.
func varintErr(n int) error {
	switch {
	case n == 0:
		return errTruncated
	case n < 0:
		return errors.New("varint overflows 64 bits")
	}
	return errors.New("varint not in its shortest form")
}
