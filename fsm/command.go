package fsm

import (
	"errors"
	"fmt"
	"time"

	"github.com/discluster/discluster/session"
)

// CommandType is the first byte of every command. The numbers are written out by hand
// and only ever appended to: a replica replays logs written by older versions, so a
// number must never change meaning or be reused.
type CommandType uint8

const (
	CmdSetConfig     CommandType = 1
	CmdUpsertMember  CommandType = 2
	CmdMarkFailed    CommandType = 3
	CmdDrain         CommandType = 4
	CmdRemoveMember  CommandType = 5
	CmdAssign        CommandType = 6
	CmdRevoke        CommandType = 7
	CmdReleased      CommandType = 8
	CmdCheckpoint    CommandType = 9
	CmdClearResume   CommandType = 10
	CmdUndrain       CommandType = 11
	CmdMarkDrained   CommandType = 12
	CmdStartReshard  CommandType = 13
	CmdSwitchReshard CommandType = 14
	CmdCancelReshard CommandType = 15
)

// The encoding versions of a command (its second byte). A replica refuses a version it
// does not know rather than misreading it. Version 2 adds the generation to the
// commands of a shard table; they are written in version 1 while it is the first
// generation, so that agents of the version before reshards keep reading the log of
// a cluster that never resharded (a rolling upgrade).
const (
	commandVersion    = 1
	commandVersionGen = 2
)

// generational is a command for one generation's table.
type generational interface{ generation() uint64 }

// Command is a change to the replicated state. Encode takes a command by value or
// pointer; Decode returns pointers.
type Command interface {
	Type() CommandType
	encode(e *encoder)
}

type decodable interface {
	Command
	decode(d *decoder)
}

// SetConfig sets the cluster configuration.
type SetConfig struct{ Config Config }

// UpsertMember adds a member or replaces what is known of it.
type UpsertMember struct{ Member Member }

// MarkFailed marks a member failed (gossip declared it dead) as of At.
type MarkFailed struct {
	ID string
	At int64
}

// Drain marks a member draining: it keeps its shards until they are moved off.
type Drain struct {
	ID string
	At int64
}

// MarkDrained is an operator's drain: the member takes no shards until Undrain, across
// every restart, failure and removal of it. An alive member becomes draining at once;
// a failed or absent one comes back draining. (Drain alone, a leaving node's, lasts
// only while the member does.)
type MarkDrained struct {
	ID string
	At int64
}

// Undrain ends a drain: a draining member is alive again and takes shards from then
// on, and an operator's drain is forgotten.
type Undrain struct {
	ID string
	At int64
}

// RemoveMember forgets a member.
type RemoveMember struct{ ID string }

// AssignMove gives Shard to To, if it is still owned by ExpectNode at ExpectEpoch
// (ExpectNode "" and ExpectEpoch 0: if it is still unassigned).
type AssignMove struct {
	Shard       int
	ExpectNode  string
	ExpectEpoch uint64
	To          string
}

// Assign is a batch of moves in generation Gen (0: the first); each is re-checked at
// commit.
type Assign struct {
	Gen   uint64
	Moves []AssignMove
}

// RevokeMove asks ExpectNode to give Shard up, if it still owns it at ExpectEpoch.
type RevokeMove struct {
	Shard       int
	ExpectNode  string
	ExpectEpoch uint64
}

// Revoke is a batch of revocations in generation Gen (0: the first).
type Revoke struct {
	Gen   uint64
	Moves []RevokeMove
}

// ResumeData is a shard's Discord session as its owner last saw it.
type ResumeData = session.Position

// Release is one shard a node stopped, with its final resume state.
type Release struct {
	Shard  int
	Epoch  uint64
	Resume ResumeData
}

// Released reports shards Node stopped: their assignments end and their final resume
// states are kept for the next owner.
type Released struct {
	Gen    uint64 // 0: the first generation
	Node   string
	At     int64
	Shards []Release
}

// CheckpointEntry is one shard's resume state under the assignment epoch it runs at.
type CheckpointEntry struct {
	Shard  int
	Epoch  uint64
	Resume ResumeData
}

