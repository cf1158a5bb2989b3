package fsm

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/raft"
)

// FSM is the replicated state. Reads may run concurrently with Apply.
type FSM struct {
	mu      sync.RWMutex
	st      state
	changed chan struct{} // closed and replaced on every change of applied index
}

// state is everything replicated. Assignments and resume states are indexed by shard:
// a slot with an empty Node (or SessionID) is empty.
type state struct {
	index   uint64
	config  Config
	members map[string]Member
	// drained holds operators' drains (MarkDrained), by node, with when: they
	// outlive the member entry, which a leave or a long failure removes.
	drained map[string]int64
	// gen is the current generation (FirstGen until a reshard switched), whose table
	// assign and resume are, of config.TotalShards slots.
	gen    uint64
	assign []Assignment
	resume []Resume
	// next is the generation a reshard is starting, nil when none is.
	next *nextGen
}

// nextGen is a reshard's generation: its own table, of Total slots.
type nextGen struct {
	Reshard
	assign []Assignment
	resume []Resume
}

func (s *state) clone() state {
	c := *s
	c.members = make(map[string]Member, len(s.members))
	for k, v := range s.members {
		c.members[k] = v
	}
	c.drained = maps.Clone(s.drained)
	c.assign = slices.Clone(s.assign)
	c.resume = slices.Clone(s.resume)
	if s.next != nil {
		c.next = &nextGen{Reshard: s.next.Reshard, assign: slices.Clone(s.next.assign), resume: slices.Clone(s.next.resume)}
	}
	return c
}

// genOf is a command's generation: 0, in commands written before there were
// generations (and by callers that never reshard), is the first.
func genOf(g uint64) uint64 {
	if g == 0 {
		return FirstGen
	}
	return g
}

// table is generation gen's assignments and resume states, and ok false when gen is
// neither the current generation nor the one a reshard is starting.
func (s *state) table(gen uint64) (assign []Assignment, resume []Resume, ok bool) {
	switch gen = genOf(gen); {
	case s.config.TotalShards != 0 && gen == s.gen:
		return s.assign, s.resume, true
	case s.next != nil && gen == s.next.Gen:
		return s.next.assign, s.next.resume, true
	}
	return nil, nil, false
}

// New returns an empty FSM.
func New() *FSM {
	return &FSM{st: state{members: map[string]Member{}, drained: map[string]int64{}, gen: FirstGen}, changed: make(chan struct{})}
}

var _ raft.BatchingFSM = (*FSM)(nil)

// Result is the Apply response of a command that was valid. Commands that act on a
// batch report the entries that no longer held (a stale owner, epoch or target).
type Result struct {
	Index   uint64
	Applied int
	Stale   []Stale
}

// Stale is one batch entry that changed nothing, and why.
type Stale struct {
	Shard  int
	Reason string
}

// ErrInvalid wraps every refusal of an invalid command.
var ErrInvalid = errors.New("invalid command")

// Apply implements raft.FSM. It returns *Result, or an error when the command was
// refused; a refused command changed nothing.
func (f *FSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applyLocked(l)
}

// ApplyBatch implements raft.BatchingFSM: one lock for a batch of log entries.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]any, len(logs))
	for i, l := range logs {
		out[i] = f.applyLocked(l)
	}
	return out
}

func (f *FSM) applyLocked(l *raft.Log) any {
	// Configuration changes and no-ops arrive in batches too; they are raft's own.
	if l.Type != raft.LogCommand {
		return nil
	}
	cmd, err := Decode(l.Data)
	if err != nil {
		return fmt.Errorf("%w at index %d: %v", ErrInvalid, l.Index, err)
	}
	res, err := f.st.apply(cmd, l.Index)
	if err != nil {
		return fmt.Errorf("%w at index %d: %s: %v", ErrInvalid, l.Index, cmdName(cmd.Type()), err)
	}
	// Only a command that applied moves the index: a refused one leaves the state,
	// its snapshot included, exactly as it was.
	f.advance(l.Index)
	return res
}

