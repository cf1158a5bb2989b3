package leader

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/discluster/discluster/balancer"
	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/node/membership"
)

// Input is everything one reconcile decides from: the replicated state, the gossip
// view, what this leader remembers of its grants, and the time.
type Input struct {
	Now         time.Time
	Self        string
	Lease       time.Duration // the cluster's lease
	Established time.Time     // when this leader took over: its grace runs one lease from here
	MaxMoves    int
	TotalShards int
	Members     []fsm.Member
	// Drained are the operators' drains: such a node comes back draining.
	Drained map[string]int64
	// Gen is the current generation, whose table Assignments is: the plan's writes
	// name it (0 is the first).
	Gen         uint64
	Assignments []fsm.Assignment
	// Reshard is the generation a reshard is starting beside the current one, nil
	// when none is; ReshardAssignments is its table.
	Reshard            *fsm.Reshard
	ReshardAssignments []fsm.Assignment
	// Warm holds the reshard's shards whose owners report them warm (READY, every
	// guild arrived), with the epoch of the assignment each runs under.
	Warm   map[int]uint64
	Gossip []membership.Member
	// InRaft holds the nodes in the Raft configuration. A gossip member is recorded
	// only once it is there: the leader adds it to Raft only after reaching its
	// cluster port, so a stranger that got into the gossip pool (no key set) but has
	// no certificate for the cluster port is never given shards.
	InRaft map[string]bool
	Grants Grants
}

// Grants is what the leader keeps in memory about the other nodes: rebuilt, with a
// grace of one lease, by every new leader.
type Grants struct {
	// LastRenew is the last lease grant, by node.
	LastRenew map[string]time.Time
	// FailedAt is when this leader marked a node failed.
	FailedAt map[string]time.Time
	// Refused holds nodes whose cluster port refused a connection after they were
	// marked failed: the process is gone, its lease need not be waited out.
	Refused map[string]bool
	// Crashed holds nodes whose Raft heartbeat failed and whose cluster port then
	// refused a connection, with the time of the probe: the next reconcile marks them
	// failed without waiting for gossip's verdict. Heartbeats keep failing while the
	// node is being marked failed, so a verdict can outlive the failure it reports;
	// one older than the node's return is stale, not a second crash.
	Crashed map[string]time.Time
	// AskedWhileFailed holds failed nodes that asked for a lease since: proof, over
	// the cluster port, that a process runs there again. Gossip alone is not, as it
	// may not have noticed a crash yet.
	AskedWhileFailed map[string]bool
	// Unfit holds nodes that renew their lease but should hold no shards, with why
	// (Discord rejects their token): placement gives them weight 0 until they say
	// otherwise.
	Unfit map[string]string
}

func newGrants() Grants {
	return Grants{LastRenew: map[string]time.Time{}, FailedAt: map[string]time.Time{}, Refused: map[string]bool{},
		Crashed: map[string]time.Time{}, AskedWhileFailed: map[string]bool{}, Unfit: map[string]string{}}
}

func (g Grants) clone() Grants {
	return Grants{LastRenew: maps.Clone(g.LastRenew), FailedAt: maps.Clone(g.FailedAt), Refused: maps.Clone(g.Refused),
		Crashed: maps.Clone(g.Crashed), AskedWhileFailed: maps.Clone(g.AskedWhileFailed), Unfit: maps.Clone(g.Unfit)}
}

// Decision is what one reconcile does: the writes, in order, each made only if the
// one before it succeeded.
type Decision struct {
	// TakenCrashed are the crash verdicts this decision used up (or found stale).
	TakenCrashed []string
	Writes       []Write
}

// Write is one command and what follows from it once it is applied.
type Write struct {
	Cmd fsm.Command
	// Log is the line logged once the write is applied, at Level, with Attrs.
	Log   string
	Level slog.Level
	Attrs []any
	// Events are noted once the write is applied; with IfChanged, only when the
	// command changed the state.
	Events    []event.Event
	IfChanged bool
	// Failed names a node the write marks failed: the leader records when, and probes
	// its cluster port.
	Failed string
	// Back names a node the write makes alive again: its lease starts afresh.
	Back string
}

