// Package storecheck looks at a bbolt file (Raft's log and stable store) before the
// node opens it, so that a damaged file is refused with one line that says what is
// wrong, instead of a SIGBUS or an assertion panic from deep inside bbolt, or a
// silent start from nothing.
//
// It must never write the file: it only reads, and bbolt opens it read-only here.
package storecheck

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"strings"
	"time"

	"go.etcd.io/bbolt"
)

// ErrDamaged wraps every finding.
var ErrDamaged = errors.New("damaged")

// bbolt's on-disk constants (go.etcd.io/bbolt/internal/common).
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	pageHeaderSize = 16
	metaSize       = 64 // up to and with the checksum
	maxPageSize    = 64 << 10
)

// meta is what the check needs of one of bbolt's two meta pages.
type meta struct {
	pageSize uint32
	freelist uint64
	root     uint64
	pgid     uint64 // the high-water mark: pages in use
	txid     uint64
}

// readMeta decodes the meta page at off; ok is false when it is not a valid one.
func readMeta(b []byte, off int) (meta, bool) {
	if off+pageHeaderSize+metaSize > len(b) {
		return meta{}, false
	}
	m := b[off+pageHeaderSize : off+pageHeaderSize+metaSize]
	le := binary.LittleEndian
	h := fnv.New64a()
	h.Write(m[:56])
	if le.Uint32(m[0:]) != boltMagic || le.Uint32(m[4:]) != boltVersion || le.Uint64(m[56:]) != h.Sum64() {
		return meta{}, false
	}
	return meta{pageSize: le.Uint32(m[8:]), root: le.Uint64(m[16:]), freelist: le.Uint64(m[32:]),
		pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}, true
}

// Check reports whether the bbolt file at path can be opened safely: it is absent
// (a new node) or complete and consistent. A file that is empty, shorter than its
// own header says, or with a page that fails bbolt's consistency check is
// ErrDamaged, with what was found.
func Check(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	if size == 0 {
		return fmt.Errorf("%w: the file is empty (0 bytes)", ErrDamaged)
	}
	head := make([]byte, min(size, 2*maxPageSize))
	if _, err := io.ReadFull(f, head); err != nil {
		return fmt.Errorf("%w: cannot read its header: %v", ErrDamaged, err)
	}
	best, found := meta{}, false
	consider := func(m meta, ok bool) {
		if ok && m.pageSize >= 512 && m.pageSize <= maxPageSize && (!found || m.txid > best.txid) {
			best, found = m, true
		}
	}
	m0, ok0 := readMeta(head, 0)
	consider(m0, ok0)
	// The second meta page sits one page in; the first may be the damaged one, so
	// try the common page sizes as well as the one it names.
	for _, ps := range []int{int(m0.pageSize), os.Getpagesize(), 4096, 16384, 65536} {
		if ps > 0 {
			consider(readMeta(head, ps))
		}
	}
	if !found {
		return fmt.Errorf("%w: no valid header (meta page): not a bbolt file, or both headers overwritten", ErrDamaged)
	}
	if need := int64(best.pgid) * int64(best.pageSize); size < need {
		return fmt.Errorf("%w: truncated: %d bytes, its header says %d pages of %d bytes (%d bytes)", ErrDamaged, size, best.pgid, best.pageSize, need)
	}
	if best.root >= best.pgid || best.freelist >= best.pgid && best.freelist != ^uint64(0) {
		return fmt.Errorf("%w: its header points past the end of the file", ErrDamaged)
	}
	// Another process holding the file (a running agent) is not damage: bbolt's
	// ErrTimeout comes back as it is.
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if errors.Is(err, bbolt.ErrTimeout) {
		return err
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	defer db.Close()
	return db.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			// Check reports a page that trips bbolt's assertions with the panic's text.
			return fmt.Errorf("%w: bbolt's consistency check: %s", ErrDamaged, strings.TrimPrefix(err.Error(), "panic: "))
		}
		return nil
	})
}