func (f *FSM) advance(index uint64) {
	if index > f.st.index {
		f.st.index = index
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

func cmdName(t CommandType) string {
	names := map[CommandType]string{
		CmdSetConfig: "set config", CmdUpsertMember: "upsert member", CmdMarkFailed: "mark failed",
		CmdDrain: "drain", CmdUndrain: "undrain", CmdRemoveMember: "remove member", CmdAssign: "assign", CmdRevoke: "revoke",
		CmdReleased: "released", CmdCheckpoint: "checkpoint", CmdClearResume: "clear resume", CmdMarkDrained: "mark drained",
		CmdStartReshard: "start reshard", CmdSwitchReshard: "switch reshard", CmdCancelReshard: "cancel reshard",
	}
	return names[t]
}

// apply validates cmd completely, then changes the state. Nothing is changed before
// the last check passed.
func (s *state) apply(cmd Command, index uint64) (*Result, error) {
	res := &Result{Index: index}
	if _, ok := cmd.(generational); ok && s.config.TotalShards == 0 {
		return nil, errors.New("no config yet: set the shard count first")
	}
	switch c := cmd.(type) {
	case *SetConfig:
		if err := c.Config.Validate(); err != nil {
			return nil, err
		}
		if s.config.TotalShards != 0 && c.Config.TotalShards != s.config.TotalShards {
			switch {
			case s.next != nil:
				return nil, fmt.Errorf("TotalShards cannot change from %d to %d while a reshard to %d runs", s.config.TotalShards, c.Config.TotalShards, s.next.Total)
			case s.anyAssigned():
				return nil, fmt.Errorf("TotalShards cannot change from %d to %d while shards are assigned: reshard instead", s.config.TotalShards, c.Config.TotalShards)
			}
		}
		if c.Config.TotalShards != len(s.assign) {
			// Nothing is assigned here; resume states of another shard count are
			// useless anyway (a session resumes only with the count it identified with).
			s.assign = make([]Assignment, c.Config.TotalShards)
			s.resume = make([]Resume, c.Config.TotalShards)
		}
		s.config = c.Config
	case *UpsertMember:
		if err := c.Member.validate(); err != nil {
			return nil, err
		}
		s.members[c.Member.ID] = c.Member
	case *MarkFailed:
		return res, s.setState(c.ID, Failed, c.At)
	case *Drain:
		return res, s.setState(c.ID, Draining, c.At)
	case *MarkDrained:
		m, ok := s.members[c.ID]
		if !ok {
			return nil, fmt.Errorf("no member %q", c.ID)
		}
		s.drained[c.ID] = c.At
		if m.State == Alive {
			return res, s.setState(c.ID, Draining, c.At)
		}
	case *Undrain:
		_, marked := s.drained[c.ID]
		m, ok := s.members[c.ID]
		switch {
		case !ok && !marked:
			return nil, fmt.Errorf("no member %q", c.ID)
		case !marked && m.State != Draining:
			return nil, fmt.Errorf("%s is %s, not draining", c.ID, m.State)
		}
		delete(s.drained, c.ID)
		if ok && m.State == Draining {
			return res, s.setState(c.ID, Alive, c.At)
		}
	case *RemoveMember:
		if _, ok := s.members[c.ID]; !ok {
			return nil, fmt.Errorf("no member %q", c.ID)
		}
		delete(s.members, c.ID)
	case *Assign:
		assign, _, ok := s.table(c.Gen)
		if !ok {
			res.staleAll(c.Gen, len(c.Moves), func(i int) int { return c.Moves[i].Shard })
			return res, nil
		}
		if err := s.checkBatch(len(assign), len(c.Moves), func(i int) (int, string) { return c.Moves[i].Shard, c.Moves[i].To }); err != nil {
			return nil, err
		}
		for _, m := range c.Moves {
			a := assign[m.Shard]
			switch to, ok := s.members[m.To]; {
			case a.Node != m.ExpectNode || a.Epoch != m.ExpectEpoch:
				res.stale(m.Shard, "owner changed: now %s", describe(a))
			case !ok || to.State != Alive:
				res.stale(m.Shard, "target %q is not an alive member", m.To)
			default:
				assign[m.Shard] = Assignment{Shard: m.Shard, Node: m.To, Epoch: index, Phase: Assigned}
				res.Applied++
			}
		}
	case *Revoke:
		assign, _, ok := s.table(c.Gen)
		if !ok {
			res.staleAll(c.Gen, len(c.Moves), func(i int) int { return c.Moves[i].Shard })
			return res, nil
		}
		if err := s.checkBatch(len(assign), len(c.Moves), func(i int) (int, string) { return c.Moves[i].Shard, c.Moves[i].ExpectNode }); err != nil {
			return nil, err
		}
		for _, m := range c.Moves {
			a := assign[m.Shard]
			if a.Node != m.ExpectNode || a.Epoch != m.ExpectEpoch || a.Phase != Assigned {
				res.stale(m.Shard, "owner changed: now %s", describe(a))
				continue
			}
			assign[m.Shard].Phase = Revoking
			res.Applied++
		}
	case *Released:
		assign, resume, ok := s.table(c.Gen)
		if !ok {
			res.staleAll(c.Gen, len(c.Shards), func(i int) int { return c.Shards[i].Shard })
			return res, nil
		}
		if err := s.checkBatch(len(assign), len(c.Shards), func(i int) (int, string) { return c.Shards[i].Shard, c.Node }); err != nil {
			return nil, err
		}
		for _, r := range c.Shards {
			if !owns(assign, c.Node, r.Shard, r.Epoch, res) {
				continue
			}
			assign[r.Shard] = Assignment{}
			setResume(resume, r.Shard, r.Epoch, r.Resume, c.At)
			res.Applied++
		}
	case *Checkpoint:
		assign, resume, ok := s.table(c.Gen)
		if !ok {
			res.staleAll(c.Gen, len(c.Entries), func(i int) int { return c.Entries[i].Shard })
			return res, nil
		}
		if err := s.checkBatch(len(assign), len(c.Entries), func(i int) (int, string) { return c.Entries[i].Shard, c.Node }); err != nil {
			return nil, err
		}
		for _, r := range c.Entries {
			if !owns(assign, c.Node, r.Shard, r.Epoch, res) {
				continue
			}
			setResume(resume, r.Shard, r.Epoch, r.Resume, c.At)
			res.Applied++
		}
	case *ClearResume:
		assign, resume, ok := s.table(c.Gen)
		if !ok {
			res.staleAll(c.Gen, len(c.Entries), func(i int) int { return c.Entries[i].Shard })
			return res, nil
		}
		if err := s.checkBatch(len(assign), len(c.Entries), func(i int) (int, string) { return c.Entries[i].Shard, c.Node }); err != nil {
			return nil, err
		}
		for _, r := range c.Entries {
			if !owns(assign, c.Node, r.Shard, r.Epoch, res) {
				continue
			}
			resume[r.Shard] = Resume{}
			res.Applied++
		}
	case *StartReshard:
		switch {
		case s.config.TotalShards == 0:
			return nil, errors.New("no config yet: set the shard count first")
		case s.next != nil:
			return nil, fmt.Errorf("a reshard to %d shards (generation %d) is already running", s.next.Total, s.next.Gen)
		case c.Gen != s.gen+1:
			return nil, fmt.Errorf("generation %d does not follow the current %d", c.Gen, s.gen)
		case c.Total < 1 || c.Total > MaxShards:
			return nil, fmt.Errorf("total %d must be in [1, %d]", c.Total, MaxShards)
		case c.Total == s.config.TotalShards:
			return nil, fmt.Errorf("the cluster already runs %d shards", c.Total)
		}
		s.next = &nextGen{Reshard: Reshard{Gen: c.Gen, Total: c.Total, StartedAt: c.At},
			assign: make([]Assignment, c.Total), resume: make([]Resume, c.Total)}
	case *SwitchReshard:
		if s.next == nil || s.next.Gen != c.Gen {
			return nil, fmt.Errorf("generation %d is not being started", c.Gen)
		}
		var missing []string
		for i, a := range s.next.assign {
			if a.Node == "" || a.Phase != Assigned {
				if missing = append(missing, strconv.Itoa(i)); len(missing) == 10 {
					missing = append(missing, "…")
					break
				}
			}
		}
		if len(missing) > 0 {
			return nil, fmt.Errorf("generation %d cannot become current: shards %s are not assigned", c.Gen, strings.Join(missing, ", "))
		}
		// The old generation's sessions end (their owners close them with 1000, not to
		// be resumed), so its table goes: a write for it from now on is stale.
		s.config.TotalShards, s.gen = s.next.Total, s.next.Gen
		s.assign, s.resume = s.next.assign, s.next.resume
		s.next = nil
	case *CancelReshard:
		if s.next == nil || s.next.Gen != c.Gen {
			return nil, fmt.Errorf("generation %d is not being started", c.Gen)
		}
		s.next = nil
	default:
		return nil, fmt.Errorf("%w %d", ErrUnknownCommand, cmd.Type())
	}
	return res, nil
}

func (s *state) setState(id string, st MemberState, at int64) error {
	m, ok := s.members[id]
	if !ok {
		return fmt.Errorf("no member %q", id)
	}
	m.State, m.Since = st, at
	s.members[id] = m
	return nil
}

// checkBatch validates a batch for a generation of total shards before anything in
// it applies: every shard is in range and appears once, and every node name is set.
func (s *state) checkBatch(total, n int, entry func(i int) (shard int, node string)) error {
	seen := make([]bool, total)
	for i := range n {
		shard, node := entry(i)
		switch {
		case shard < 0 || shard >= total:
			return fmt.Errorf("shard %d outside [0, %d)", shard, total)
		case seen[shard]:
			return fmt.Errorf("shard %d appears twice in one batch", shard)
		case node == "":
			return fmt.Errorf("shard %d: empty node ID", shard)
		}
		seen[shard] = true
	}
	return nil
}

// owns is the epoch fence: node may write for shard only while it holds the
// assignment written at epoch (being revoked still counts: it runs the shard until
// it releases it).
func owns(assign []Assignment, node string, shard int, epoch uint64, res *Result) bool {
	a := assign[shard]
	if a.Node != node || a.Epoch != epoch {
		res.stale(shard, "%s does not own it at epoch %d: %s", node, epoch, describe(a))
		return false
	}
	return true
}

func setResume(resume []Resume, shard int, epoch uint64, r ResumeData, at int64) {
	if r.SessionID == "" {
		resume[shard] = Resume{} // nothing to resume: the next owner identifies
		return
	}
	resume[shard] = Resume{Shard: shard, Position: r, Epoch: epoch, UpdatedAt: at}
}

func (s *state) anyAssigned() bool {
	return slices.ContainsFunc(s.assign, func(a Assignment) bool { return a.Node != "" })
}

func describe(a Assignment) string {
	if a.Node == "" {
		return "unassigned"
	}
	return fmt.Sprintf("%s at epoch %d (%s)", a.Node, a.Epoch, a.Phase)
}

// staleAll reports every entry of a batch for a generation that is not running: a
// plan or a checkpoint that raced a switch or a cancel.
func (r *Result) staleAll(gen uint64, n int, shard func(i int) int) {
	for i := range n {
		r.stale(shard(i), "generation %d is not running", genOf(gen))
	}
}

func (r *Result) stale(shard int, format string, args ...any) {
	r.Stale = append(r.Stale, Stale{Shard: shard, Reason: fmt.Sprintf(format, args...)})
}

// Read side.

// AppliedIndex is the Raft index of the last command that applied (or of the
// restored snapshot's last one). Refused commands and raft's own entries do not move
// it; raft.Raft.AppliedIndex counts those.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.index
}

// Config returns the cluster config; TotalShards is 0 until one was set.
func (f *FSM) Config() Config {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.config
}

// Members returns every member, by ID.
func (f *FSM) Members() []Member {
	f.mu.RLock()
	out := make([]Member, 0, len(f.st.members))
	for _, m := range f.st.members {
		out = append(out, m)
	}
	f.mu.RUnlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Drained returns the operators' drains (MarkDrained), by node, with when each began.
func (f *FSM) Drained() map[string]int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return maps.Clone(f.st.drained)
}

// Member returns one member.
func (f *FSM) Member(id string) (Member, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	m, ok := f.st.members[id]
	return m, ok
}

// Assignment returns a shard's owner in the current generation; ok is false for an
// unassigned or unknown shard.
func (f *FSM) Assignment(shard int) (Assignment, bool) { return f.AssignmentIn(0, shard) }

// Assignments returns every assignment of the current generation, by shard.
func (f *FSM) Assignments() []Assignment { return f.AssignmentsIn(0) }

// ShardsOf returns a node's assignments in the current generation, by shard.
func (f *FSM) ShardsOf(node string) []Assignment { return f.ShardsOfIn(0, node) }

// Resume returns a shard's resume state in the current generation; ok is false when
// there is none.
func (f *FSM) Resume(shard int) (Resume, bool) { return f.ResumeIn(0, shard) }

// Generation is the current generation: FirstGen until a reshard switched.
func (f *FSM) Generation() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.gen
}