// Plan decides one reconcile: the member table in line with gossip and the leases,
// failures into revocations, then placement by the balancer, each step seeing the
// steps before it. It does no I/O; the loop around it writes and notes.
//
// While a reshard runs, its generation's table is planned beside the current one by
// the same rules: placed over the nodes by the balancer, each node within ±1 of its
// weighted share of the new count, and failed over when a node fails. Its planned
// moves (a rebalance, an operator's drain) wait for the switch, which makes it the
// current table: a shard of it being warmed would identify again where it lands.
// A leaving node's shards (its own drain, a SIGTERM) move at once: it cannot wait
// for a switch that may be minutes away, and a shard of the new generation only
// holds its events back, so the move costs a RESUME elsewhere from the position
// before the oldest event it held, which its next owner holds again. The plan
// writes the switch once every shard of it is assigned and its owner reports it warm.
func Plan(in Input) (Decision, error) {
	p := planner{in: in, members: map[string]fsm.Member{}, held: map[string]int{}}
	for _, m := range in.Members {
		p.members[m.ID] = m
	}
	p.tables = append(p.tables, p.newTable(in.Gen, in.TotalShards, in.Assignments, false))
	if in.Reshard != nil {
		p.tables = append(p.tables, p.newTable(in.Reshard.Gen, in.Reshard.Total, in.ReshardAssignments, true))
	}
	p.reconcileMembers()
	for _, tb := range p.tables {
		if err := p.place(tb); err != nil {
			return Decision{}, err
		}
	}
	p.switchReshard()
	return p.out, nil
}

type planner struct {
	in      Input
	members map[string]fsm.Member // the state as the writes so far leave it
	// tables are the current generation's, then a reshard's, as the writes so far
	// leave them.
	tables []*table
	// held counts each node's assignments, of any phase and generation; the member
	// steps of a plan revoke but never move a shard, so it holds for the whole plan.
	held map[string]int
	out  Decision
}

// table is one generation's assignments.
type table struct {
	gen   uint64
	total int
	asg   map[int]fsm.Assignment
	// next marks a reshard's generation, whose planned moves wait for its switch.
	next bool
}

func (p *planner) newTable(gen uint64, total int, asg []fsm.Assignment, next bool) *table {
	tb := &table{gen: gen, total: total, asg: make(map[int]fsm.Assignment, len(asg)), next: next}
	for _, a := range asg {
		tb.asg[a.Shard] = a
		p.held[a.Node]++
	}
	return tb
}

// eventGen is the generation an event about tb's shards names: a reshard's only,
// so that the current generation's events read as they always did.
func (tb *table) eventGen() uint64 {
	if tb.next {
		return tb.gen
	}
	return 0
}

func (p *planner) holds(id string) int { return p.held[id] }

// takeCrashed reports, once, that id's process was found gone since it last changed
// state (joined, came back). A process restarted after the probe is not gone.
func (p *planner) takeCrashed(id string, since int64) bool {
	probed, ok := p.in.Grants.Crashed[id]
	if !ok || slices.Contains(p.out.TakenCrashed, id) {
		return false
	}
	p.out.TakenCrashed = append(p.out.TakenCrashed, id)
	return probed.UnixNano() > since
}

func memberFromGossip(m membership.Member) fsm.Member {
	return fsm.Member{ID: m.Name, RaftAddr: m.RPCAddr, HTTPAddr: m.HTTPAddr, GossipAddr: m.GossipAddr, Weight: m.Weight}
}

func sameExceptState(a, b fsm.Member) bool {
	return a.ID == b.ID && a.RaftAddr == b.RaftAddr && a.HTTPAddr == b.HTTPAddr && a.GossipAddr == b.GossipAddr && a.Weight == b.Weight
}

func active(s fsm.MemberState) bool { return s == fsm.Alive || s == fsm.Draining }