// Checkpoint is every shard's resume state from one node, in one command.
type Checkpoint struct {
	Gen     uint64 // 0: the first generation
	Node    string
	At      int64
	Entries []CheckpointEntry
}

// ClearEntry drops one shard's resume state (its session was invalidated), fenced by
// the owner's epoch.
type ClearEntry struct {
	Shard int
	Epoch uint64
}

// ClearResume is a batch of ClearEntry from one node.
type ClearResume struct {
	Gen     uint64 // 0: the first generation
	Node    string
	Entries []ClearEntry
}

// StartReshard starts generation Gen (the current one's successor) of Total shards
// beside the current one, with an empty table for the leader to place.
type StartReshard struct {
	Gen   uint64
	Total int
	At    int64
}

// SwitchReshard makes generation Gen, every shard of it assigned, the current one:
// from here its shards deliver and the old generation's end.
type SwitchReshard struct {
	Gen uint64
	At  int64
}

// CancelReshard drops generation Gen before its switch; its sessions end.
type CancelReshard struct {
	Gen uint64
	At  int64
}

func (SetConfig) Type() CommandType     { return CmdSetConfig }
func (UpsertMember) Type() CommandType  { return CmdUpsertMember }
func (MarkFailed) Type() CommandType    { return CmdMarkFailed }
func (Drain) Type() CommandType         { return CmdDrain }
func (Undrain) Type() CommandType       { return CmdUndrain }
func (MarkDrained) Type() CommandType   { return CmdMarkDrained }
func (RemoveMember) Type() CommandType  { return CmdRemoveMember }
func (Assign) Type() CommandType        { return CmdAssign }
func (Revoke) Type() CommandType        { return CmdRevoke }
func (Released) Type() CommandType      { return CmdReleased }
func (Checkpoint) Type() CommandType    { return CmdCheckpoint }
func (ClearResume) Type() CommandType   { return CmdClearResume }
func (StartReshard) Type() CommandType  { return CmdStartReshard }
func (SwitchReshard) Type() CommandType { return CmdSwitchReshard }
func (CancelReshard) Type() CommandType { return CmdCancelReshard }

func (c Assign) generation() uint64      { return c.Gen }
func (c Revoke) generation() uint64      { return c.Gen }
func (c Released) generation() uint64    { return c.Gen }
func (c Checkpoint) generation() uint64  { return c.Gen }
func (c ClearResume) generation() uint64 { return c.Gen }

// Encode returns the bytes to propose with raft.Apply.
func Encode(c Command) []byte {
	e := &encoder{buf: make([]byte, 0, 64)}
	e.byte(byte(c.Type()))
	g, ok := c.(generational)
	if !ok || genOf(g.generation()) == FirstGen {
		e.byte(commandVersion)
		c.encode(e)
		return e.buf
	}
	e.byte(commandVersionGen)
	c.encode(e)
	e.uvarint(g.generation())
	return e.buf
}

// ErrUnknownCommand is returned for a type byte this version does not know: a log
// written by a newer version. It is refused, never skipped, so replicas cannot drift.
var ErrUnknownCommand = errors.New("unknown command type")

// Decode parses a command; any malformation is an error.
func Decode(p []byte) (Command, error) {
	if len(p) < 2 {
		return nil, fmt.Errorf("decode command: %d bytes, want at least 2", len(p))
	}
	c := newCommand(CommandType(p[0]))
	if c == nil {
		return nil, fmt.Errorf("decode command: %w %d (written by a newer discluster?)", ErrUnknownCommand, p[0])
	}
	_, hasGen := c.(generational)
	if p[1] != commandVersion && (p[1] != commandVersionGen || !hasGen) {
		return nil, fmt.Errorf("decode command type %d: unknown encoding version %d", p[0], p[1])
	}
	d := &decoder{buf: p[2:]}
	c.decode(d)
	if p[1] == commandVersionGen {
		gen := d.uvarint()
		if d.err == nil && gen <= FirstGen {
			d.fail(fmt.Errorf("generation %d written in version %d", gen, commandVersionGen))
		}
		setGeneration(c, gen)
	}
	d.end()
	if d.err != nil {
		return nil, fmt.Errorf("decode command type %d: %w", p[0], d.err)
	}
	return c, nil
}