// Reshard returns the generation a reshard is starting; ok is false when none is.
func (f *FSM) Reshard() (Reshard, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.st.next == nil {
		return Reshard{}, false
	}
	return f.st.next.Reshard, true
}

// tableLocked is generation gen's table (0: the current one) and its number.
func (f *FSM) tableLocked(gen uint64) ([]Assignment, []Resume, uint64) {
	if gen == 0 {
		gen = f.st.gen
	}
	a, r, _ := f.st.table(gen)
	return a, r, gen
}

// AssignmentIn is Assignment in generation gen (0: the current one).
func (f *FSM) AssignmentIn(gen uint64, shard int) (Assignment, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	assign, _, gen := f.tableLocked(gen)
	if shard < 0 || shard >= len(assign) || assign[shard].Node == "" {
		return Assignment{}, false
	}
	a := assign[shard]
	a.Gen = gen
	return a, true
}

// AssignmentsIn is Assignments in generation gen (0: the current one).
func (f *FSM) AssignmentsIn(gen uint64) []Assignment {
	return f.assignmentsWhere(gen, func(a Assignment) bool { return a.Node != "" })
}

// ShardsOfIn is ShardsOf in generation gen (0: the current one).
func (f *FSM) ShardsOfIn(gen uint64, node string) []Assignment {
	return f.assignmentsWhere(gen, func(a Assignment) bool { return a.Node == node })
}

func (f *FSM) assignmentsWhere(gen uint64, keep func(Assignment) bool) []Assignment {
	f.mu.RLock()
	defer f.mu.RUnlock()
	assign, _, gen := f.tableLocked(gen)
	var out []Assignment
	for _, a := range assign {
		if keep(a) {
			a.Gen = gen
			out = append(out, a)
		}
	}
	return out
}

// ResumeIn is Resume in generation gen (0: the current one).
func (f *FSM) ResumeIn(gen uint64, shard int) (Resume, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	_, resume, _ := f.tableLocked(gen)
	if shard < 0 || shard >= len(resume) || resume[shard].SessionID == "" {
		return Resume{}, false
	}
	return resume[shard], true
}

// WaitChange blocks until a command applied after index after, and returns it; the node
// watches the state with it instead of polling.
func (f *FSM) WaitChange(ctx context.Context, after uint64) (uint64, error) {
	for {
		f.mu.RLock()
		index, ch := f.st.index, f.changed
		f.mu.RUnlock()
		if index > after {
			return index, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return index, ctx.Err()
		}
	}
}