// reconcileMembers brings the member table in line with gossip and the leases.
func (p *planner) reconcileMembers() {
	in := p.in
	now := in.Now
	graceOver := now.After(in.Established.Add(in.Lease))
	known := maps.Clone(p.members)
	seen := make(map[string]bool, len(in.Gossip))
	for _, m := range in.Gossip {
		seen[m.Name] = true
		want := memberFromGossip(m)
		cur, ok := known[m.Name]
		switch m.Status {
		case membership.StatusAlive:
			switch {
			case !ok && (in.InRaft[m.Name] || m.Name == in.Self):
				want.State, want.Since = p.aliveState(m.Name), now.UnixNano()
				p.upsert(want, event.NodeJoined, "node joined", "")
			case !ok:
				// Not in Raft yet: recorded on the pass after the leader adds it.
			case (cur.State == fsm.Left || cur.State == fsm.Failed && in.Grants.AskedWhileFailed[m.Name]) && p.holds(m.Name) == 0:
				want.State, want.Since = p.aliveState(m.Name), now.UnixNano()
				p.upsert(want, event.NodeBack, "node is back", m.Name)
			case !(cur.State == fsm.Failed || cur.State == fsm.Left) && !sameExceptState(cur, want):
				want.State, want.Since = cur.State, cur.Since
				p.upsert(want, "", "node updated", "")
			}
			if ok && active(cur.State) && m.Name != in.Self {
				last, renewed := in.Grants.LastRenew[m.Name]
				if !renewed {
					last = in.Established
				}
				switch silent := now.Sub(last); {
				case p.takeCrashed(m.Name, cur.Since):
					// Positive evidence, so no grace is needed; the port is probed
					// again once the shards are revoked, so a process that restarted
					// in between is never taken for a dead one.
					p.fail(m.Name, "its process is gone (Raft heartbeat failed, cluster port refuses connections)")
				case graceOver && silent > in.Lease:
					p.fail(m.Name, fmt.Sprintf("no lease renewal for %v (gossip still sees it: a partial partition, or a stuck process)", silent.Round(time.Millisecond)))
				}
			}
		case membership.StatusFailed:
			if ok && active(cur.State) && (p.takeCrashed(m.Name, cur.Since) || graceOver) {
				p.fail(m.Name, "gossip declared it dead")
			}
		case membership.StatusLeft:
			if ok {
				p.forget(cur, graceOver, "it left")
			}
		}
	}
	for _, id := range slices.Sorted(maps.Keys(known)) {
		if !seen[id] && id != in.Self {
			p.forget(known[id], graceOver, "gossip no longer knows it")
		}
	}
}

// aliveState is the state of a node that gossip sees alive and that is joining or
// coming back: draining if an operator drained it, whatever happened to it since.
func (p *planner) aliveState(id string) fsm.MemberState {
	if _, ok := p.in.Drained[id]; ok {
		return fsm.Draining
	}
	return fsm.Alive
}

func (p *planner) upsert(m fsm.Member, kind event.Kind, why, back string) {
	w := Write{Cmd: fsm.UpsertMember{Member: m}, Log: why, Level: slog.LevelInfo,
		Attrs: []any{"member", m.ID, "state", m.State, "weight", m.Weight}, Back: back}
	if kind != "" {
		w.Events = []event.Event{{Kind: kind, Subject: m.ID}}
	}
	p.out.Writes = append(p.out.Writes, w)
	p.members[m.ID] = m
}

func (p *planner) forget(m fsm.Member, graceOver bool, why string) {
	switch {
	case p.holds(m.ID) == 0:
		p.out.Writes = append(p.out.Writes, Write{Cmd: fsm.RemoveMember{ID: m.ID}, Log: "removed member", Level: slog.LevelInfo,
			Attrs: []any{"member", m.ID, "why", why}, Events: []event.Event{{Kind: event.NodeRemoved, Subject: m.ID, Cause: why}}})
		delete(p.members, m.ID)
	case active(p.members[m.ID].State) && graceOver:
		p.fail(m.ID, why+" while holding shards")
	}
}

// fail marks a node failed and revokes its shards. From then on it gets no lease, so
// once its last lease has run out (or at once, when its cluster port refuses
// connections) the shards can go elsewhere.
func (p *planner) fail(id, why string) {
	m := p.members[id]
	m.State, m.Since = fsm.Failed, p.in.Now.UnixNano()
	p.members[id] = m
	var revokes []Write
	var failedShards event.Shards
	held := 0
	for _, tb := range p.tables {
		var moves []fsm.RevokeMove
		var shards event.Shards
		for _, shard := range slices.Sorted(maps.Keys(tb.asg)) {
			a := tb.asg[shard]
			if a.Node != id {
				continue
			}
			held++
			if a.Phase == fsm.Assigned {
				moves = append(moves, fsm.RevokeMove{Shard: a.Shard, ExpectNode: a.Node, ExpectEpoch: a.Epoch})
				shards = append(shards, a.Shard)
				a.Phase = fsm.Revoking
				tb.asg[shard] = a
			}
		}
		if !tb.next {
			failedShards = shards
		}
		if len(moves) > 0 {
			revokes = append(revokes, Write{Cmd: fsm.Revoke{Gen: tb.gen, Moves: moves}, Log: "revoked shards of failed node",
				Level: slog.LevelInfo, Attrs: []any{"member", id, "shards", shards, "gen", genOf(tb.gen)}})
		}
	}
	p.out.Writes = append(p.out.Writes, Write{Cmd: fsm.MarkFailed{ID: id, At: p.in.Now.UnixNano()}, Failed: id,
		Log: "node failed", Level: slog.LevelWarn, Attrs: []any{"member", id, "why", why, "shards", held, "reassign_after", p.in.Lease},
		Events: []event.Event{{Kind: event.NodeFailed, Subject: id, Cause: why, Shards: failedShards}}})
	p.out.Writes = append(p.out.Writes, revokes...)
}