func newCommand(t CommandType) decodable {
	switch t {
	case CmdSetConfig:
		return &SetConfig{}
	case CmdUpsertMember:
		return &UpsertMember{}
	case CmdMarkFailed:
		return &MarkFailed{}
	case CmdDrain:
		return &Drain{}
	case CmdUndrain:
		return &Undrain{}
	case CmdMarkDrained:
		return &MarkDrained{}
	case CmdRemoveMember:
		return &RemoveMember{}
	case CmdAssign:
		return &Assign{}
	case CmdRevoke:
		return &Revoke{}
	case CmdReleased:
		return &Released{}
	case CmdCheckpoint:
		return &Checkpoint{}
	case CmdClearResume:
		return &ClearResume{}
	case CmdStartReshard:
		return &StartReshard{}
	case CmdSwitchReshard:
		return &SwitchReshard{}
	case CmdCancelReshard:
		return &CancelReshard{}
	}
	return nil
}

// setGeneration sets a decoded generational command's generation.
func setGeneration(c Command, gen uint64) {
	switch c := c.(type) {
	case *Assign:
		c.Gen = gen
	case *Revoke:
		c.Gen = gen
	case *Released:
		c.Gen = gen
	case *Checkpoint:
		c.Gen = gen
	case *ClearResume:
		c.Gen = gen
	}
}

func (c Config) encode(e *encoder) {
	e.int(c.TotalShards)
	e.int(c.MaxConcurrency)
	e.int(c.ShardsPerCluster)
	e.varint(int64(c.IdentifyWindow))
	e.varint(int64(c.Lease))
	e.varint(int64(c.CheckpointInterval))
}

func (c *Config) decode(d *decoder) {
	c.TotalShards = d.int()
	c.MaxConcurrency = d.int()
	c.ShardsPerCluster = d.int()
	c.IdentifyWindow = time.Duration(d.varint())
	c.Lease = time.Duration(d.varint())
	c.CheckpointInterval = time.Duration(d.varint())
}

func (m Member) encode(e *encoder) {
	e.str(m.ID)
	e.str(m.RaftAddr)
	e.str(m.GossipAddr)
	e.str(m.HTTPAddr)
	e.int(m.Weight)
	e.byte(byte(m.State))
	e.varint(m.Since)
}

func (m *Member) decode(d *decoder) {
	m.ID = d.str()
	m.RaftAddr = d.str()
	m.GossipAddr = d.str()
	m.HTTPAddr = d.str()
	m.Weight = d.int()
	m.State = MemberState(d.byte())
	m.Since = d.varint()
}

func encodePosition(e *encoder, r ResumeData) {
	e.str(r.SessionID)
	e.varint(r.Seq)
	e.str(r.ResumeURL)
}

func decodePosition(d *decoder, r *ResumeData) {
	r.SessionID = d.str()
	r.Seq = d.varint()
	r.ResumeURL = d.str()
}

func (c SetConfig) encode(e *encoder)     { c.Config.encode(e) }
func (c *SetConfig) decode(d *decoder)    { c.Config.decode(d) }
func (c UpsertMember) encode(e *encoder)  { c.Member.encode(e) }
func (c *UpsertMember) decode(d *decoder) { c.Member.decode(d) }
func (c MarkFailed) encode(e *encoder)    { e.str(c.ID); e.varint(c.At) }
func (c *MarkFailed) decode(d *decoder)   { c.ID = d.str(); c.At = d.varint() }
func (c Drain) encode(e *encoder)         { e.str(c.ID); e.varint(c.At) }
func (c *Drain) decode(d *decoder)        { c.ID = d.str(); c.At = d.varint() }
func (c Undrain) encode(e *encoder)       { e.str(c.ID); e.varint(c.At) }
func (c MarkDrained) encode(e *encoder)   { e.str(c.ID); e.varint(c.At) }
func (c *MarkDrained) decode(d *decoder)  { c.ID = d.str(); c.At = d.varint() }
func (c *Undrain) decode(d *decoder)      { c.ID = d.str(); c.At = d.varint() }
func (c RemoveMember) encode(e *encoder)  { e.str(c.ID) }
func (c *RemoveMember) decode(d *decoder) { c.ID = d.str() }

