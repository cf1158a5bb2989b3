package fsm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/hashicorp/raft"
)

// A snapshot is a header (magic, format version, applied index) followed by records,
// each a type byte, a length and a body, ending with recEnd. Record types are
// append-only like command types.
const (
	snapshotMagic   = "DCFSM"
	snapshotVersion = 1

	recConfig byte = 1
	recMember byte = 2
	recAssign byte = 3
	recResume byte = 4
	// recDrained is an operator's drain: a node name and when it began.
	recDrained byte = 5
	// recGen is the current generation when it is not the first; recNext a reshard's
	// generation, and recNextAssign, recNextResume its table (the bodies of recAssign
	// and recResume). A snapshot of a cluster that never resharded has none of them,
	// so the agents of the version before reshards read it.
	recGen        byte = 6
	recNext       byte = 7
	recNextAssign byte = 8
	recNextResume byte = 9
	recEnd        byte = 255
)

// maxRecord bounds one record's body; the largest is a member, far below it.
const maxRecord = 64 << 10

// Snapshot implements raft.FSM: it copies the state (cheap: two slices and a map), so
// Persist can stream it while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &snapshot{st: f.st.clone()}, nil
}

type snapshot struct{ st state }

// Persist writes the snapshot to sink.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.st.write(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *snapshot) Release() {}

func (st *state) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	e := &encoder{}
	e.buf = append(e.buf, snapshotMagic...)
	e.byte(snapshotVersion)
	e.uvarint(st.index)
	record := func(typ byte, body func(*encoder)) error {
		b := &encoder{buf: e.buf[:0]}
		body(b)
		e.buf = b.buf
		hdr := &encoder{}
		hdr.byte(typ)
		hdr.uvarint(uint64(len(b.buf)))
		if _, err := bw.Write(hdr.buf); err != nil {
			return err
		}
		_, err := bw.Write(b.buf)
		return err
	}
	if _, err := bw.Write(e.buf); err != nil {
		return err
	}
	if st.config.TotalShards != 0 {
		if err := record(recConfig, st.config.encode); err != nil {
			return err
		}
	}
	ids := make([]string, 0, len(st.members))
	for id := range st.members {
		ids = append(ids, id)
	}
	slices.Sort(ids) // byte-identical snapshots on every replica
	for _, id := range ids {
		if err := record(recMember, st.members[id].encode); err != nil {
			return err
		}
	}
	drained := make([]string, 0, len(st.drained))
	for id := range st.drained {
		drained = append(drained, id)
	}
	slices.Sort(drained)
	for _, id := range drained {
		if err := record(recDrained, func(e *encoder) { e.str(id); e.varint(st.drained[id]) }); err != nil {
			return err
		}
	}
	if st.gen != FirstGen {
		if err := record(recGen, func(e *encoder) { e.uvarint(st.gen) }); err != nil {
			return err
		}
	}
	table := func(recA, recR byte, assign []Assignment, resume []Resume) error {
		for _, a := range assign {
			if a.Node == "" {
				continue
			}
			if err := record(recA, func(e *encoder) {
				e.int(a.Shard)
				e.str(a.Node)
				e.uvarint(a.Epoch)
				e.byte(byte(a.Phase))
			}); err != nil {
				return err
			}
		}
		for _, r := range resume {
			if r.SessionID == "" {
				continue
			}
			if err := record(recR, func(e *encoder) {
				e.int(r.Shard)
				encodePosition(e, r.Position)
				e.uvarint(r.Epoch)
				e.varint(r.UpdatedAt)
			}); err != nil {
				return err
			}
		}
		return nil
	}
	if err := table(recAssign, recResume, st.assign, st.resume); err != nil {
		return err
	}
	if n := st.next; n != nil {
		if err := record(recNext, func(e *encoder) { StartReshard{Gen: n.Gen, Total: n.Total, At: n.StartedAt}.encode(e) }); err != nil {
			return err
		}
		if err := table(recNextAssign, recNextResume, n.assign, n.resume); err != nil {
			return err
		}
	}
	if err := bw.WriteByte(recEnd); err != nil {
		return err
	}
	return bw.Flush()
}

// Restore implements raft.FSM: it reads a whole snapshot into a new state, validates
// it, and only then replaces the current state. On any error the FSM is unchanged.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, err := readSnapshot(bufio.NewReaderSize(rc, 64<<10))
	if err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st = st
	close(f.changed)
	f.changed = make(chan struct{})
	return nil
}

var errCorrupt = errors.New("corrupt snapshot")

func readSnapshot(r *bufio.Reader) (state, error) {
	st := state{members: map[string]Member{}, drained: map[string]int64{}, gen: FirstGen}
	magic := make([]byte, len(snapshotMagic)+1)
	if _, err := io.ReadFull(r, magic); err != nil {
		return st, fmt.Errorf("%w: header: %v", errCorrupt, err)
	}
	if string(magic[:len(snapshotMagic)]) != snapshotMagic {
		return st, fmt.Errorf("%w: not a discluster snapshot", errCorrupt)
	}
	if v := magic[len(snapshotMagic)]; v != snapshotVersion {
		return st, fmt.Errorf("snapshot format version %d is not supported (this build reads %d)", v, snapshotVersion)
	}
	index, err := readUvarint(r)
	if err != nil {
		return st, fmt.Errorf("%w: index: %v", errCorrupt, err)
	}
	st.index = index
	var body []byte
	for {
		typ, err := r.ReadByte()
		if err != nil {
			return st, fmt.Errorf("%w: missing end record: %v", errCorrupt, err)
		}
		if typ == recEnd {
			if _, err := r.ReadByte(); err != io.EOF {
				return st, fmt.Errorf("%w: data after the end record", errCorrupt)
			}
			return st, st.check()
		}
		n, err := readUvarint(r)
		if err != nil || n > maxRecord {
			return st, fmt.Errorf("%w: record length %d: %v", errCorrupt, n, err)
		}
		body = slices.Grow(body[:0], int(n))[:n]
		if _, err := io.ReadFull(r, body); err != nil {
			return st, fmt.Errorf("%w: record: %v", errCorrupt, err)
		}
		d := &decoder{buf: body}
		if err := st.readRecord(typ, d); err != nil {
			return st, fmt.Errorf("%w: %v", errCorrupt, err)
		}
		d.end()
		if d.err != nil {
			return st, fmt.Errorf("%w: record type %d: %v", errCorrupt, typ, d.err)
		}
	}
}