// genOf is the generation a table command's Gen names: 0 is the first.
func genOf(gen uint64) uint64 { return max(gen, fsm.FirstGen) }

// fenced reports whether a failed owner can no longer be running its shards: its
// process is gone, or the last lease this leader granted it has run out. The owner
// counts its lease from before it asked, so it expires no later than the grant plus
// one lease; a node that never renewed under this leader is waited out from the
// leader's start, as the grace does.
func fenced(in Input, owner string) bool {
	return in.Grants.Refused[owner] || in.Now.After(fenceAt(in, owner))
}

// fenceAt is when a failed owner's last lease must have run out. A tenth of the
// lease covers clock rate differences and the grant's flight time.
func fenceAt(in Input, owner string) time.Time {
	since, ok := in.Grants.LastRenew[owner]
	if !ok {
		since = in.Established
	}
	return since.Add(in.Lease + in.Lease/10)
}

// place applies the balancer's plan to one generation's table: revocations for
// shards to evacuate or rebalance, assignments for unassigned shards and for fenced
// shards of failed nodes. A reshard's generation takes only the placements and the
// moves off a node that cannot run its shards (failed, left, gone, or unfit).
func (p *planner) place(tb *table) error {
	in := p.in
	bin := balancer.Input{TotalShards: tb.total, MaxMoves: in.MaxMoves}
	for _, id := range slices.Sorted(maps.Keys(p.members)) {
		m := p.members[id]
		bs, err := balancerState(m.State)
		if err != nil {
			return fmt.Errorf("cannot place shards: node %s: %w", m.ID, err)
		}
		w := m.Weight
		if in.Grants.Unfit[m.ID] != "" {
			w = 0 // it renews its lease, but its shards could not log in
		}
		bin.Members = append(bin.Members, balancer.Member{ID: m.ID, Weight: w, State: bs})
	}
	forced := make(map[int]fsm.Assignment)
	for _, shard := range slices.Sorted(maps.Keys(tb.asg)) {
		a := tb.asg[shard]
		m, ok := p.members[a.Node]
		if a.Phase == fsm.Revoking && (!ok || m.State == fsm.Failed || m.State == fsm.Left) && fenced(in, a.Node) {
			forced[a.Shard] = a // placed as if unassigned, but the move names its old owner
			continue
		}
		bp, err := balancerPhase(a.Phase)
		if err != nil {
			return fmt.Errorf("cannot place shards: shard %d: %w", a.Shard, err)
		}
		bin.Assignments = append(bin.Assignments, balancer.Assignment{Shard: a.Shard, Node: a.Node, Epoch: a.Epoch, Phase: bp})
	}
	plan, err := balancer.Compute(bin)
	if err != nil {
		return fmt.Errorf("the balancer refused the state: %w", err)
	}
	revoke, assign := fsm.Revoke{Gen: tb.gen}, fsm.Assign{Gen: tb.gen}
	var revoked, assigned event.Shards
	var whys []string
	for _, mv := range plan.Moves {
		switch {
		case mv.Reason == balancer.Place:
			m := fsm.AssignMove{Shard: mv.Shard, To: mv.To}
			if a, ok := forced[mv.Shard]; ok {
				m.ExpectNode, m.ExpectEpoch = a.Node, a.Epoch
			}
			assign.Moves = append(assign.Moves, m)
			assigned = append(assigned, mv.Shard)
		case tb.next && !p.gone(mv.From) && !p.leaving(mv.From) && p.in.Grants.Unfit[mv.From] == "":
			// A planned move of a shard being warmed: it waits for the switch. (A
			// node Discord rejects the token of cannot warm its shards, nor can a
			// node that leaves: they move.)
		default:
			revoke.Moves = append(revoke.Moves, fsm.RevokeMove{Shard: mv.Shard, ExpectNode: mv.From, ExpectEpoch: mv.FromEpoch})
			revoked = append(revoked, mv.Shard)
			if why := p.moveWhy(mv); !slices.Contains(whys, why) {
				whys = append(whys, why)
			}
		}
	}
	if len(revoke.Moves) > 0 {
		p.out.Writes = append(p.out.Writes, Write{Cmd: revoke, Log: "revoking shards", Level: slog.LevelInfo,
			Attrs: []any{"shards", revoked, "gen", genOf(tb.gen), "why", strings.Join(whys, "; "), "plan", plan.Reason}, IfChanged: true,
			Events: []event.Event{{Kind: event.Revoking, Shards: revoked, Gen: tb.eventGen(), Cause: strings.Join(whys, "; ")}}})
	}
	if len(assign.Moves) > 0 {
		w := Write{Cmd: assign, Log: "assigned shards", Level: slog.LevelInfo,
			Attrs: []any{"shards", assigned, "gen", genOf(tb.gen), "from_failed_nodes", len(forced), "plan", plan.Reason}}
		w.Events = p.failovers(tb, assign.Moves)
		p.out.Writes = append(p.out.Writes, w)
	}
	return nil
}