func (c Assign) encode(e *encoder) {
	e.uvarint(uint64(len(c.Moves)))
	for _, m := range c.Moves {
		e.int(m.Shard)
		e.str(m.ExpectNode)
		e.uvarint(m.ExpectEpoch)
		e.str(m.To)
	}
}

func (c *Assign) decode(d *decoder) {
	c.Moves = make([]AssignMove, d.count(4))
	for i := range c.Moves {
		c.Moves[i] = AssignMove{Shard: d.int(), ExpectNode: d.str(), ExpectEpoch: d.uvarint(), To: d.str()}
	}
}

func (c Revoke) encode(e *encoder) {
	e.uvarint(uint64(len(c.Moves)))
	for _, m := range c.Moves {
		e.int(m.Shard)
		e.str(m.ExpectNode)
		e.uvarint(m.ExpectEpoch)
	}
}

func (c *Revoke) decode(d *decoder) {
	c.Moves = make([]RevokeMove, d.count(3))
	for i := range c.Moves {
		c.Moves[i] = RevokeMove{Shard: d.int(), ExpectNode: d.str(), ExpectEpoch: d.uvarint()}
	}
}

func (c Released) encode(e *encoder) {
	e.str(c.Node)
	e.varint(c.At)
	e.uvarint(uint64(len(c.Shards)))
	for _, r := range c.Shards {
		e.int(r.Shard)
		e.uvarint(r.Epoch)
		encodePosition(e, r.Resume)
	}
}

func (c *Released) decode(d *decoder) {
	c.Node = d.str()
	c.At = d.varint()
	c.Shards = make([]Release, d.count(5))
	for i := range c.Shards {
		c.Shards[i].Shard = d.int()
		c.Shards[i].Epoch = d.uvarint()
		decodePosition(d, &c.Shards[i].Resume)
	}
}

func (c Checkpoint) encode(e *encoder) {
	e.str(c.Node)
	e.varint(c.At)
	e.uvarint(uint64(len(c.Entries)))
	for _, r := range c.Entries {
		e.int(r.Shard)
		e.uvarint(r.Epoch)
		encodePosition(e, r.Resume)
	}
}

func (c *Checkpoint) decode(d *decoder) {
	c.Node = d.str()
	c.At = d.varint()
	c.Entries = make([]CheckpointEntry, d.count(5))
	for i := range c.Entries {
		c.Entries[i].Shard = d.int()
		c.Entries[i].Epoch = d.uvarint()
		decodePosition(d, &c.Entries[i].Resume)
	}
}

func (c ClearResume) encode(e *encoder) {
	e.str(c.Node)
	e.uvarint(uint64(len(c.Entries)))
	for _, r := range c.Entries {
		e.int(r.Shard)
		e.uvarint(r.Epoch)
	}
}

func (c *ClearResume) decode(d *decoder) {
	c.Node = d.str()
	c.Entries = make([]ClearEntry, d.count(2))
	for i := range c.Entries {
		c.Entries[i] = ClearEntry{Shard: d.int(), Epoch: d.uvarint()}
	}
}

func (c StartReshard) encode(e *encoder) { e.uvarint(c.Gen); e.int(c.Total); e.varint(c.At) }
func (c *StartReshard) decode(d *decoder) {
	c.Gen, c.Total, c.At = d.uvarint(), d.int(), d.varint()
}
func (c SwitchReshard) encode(e *encoder)  { e.uvarint(c.Gen); e.varint(c.At) }
func (c *SwitchReshard) decode(d *decoder) { c.Gen, c.At = d.uvarint(), d.varint() }
func (c CancelReshard) encode(e *encoder)  { e.uvarint(c.Gen); e.varint(c.At) }
func (c *CancelReshard) decode(d *decoder) { c.Gen, c.At = d.uvarint(), d.varint() }