func readUvarint(r *bufio.Reader) (uint64, error) {
	var buf [10]byte
	for i := range buf {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		buf[i] = b
		if b < 0x80 {
			d := &decoder{buf: buf[:i+1]}
			return d.uvarint(), d.err
		}
	}
	return 0, errors.New("varint too long")
}

func (st *state) readRecord(typ byte, d *decoder) error {
	switch typ {
	case recConfig:
		if st.config.TotalShards != 0 {
			return errors.New("two config records")
		}
		st.config.decode(d)
		if d.err != nil {
			return d.err
		}
		if err := st.config.Validate(); err != nil {
			return err
		}
		st.assign = make([]Assignment, st.config.TotalShards)
		st.resume = make([]Resume, st.config.TotalShards)
	case recMember:
		var m Member
		m.decode(d)
		if d.err != nil {
			return d.err
		}
		if err := m.validate(); err != nil {
			return err
		}
		if _, dup := st.members[m.ID]; dup {
			return fmt.Errorf("member %q twice", m.ID)
		}
		st.members[m.ID] = m
	case recDrained:
		id, at := d.str(), d.varint()
		if d.err != nil {
			return d.err
		}
		if id == "" {
			return errors.New("drain record without a node")
		}
		if _, dup := st.drained[id]; dup {
			return fmt.Errorf("drain of %q twice", id)
		}
		st.drained[id] = at
	case recGen:
		if st.gen != FirstGen {
			return errors.New("two generation records")
		}
		if st.gen = d.uvarint(); d.err == nil && st.gen <= FirstGen {
			return fmt.Errorf("generation record of %d", st.gen)
		}
	case recNext:
		var c StartReshard
		c.decode(d)
		switch {
		case d.err != nil:
			return d.err
		case st.config.TotalShards == 0:
			return errors.New("reshard record before the config record")
		case st.next != nil:
			return errors.New("two reshard records")
		case c.Gen != st.gen+1 || c.Total < 1 || c.Total > MaxShards || c.Total == st.config.TotalShards:
			return fmt.Errorf("reshard to generation %d of %d shards after generation %d of %d", c.Gen, c.Total, st.gen, st.config.TotalShards)
		}
		st.next = &nextGen{Reshard: Reshard{Gen: c.Gen, Total: c.Total, StartedAt: c.At},
			assign: make([]Assignment, c.Total), resume: make([]Resume, c.Total)}
	case recAssign, recNextAssign:
		a := Assignment{Shard: d.int(), Node: d.str(), Epoch: d.uvarint(), Phase: Phase(d.byte())}
		if d.err != nil {
			return d.err
		}
		assign, _, err := st.slot(typ == recNextAssign, a.Shard)
		if err != nil {
			return err
		}
		switch {
		case a.Node == "" || a.Phase > Revoking:
			return fmt.Errorf("shard %d: bad assignment", a.Shard)
		case assign[a.Shard].Node != "":
			return fmt.Errorf("shard %d assigned twice", a.Shard)
		}
		assign[a.Shard] = a
	case recResume, recNextResume:
		r := Resume{Shard: d.int()}
		decodePosition(d, &r.Position)
		r.Epoch, r.UpdatedAt = d.uvarint(), d.varint()
		if d.err != nil {
			return d.err
		}
		_, resume, err := st.slot(typ == recNextResume, r.Shard)
		if err != nil {
			return err
		}
		switch {
		case r.SessionID == "":
			return fmt.Errorf("shard %d: resume state without a session", r.Shard)
		case resume[r.Shard].SessionID != "":
			return fmt.Errorf("shard %d: two resume states", r.Shard)
		}
		resume[r.Shard] = r
	default:
		return fmt.Errorf("unknown record type %d", typ)
	}
	return nil
}

// slot is the table a shard record goes to, the current generation's or (next) the
// reshard's, once its shard is checked to be in range.
func (st *state) slot(next bool, shard int) ([]Assignment, []Resume, error) {
	assign, resume := st.assign, st.resume
	switch {
	case st.config.TotalShards == 0:
		return nil, nil, errors.New("shard record before the config record")
	case next && st.next == nil:
		return nil, nil, errors.New("reshard shard record before the reshard record")
	case next:
		assign, resume = st.next.assign, st.next.resume
	}
	if shard < 0 || shard >= len(assign) {
		return nil, nil, fmt.Errorf("shard %d outside [0, %d)", shard, len(assign))
	}
	return assign, resume, nil
}

// check validates what records cannot check alone.
func (st *state) check() error {
	var bad []string
	tables := [][]Assignment{st.assign}
	if st.next != nil {
		tables = append(tables, st.next.assign)
	}
	for _, assign := range tables {
		for _, a := range assign {
			if a.Node != "" && a.Epoch > st.index {
				bad = append(bad, fmt.Sprintf("shard %d epoch %d is after the snapshot index %d", a.Shard, a.Epoch, st.index))
			}
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", errCorrupt, strings.Join(bad, "; "))
	}
	return nil
}