// gone reports whether a shard's owner can no longer run it: failed, left, or no
// longer a member. Moving such a shard is a failover, never a planned move.
func (p *planner) gone(owner string) bool {
	m, ok := p.members[owner]
	return !ok || m.State == fsm.Failed || m.State == fsm.Left
}

// leaving reports whether a node is draining by its own drain, not an operator's:
// only a node that leaves writes one (node.Leave, on SIGTERM), and it waits for its
// shards to move before it goes.
func (p *planner) leaving(id string) bool {
	m, ok := p.members[id]
	_, operator := p.in.Drained[id]
	return ok && m.State == fsm.Draining && !operator
}

// switchReshard writes the switch once the reshard's every shard is assigned, its
// owner active, and warm under that very assignment: from that command on, the new
// generation delivers and the old one's sessions end.
func (p *planner) switchReshard() {
	r := p.in.Reshard
	if r == nil {
		return
	}
	tb := p.tables[1]
	for shard := range tb.total {
		a, ok := tb.asg[shard]
		if !ok || a.Phase != fsm.Assigned || p.gone(a.Node) {
			return
		}
		if epoch, warm := p.in.Warm[shard]; !warm || epoch != a.Epoch {
			return
		}
	}
	took := p.in.Now.Sub(time.Unix(0, r.StartedAt)).Round(time.Millisecond)
	cause := fmt.Sprintf("from %d to %d shards", p.in.TotalShards, r.Total)
	p.out.Writes = append(p.out.Writes, Write{Cmd: fsm.SwitchReshard{Gen: r.Gen, At: p.in.Now.UnixNano()},
		Log: "reshard switched: the new generation delivers", Level: slog.LevelInfo,
		Attrs:  []any{"gen", r.Gen, "from", p.in.TotalShards, "to", r.Total, "took", took},
		Events: []event.Event{{Kind: event.ReshardSwitched, Gen: r.Gen, Duration: took, Cause: cause}}})
}

// moveWhy says, in words, why a shard leaves its owner.
func (p *planner) moveWhy(mv balancer.Move) string {
	if mv.Reason == balancer.Rebalance {
		return "rebalancing toward " + mv.To
	}
	m, ok := p.members[mv.From]
	switch {
	case !ok:
		return mv.From + " is gone"
	case p.in.Grants.Unfit[mv.From] != "":
		return mv.From + " holds no shards: " + p.in.Grants.Unfit[mv.From]
	case p.leaving(mv.From):
		return mv.From + " is leaving"
	case m.State == fsm.Draining:
		return "drain of " + mv.From
	case m.Weight == 0:
		return mv.From + " has weight 0"
	}
	return mv.From + " is " + m.State.String()
}

// failovers are the events of shards of failed nodes reassigned: per failed node,
// how long its shards waited between the node being marked failed and now.
func (p *planner) failovers(tb *table, moves []fsm.AssignMove) []event.Event {
	by := map[string]event.Shards{}
	for _, m := range moves {
		if m.ExpectNode != "" {
			by[m.ExpectNode] = append(by[m.ExpectNode], m.Shard)
		}
	}
	var out []event.Event
	for _, node := range slices.Sorted(maps.Keys(by)) {
		cause, reason := "lease expired", event.ReasonLeaseExpired
		if p.in.Grants.Refused[node] {
			cause, reason = "process gone (port refused): no lease wait", event.ReasonProcessGone
		}
		e := event.Event{Kind: event.Failover, Subject: node, Shards: by[node], Gen: tb.eventGen(), Cause: cause, Reason: reason}
		if since, ok := p.in.Grants.FailedAt[node]; ok {
			e.Duration = p.in.Now.Sub(since).Round(time.Millisecond)
		} else {
			e.Cause += " (failed under an earlier leader)"
		}
		out = append(out, e)
	}
	return out
}
