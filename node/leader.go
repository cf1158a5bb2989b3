package node

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hashicorp/serf/serf"

	"github.com/discluster/discluster/balancer"
	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/shard"
	"github.com/discluster/discluster/transport"
)

// leaderState is what only the leader keeps, in memory: it is rebuilt, with a grace
// of one lease, by every new leader.
type leaderState struct {
	ctx         context.Context
	established time.Time

	mu        sync.Mutex
	gate      *shard.LocalGate
	lastRenew map[string]time.Time // lease grants, by node
	failedAt  map[string]time.Time // when this leader marked a node failed
	refused   map[string]bool      // the node's cluster port refused a connection: the process is gone
	// crashed holds nodes whose Raft heartbeat failed and whose cluster port then
	// refused a connection, with the time of the probe: the next reconcile marks them
	// failed without waiting for gossip's verdict. Heartbeats keep failing while the
	// node is being marked failed, so a verdict can outlive the failure it reports;
	// one older than the node's return is stale, not a second crash.
	crashed map[string]time.Time
	// askedWhileFailed holds failed nodes that asked for a lease since: proof, over
	// the cluster port, that a process runs there again. Gossip alone is not, as it
	// may not have noticed a crash yet.
	askedWhileFailed map[string]bool
	budget           Budget
	lowLogged        time.Time
	configErr        string
}

// Budget is the cluster's daily session start budget, as the leader tracks it.
type Budget struct {
	Known     bool      `json:"known"`
	Total     int       `json:"total"`
	Remaining int       `json:"remaining"` // as Discord said at FetchedAt, minus the starts granted since
	Reserve   int       `json:"reserve"`
	ResetsAt  time.Time `json:"resets_at,omitzero"`
	FetchedAt time.Time `json:"fetched_at,omitzero"`
	Low       bool      `json:"low"`
	Note      string    `json:"note,omitempty"`
}

// monitorLeadership runs the leader loop while this node leads. It reads raft's
// NotifyCh, which is ordered and reliable, and waits for one loop to end before it
// starts the next.
func (n *Node) monitorLeadership(notify <-chan bool) {
	var running *leaderRun
	for {
		select {
		case leading := <-notify:
			switch {
			case leading && running == nil:
				running = n.startLeaderLoop()
			case !leading && running != nil:
				n.log.Info("lost leadership")
				running.stop()
				running = nil
			}
		case <-n.ctx.Done():
			if running != nil {
				running.stop()
			}
			return
		}
	}
}

// leaderRun is one leader loop in progress.
type leaderRun struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *leaderRun) stop() {
	r.cancel()
	<-r.done
}

func (n *Node) startLeaderLoop() *leaderRun {
	ctx, cancel := context.WithCancel(n.ctx)
	r := &leaderRun{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		n.leaderLoop(ctx)
	}()
	return r
}

func (n *Node) leaderLoop(ctx context.Context) {
	for {
		if err := n.raft.Barrier(10 * time.Second).Error(); err == nil {
			break
		} else if !sleepCtx(ctx, 200*time.Millisecond) {
			return
		}
	}
	ls := &leaderState{
		ctx: ctx, established: time.Now(),
		lastRenew: make(map[string]time.Time), failedAt: make(map[string]time.Time), refused: make(map[string]bool),
		crashed: make(map[string]time.Time), askedWhileFailed: make(map[string]bool),
	}
	n.leader.Store(ls)
	defer n.leader.Store(nil)
	n.log.Info("became leader", "term", n.raft.CurrentTerm(), "applied", n.raft.AppliedIndex(),
		"grace", n.leaseDuration())
	n.note("became leader (term %d)", n.raft.CurrentTerm())

	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.refreshBudget(ctx, ls)
	}()
	tick := time.NewTicker(n.cfg.Timing.ReconcileInterval)
	defer tick.Stop()
	for {
		n.reconcile(ctx, ls)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-n.leaderPoke:
		}
	}
}

func (n *Node) pokeLeader() {
	select {
	case n.leaderPoke <- struct{}{}:
	default:
	}
}

// reconcile is one full pass: Raft configuration, the member table, failures, then
// placement. Each step reads the state afresh; a step that fails is retried on the
// next pass.
func (n *Node) reconcile(ctx context.Context, ls *leaderState) {
	if ctx.Err() != nil {
		return
	}
	members := n.ourMembers()
	n.reconcileRaft(members)
	if err := n.ensureConfig(ctx, ls); err != nil {
		ls.mu.Lock()
		if ls.configErr != err.Error() {
			n.log.Error("cannot set the shard configuration", "err", err)
		}
		ls.configErr = err.Error()
		ls.mu.Unlock()
		return
	}
	n.reconcileMembers(ctx, ls, members)
	n.reconcileShards(ctx, ls)
}

// ourMembers is the gossip pool minus nodes of other clusters.
func (n *Node) ourMembers() []serf.Member {
	cluster := n.clusterID()
	var out []serf.Member
	for _, m := range n.serf.Members() {
		if c := m.Tags[tagCluster]; c != "" && cluster != "" && c != cluster {
			continue
		}
		if m.Tags[tagRPC] == "" {
			continue // not a discluster agent
		}
		out = append(out, m)
	}
	return out
}

// reconcileRaft adds alive members to the Raft configuration (voters up to --voters,
// then non-voters), removes members that left or were reaped, and promotes a
// non-voter when a voter is gone. Failed members stay: removing them would shrink
// the quorum on a guess.
func (n *Node) reconcileRaft(members []serf.Member) {
	fut := n.raft.GetConfiguration()
	if err := fut.Error(); err != nil {
		return
	}
	servers := fut.Configuration().Servers
	inRaft := make(map[raft.ServerID]raft.Server, len(servers))
	voters := 0
	for _, s := range servers {
		inRaft[s.ID] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	status := make(map[string]serf.MemberStatus, len(members))
	for _, m := range members {
		status[m.Name] = m.Status
	}
	self := raft.ServerID(n.cfg.Name)
	for _, m := range members {
		id, addr := raft.ServerID(m.Name), raft.ServerAddress(m.Tags[tagRPC])
		s, ok := inRaft[id]
		switch {
		case m.Status == serf.StatusAlive && !ok:
			var f raft.IndexFuture
			if voters < n.cfg.Voters {
				f = n.raft.AddVoter(id, addr, 0, 10*time.Second)
				voters++
			} else {
				f = n.raft.AddNonvoter(id, addr, 0, 10*time.Second)
			}
			if err := f.Error(); err != nil {
				n.log.Warn("cannot add node to raft", "node", m.Name, "err", err)
				return
			}
			n.log.Info("added node to raft", "node", m.Name, "addr", addr, "voter", voters <= n.cfg.Voters)
		case m.Status == serf.StatusAlive && s.Address != addr && id != self:
			// The node came back at another address: Raft must forget the old one.
			if err := n.raft.RemoveServer(id, 0, 10*time.Second).Error(); err != nil {
				return
			}
			n.log.Info("node moved; re-adding it to raft", "node", m.Name, "from", s.Address, "to", addr)
			return // the next pass adds it at the new address
		case m.Status == serf.StatusLeft && ok && id != self:
			// A voter leaving while another is dead would leave the dead one half of
			// the quorum: remove the dead ones first, while they are a minority.
			voters -= n.removeFailedVoters(servers, status, 0)
			if err := n.raft.RemoveServer(id, 0, 10*time.Second).Error(); err != nil {
				return
			}
			if s.Suffrage == raft.Voter {
				voters--
			}
			n.log.Info("removed node from raft: it left", "node", m.Name)
		}
	}
	for _, s := range servers {
		if _, known := status[string(s.ID)]; !known && s.ID != self {
			// Reaped by gossip: gone for longer than --reap-after.
			if err := n.raft.RemoveServer(s.ID, 0, 10*time.Second).Error(); err == nil {
				n.log.Info("removed node from raft: forgotten by gossip", "node", s.ID)
				if s.Suffrage == raft.Voter {
					voters--
				}
			}
		}
	}
	voters -= n.removeFailedVoters(servers, status, 2*n.leaseDuration())
	for _, s := range servers {
		if voters >= n.cfg.Voters {
			break
		}
		if s.Suffrage == raft.Nonvoter && status[string(s.ID)] == serf.StatusAlive {
			if err := n.raft.AddVoter(s.ID, s.Address, 0, 10*time.Second).Error(); err == nil {
				voters++
				n.log.Info("promoted node to voter", "node", s.ID)
			}
		}
	}
}

// removeFailedVoters removes from the Raft configuration the voters that gossip has
// seen failed for longer than after (with after 0, that the leader marked failed), when they are a minority of the voters (the rule
// of Consul's autopilot): a dead voter still counts in the quorum, and one more
// failure would then stop the cluster. A removed node that comes back is added again.
// It returns how many it removed.
func (n *Node) removeFailedVoters(servers []raft.Server, status map[string]serf.MemberStatus, after time.Duration) int {
	var failed, voters []raft.Server
	for _, s := range servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters = append(voters, s)
		// A leave (after 0) cannot wait for gossip's verdict on a voter the leader
		// already failed (its process found gone): the leaver would take the quorum.
		if string(s.ID) == n.cfg.Name || status[string(s.ID)] != serf.StatusFailed && after > 0 {
			continue
		}
		if m, ok := n.fsm.Member(string(s.ID)); ok && m.State == fsm.Failed && time.Since(time.Unix(0, m.Since)) >= after {
			failed = append(failed, s)
		}
	}
	if len(failed) == 0 || len(failed) > (len(voters)-1)/2 {
		return 0
	}
	removed := 0
	for _, s := range failed {
		if err := n.raft.RemoveServer(s.ID, 0, 10*time.Second).Error(); err != nil {
			n.log.Warn("cannot remove failed voter from raft", "node", s.ID, "err", err)
			continue
		}
		removed++
		n.log.Warn("removed failed voter from raft so that one more failure does not stop the cluster; it is added back when it returns", "node", s.ID)
	}
	return removed
}

// ensureConfig writes the shard configuration once: from the flags, or from Discord.
func (n *Node) ensureConfig(ctx context.Context, ls *leaderState) error {
	cur := n.fsm.Config()
	if cur.TotalShards != 0 {
		if n.cfg.Shards != 0 && n.cfg.Shards != cur.TotalShards {
			ls.mu.Lock()
			if ls.configErr == "" {
				n.log.Warn("ignoring --shards: the cluster already runs another count (resharding is not supported yet)",
					"flag", n.cfg.Shards, "cluster", cur.TotalShards)
				ls.configErr = "shards mismatch"
			}
			ls.mu.Unlock()
		}
		n.ensureGate(ls, cur)
		return nil
	}
	c := fsm.Config{
		TotalShards: n.cfg.Shards, MaxConcurrency: n.cfg.MaxConcurrency, ShardsPerCluster: n.cfg.ShardsPerCluster,
		IdentifyWindow: n.cfg.IdentifyWindow, Lease: n.cfg.Lease, CheckpointInterval: n.cfg.CheckpointInterval,
	}
	if c.TotalShards == 0 || c.MaxConcurrency == 0 {
		gb, err := n.gatewayBot(ctx)
		switch {
		case err != nil && c.TotalShards == 0:
			return fmt.Errorf("--shards auto needs GET /gateway/bot: %w", err)
		case err != nil:
			n.log.Warn("cannot ask Discord for max_concurrency; using 1", "err", err)
			c.MaxConcurrency = 1
		default:
			if c.TotalShards == 0 {
				c.TotalShards = gb.Shards
			}
			if c.MaxConcurrency == 0 {
				c.MaxConcurrency = gb.SessionStartLimit.MaxConcurrency
			}
		}
	}
	if _, err := n.applyLocal(fsm.SetConfig{Config: c}); err != nil {
		return err
	}
	n.log.Info("shard configuration set", "shards", c.TotalShards, "max_concurrency", c.MaxConcurrency,
		"identify_window", c.IdentifyWindow)
	n.ensureGate(ls, c)
	return nil
}

// ensureGate makes the cluster-wide identify gate once the configuration is known. A
// new leader's gate holds its first grants for one window and the arrival margin: it
// cannot know when the previous leader last granted, only that it granted nothing
// after this leader's election (grants are confirmed with VerifyLeader), and a shard
// drops a grant that reaches it after it heard of the new leader.
func (n *Node) ensureGate(ls *leaderState, c fsm.Config) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.gate != nil {
		return
	}
	g, err := shard.NewLocalGate(c.MaxConcurrency, c.IdentifyWindow)
	if err != nil {
		n.log.Error("identify gate", "err", err)
		return
	}
	g.HoldUntil(ls.established.Add(c.IdentifyWindow + shard.ArrivalMargin(c.IdentifyWindow)))
	ls.gate = g
}

func (n *Node) gatewayBot(ctx context.Context) (shard.GatewayBot, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return shard.FetchGatewayBot(ctx, nil, n.cfg.APIBase, n.cfg.Token)
}

// refreshBudget keeps the session start budget from Discord, whose count is the
// truth: a new leader asks at once, then every minute.
func (n *Node) refreshBudget(ctx context.Context, ls *leaderState) {
	for {
		gb, err := n.gatewayBot(ctx)
		ls.mu.Lock()
		if err != nil {
			ls.budget.Note = "cannot read session_start_limit: " + err.Error()
		} else {
			l := gb.SessionStartLimit
			reserve := n.cfg.SessionReserve
			if reserve == 0 {
				reserve = max(10, l.Total/20)
			}
			ls.budget = Budget{Known: true, Total: l.Total, Remaining: l.Remaining, Reserve: reserve,
				ResetsAt: time.Now().Add(l.ResetIn()), FetchedAt: time.Now()}
			ls.budget.Low = ls.budget.Remaining <= 2*reserve
		}
		ls.mu.Unlock()
		if !sleepCtx(ctx, time.Minute) {
			return
		}
	}
}

// grantIdentify is the leader's side of the identify gate: the session start budget
// first, then one grant per bucket per window for the whole cluster. It returns when
// the grant was given, so that a remote asker can bound the grant's age.
func (n *Node) grantIdentify(ctx context.Context, node string, shardID int, epoch uint64) (granted time.Time, err error) {
	ls := n.leader.Load()
	if ls == nil {
		return time.Time{}, ErrNotLeader
	}
	if err := n.checkOwner(ls, node, shardID, epoch); err != nil {
		return time.Time{}, err
	}
	ls.mu.Lock()
	g, b := ls.gate, &ls.budget
	if g == nil {
		ls.mu.Unlock()
		return time.Time{}, fmt.Errorf("%w: no shard configuration yet", ErrNotLeader)
	}
	if b.Known && time.Now().Before(b.ResetsAt) && b.Remaining <= b.Reserve {
		msg := fmt.Sprintf(": %d of %d daily session starts left, reserve %d, resets at %s; shards wait rather than risk a token reset",
			b.Remaining, b.Total, b.Reserve, b.ResetsAt.Format(time.RFC3339))
		if time.Since(ls.lowLogged) > time.Minute {
			n.log.Error("SESSION START BUDGET EXHAUSTED: identifies stopped", "remaining", b.Remaining, "reserve", b.Reserve, "resets_at", b.ResetsAt)
			ls.lowLogged = time.Now()
		}
		ls.mu.Unlock()
		return time.Time{}, fmt.Errorf("%w%s", ErrBudgetLow, msg)
	}
	// The start is taken from the budget before the wait, so that waiters queued
	// together cannot all pass the check; a wait that ends without a grant gives it back.
	if b.Known {
		b.Remaining--
		if !b.Low && b.Remaining <= 2*b.Reserve {
			b.Low = true
			n.log.Warn("session start budget running low", "remaining", b.Remaining, "total", b.Total, "reserve", b.Reserve, "resets_at", b.ResetsAt)
		}
	}
	known := b.Known
	ls.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ls.ctx, cancel)
	defer stop()
	if err := g.Wait(ctx, shardID); err != nil {
		if known {
			ls.mu.Lock()
			b.Remaining++
			ls.mu.Unlock()
		}
		if ls.ctx.Err() != nil {
			return time.Time{}, ErrNotLeader
		}
		return time.Time{}, err
	}
	granted = time.Now()
	// The wait can be long: the asker may have lost the shard or its lease meanwhile.
	if err := n.checkOwner(ls, node, shardID, epoch); err != nil {
		if known {
			ls.mu.Lock()
			b.Remaining++
			ls.mu.Unlock()
		}
		g.IdentifySent(shardID) // the grant goes unused: the bucket need not wait it out
		return time.Time{}, err
	}
	// A leader cut off from the others keeps believing it leads until its Raft lease
	// runs out, longer on a starved machine; a new one may be granting by then. A
	// quorum's confirmation now means no other leader can exist before the followers'
	// heartbeat timeout, and a new one holds its first grants a window beyond that.
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return time.Time{}, ErrNotLeader
	}
	n.log.Debug("identify granted", "node", node, "shard", shardID)
	return granted, nil
}

// identifySent is the report that a granted IDENTIFY was written. A leader that did
// not grant it (leadership moved meanwhile) ignores it: its gate held its first grants
// for a window anyway.
func (n *Node) identifySent(shardID int) {
	ls := n.leader.Load()
	if ls == nil {
		return
	}
	ls.mu.Lock()
	g := ls.gate
	ls.mu.Unlock()
	if g != nil {
		g.IdentifySent(shardID)
	}
}

// leaseGrant is a lease the leader gave: valid for Lease from the asker's request,
// once the asker's state machine reached Index.
type leaseGrant struct {
	Index uint64
	Lease time.Duration
}

// grantLease renews node's lease, the leader's own included. A node marked failed
// gets none: the leader is waiting for its last lease to run out before giving its
// shards away. Every grant follows a quorum's confirmation that this node still
// leads: a leader that was paused or cut off believes it leads until Raft notices,
// and must not extend anyone's lease, its own least of all, on that belief.
func (n *Node) grantLease(ctx context.Context, node string) (leaseGrant, error) {
	ls := n.leader.Load()
	if ls == nil || n.raft.State() != raft.Leader {
		return leaseGrant{}, ErrNotLeader
	}
	if m, ok := n.fsm.Member(node); ok && m.State == fsm.Failed {
		ls.mu.Lock()
		ls.askedWhileFailed[node] = true
		ls.mu.Unlock()
		n.pokeLeader()
		return leaseGrant{}, fmt.Errorf("%w: %s is marked failed; its shards are moving to other nodes", ErrLeaseRefused, node)
	}
	if err := n.verifyLeader(ctx); err != nil {
		return leaseGrant{}, fmt.Errorf("%w: a quorum did not confirm this leader: %v", ErrNotLeader, err)
	}
	lease := n.leaseDuration()
	ls.mu.Lock()
	// Recorded after the proof: the asker counts from before it asked, so its lease
	// ends before this plus the lease.
	ls.lastRenew[node] = time.Now()
	ls.mu.Unlock()
	// The state machine's index, not Raft's: Raft counts an entry applied once it is
	// handed to the state machine, which may still be working through a backlog.
	return leaseGrant{Index: n.fsm.AppliedIndex(), Lease: lease}, nil
}

// verifyLeader asks a quorum whether this node still leads, until ctx ends.
func (n *Node) verifyLeader(ctx context.Context) error {
	f := n.raft.VerifyLeader()
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// leaseHeld reports whether node holds a lease this leader granted.
func (ls *leaderState) leaseHeld(node string, lease time.Duration, now time.Time) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	last, ok := ls.lastRenew[node]
	return ok && now.Sub(last) < lease
}

// checkOwner is the leader's rule for an identify: the asker must be the shard's
// current owner at the epoch it names, alive, and holding a lease from this leader.
func (n *Node) checkOwner(ls *leaderState, node string, shardID int, epoch uint64) error {
	a, ok := n.fsm.Assignment(shardID)
	switch {
	case !ok:
		return fmt.Errorf("%w: shard %d is not assigned", ErrNotOwner, shardID)
	case a.Node != node || a.Epoch != epoch:
		return fmt.Errorf("%w: shard %d is %s's at epoch %d, not %s's at epoch %d", ErrNotOwner, shardID, a.Node, a.Epoch, node, epoch)
	case a.Phase != fsm.Assigned:
		return fmt.Errorf("%w: shard %d is being handed off (%s)", ErrNotOwner, shardID, a.Phase)
	}
	if m, ok := n.fsm.Member(node); !ok || m.State == fsm.Failed || m.State == fsm.Left {
		return fmt.Errorf("%w: %s is not an alive member", ErrNotOwner, node)
	}
	if !ls.leaseHeld(node, n.leaseDuration(), time.Now()) {
		return fmt.Errorf("%w: %s holds no lease from this leader", ErrNotOwner, node)
	}
	return nil
}

// reconcileMembers brings the member table in line with gossip and the leases.
func (n *Node) reconcileMembers(ctx context.Context, ls *leaderState, members []serf.Member) {
	now := time.Now()
	lease := n.leaseDuration()
	graceOver := now.After(ls.established.Add(lease))
	known := make(map[string]fsm.Member)
	for _, m := range n.fsm.Members() {
		known[m.ID] = m
	}
	holds := func(id string) int { return len(n.fsm.ShardsOf(id)) }
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		seen[m.Name] = true
		want := memberFromGossip(m)
		cur, ok := known[m.Name]
		switch m.Status {
		case serf.StatusAlive:
			switch {
			case !ok:
				want.State, want.Since = fsm.Alive, now.UnixNano()
				n.upsert(want, "node joined")
			case (cur.State == fsm.Left || cur.State == fsm.Failed && ls.askedLease(m.Name)) && holds(m.Name) == 0:
				want.State, want.Since = fsm.Alive, now.UnixNano()
				n.upsert(want, "node is back")
				ls.mu.Lock()
				delete(ls.failedAt, m.Name)
				delete(ls.refused, m.Name)
				delete(ls.askedWhileFailed, m.Name)
				ls.lastRenew[m.Name] = now
				ls.mu.Unlock()
			case cur.State != fsm.Failed && cur.State != fsm.Left && sameExceptState(cur, want) == false:
				want.State, want.Since = cur.State, cur.Since
				n.upsert(want, "node updated")
			}
			if ok && (cur.State == fsm.Alive || cur.State == fsm.Draining) && m.Name != n.cfg.Name {
				ls.mu.Lock()
				last, renewed := ls.lastRenew[m.Name]
				ls.mu.Unlock()
				if !renewed {
					last = ls.established
				}
				switch silent := now.Sub(last); {
				case ls.takeCrashed(m.Name, cur.Since):
					// Positive evidence, so no grace is needed; fail probes the port again
					// once the shards are revoked, so a process that restarted in between
					// is never taken for a dead one.
					n.fail(ctx, ls, m.Name, "its process is gone (Raft heartbeat failed, cluster port refuses connections)")
				case graceOver && silent > lease:
					n.fail(ctx, ls, m.Name, fmt.Sprintf("no lease renewal for %v (gossip still sees it: a partial partition, or a stuck process)", silent.Round(time.Millisecond)))
				}
			}
		case serf.StatusFailed:
			if ok && (cur.State == fsm.Alive || cur.State == fsm.Draining) && (ls.takeCrashed(m.Name, cur.Since) || graceOver) {
				n.fail(ctx, ls, m.Name, "gossip declared it dead")
			}
		case serf.StatusLeft, serf.StatusLeaving:
			if ok && m.Status == serf.StatusLeft {
				n.forget(ctx, ls, cur, holds(m.Name), graceOver, "it left")
			}
		}
	}
	for id, cur := range known {
		if !seen[id] && id != n.cfg.Name {
			n.forget(ctx, ls, cur, holds(id), graceOver, "gossip no longer knows it")
		}
	}
}

func (n *Node) forget(ctx context.Context, ls *leaderState, m fsm.Member, holds int, graceOver bool, why string) {
	switch {
	case holds == 0:
		if _, err := n.applyLocal(fsm.RemoveMember{ID: m.ID}); err == nil {
			n.log.Info("removed member", "node", m.ID, "why", why)
			n.note("%s removed: %s", m.ID, why)
		}
	case (m.State == fsm.Alive || m.State == fsm.Draining) && graceOver:
		n.fail(ctx, ls, m.ID, why+" while holding shards")
	}
}

func memberFromGossip(m serf.Member) fsm.Member {
	w, _ := strconv.Atoi(m.Tags[tagWeight])
	return fsm.Member{
		ID: m.Name, RaftAddr: m.Tags[tagRPC], HTTPAddr: m.Tags[tagHTTP],
		GossipAddr: fmt.Sprintf("%s:%d", m.Addr, m.Port), Weight: w,
	}
}

func sameExceptState(a, b fsm.Member) bool {
	return a.ID == b.ID && a.RaftAddr == b.RaftAddr && a.HTTPAddr == b.HTTPAddr && a.GossipAddr == b.GossipAddr && a.Weight == b.Weight
}

func (n *Node) upsert(m fsm.Member, why string) {
	if _, err := n.applyLocal(fsm.UpsertMember{Member: m}); err != nil {
		n.log.Warn("cannot record member", "node", m.ID, "err", err)
		return
	}
	n.log.Info(why, "node", m.ID, "state", m.State, "weight", m.Weight)
	if why != "node updated" {
		n.note("%s: %s", why, m.ID)
	}
}

// fail marks a node failed and revokes its shards. From then on it gets no lease, so
// once its last lease has run out (or at once, when its cluster port refuses
// connections) the shards can go elsewhere.
func (n *Node) fail(ctx context.Context, ls *leaderState, id, why string) {
	if _, err := n.applyLocal(fsm.MarkFailed{ID: id, At: time.Now().UnixNano()}); err != nil {
		n.log.Warn("cannot mark node failed", "node", id, "err", err)
		return
	}
	ls.mu.Lock()
	ls.failedAt[id] = time.Now()
	delete(ls.askedWhileFailed, id)
	delete(ls.crashed, id)
	ls.mu.Unlock()
	var moves []fsm.RevokeMove
	for _, a := range n.fsm.ShardsOf(id) {
		if a.Phase == fsm.Assigned {
			moves = append(moves, fsm.RevokeMove{Shard: a.Shard, ExpectNode: a.Node, ExpectEpoch: a.Epoch})
		}
	}
	n.log.Warn("node failed", "node", id, "why", why, "shards", len(n.fsm.ShardsOf(id)),
		"reassign_after", n.leaseDuration())
	n.note("%s failed: %s; %d shards revoked", id, why, len(moves))
	if len(moves) > 0 {
		if _, err := n.applyLocal(fsm.Revoke{Moves: moves}); err != nil {
			n.log.Warn("cannot revoke shards of failed node", "node", id, "err", err)
		}
	}
	if m, ok := n.fsm.Member(id); ok && m.RaftAddr != "" {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if n.processGone(m.RaftAddr) {
				ls.mu.Lock()
				ls.refused[id] = true
				ls.mu.Unlock()
				n.log.Info("failed node's cluster port refuses connections: its process is gone, no lease wait", "node", id)
				n.pokeLeader()
			}
		}()
	}
}

// watchHeartbeats gives the leader a crash verdict within a Raft heartbeat instead of
// a gossip suspicion timeout: when a heartbeat to a peer fails, the leader dials the
// peer's cluster port, and a refusal (the machine answers, nothing listens) means the
// process died and its websockets with it. A silent peer (SIGSTOP, a dead machine, a
// partition) refuses nothing and is left to gossip and the lease.
func (n *Node) watchHeartbeats() {
	ch := make(chan raft.Observation, 64)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.FailedHeartbeatObservation)
		return ok
	})
	n.raft.RegisterObserver(obs)
	defer n.raft.DeregisterObserver(obs)
	probed := make(map[raft.ServerID]time.Time)
	for {
		var o raft.Observation
		select {
		case <-n.ctx.Done():
			return
		case o = <-ch:
		}
		peer := o.Data.(raft.FailedHeartbeatObservation).PeerID
		ls := n.leader.Load()
		// Raft backs off its heartbeats to a failing peer; one probe per backoff step
		// is plenty.
		if ls == nil || time.Since(probed[peer]) < n.cfg.Timing.RaftHeartbeat/10 {
			continue
		}
		probed[peer] = time.Now()
		m, ok := n.fsm.Member(string(peer))
		if !ok || m.RaftAddr == "" || (m.State != fsm.Alive && m.State != fsm.Draining) {
			continue
		}
		probe := time.Now()
		if n.processGone(m.RaftAddr) {
			ls.mu.Lock()
			ls.crashed[m.ID] = probe
			ls.mu.Unlock()
			n.pokeLeader()
		}
	}
}

// processGone reports whether addr's machine answers but nothing listens on the port:
// the process died, and its websockets with it.
func (n *Node) processGone(addr string) bool {
	c, err := n.mux.Dial(addr, transport.ProtoRPC, time.Second)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

func (ls *leaderState) askedLease(id string) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.askedWhileFailed[id]
}

// takeCrashed reports, once, that id's process was found gone since it last changed
// state (joined, came back). A process restarted after the probe is not gone.
func (ls *leaderState) takeCrashed(id string, since int64) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	probed, ok := ls.crashed[id]
	delete(ls.crashed, id)
	return ok && probed.UnixNano() > since
}

// fenced reports whether a failed owner can no longer be running its shards: its
// process is gone, or the last lease this leader granted it has run out. The owner
// counts its lease from before it asked, so it expires no later than the grant plus
// one lease; a node that never renewed under this leader is waited out from the
// leader's start, as the grace does.
func (ls *leaderState) fenced(owner string, lease time.Duration) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.refused[owner] {
		return true
	}
	since, ok := ls.lastRenew[owner]
	if !ok {
		since = ls.established
	}
	// A tenth of the lease covers clock rate differences and the grant's flight time.
	return time.Since(since) > lease+lease/10
}

// reconcileShards applies the balancer's plan: revocations for shards to evacuate or
// rebalance, assignments for unassigned shards and for fenced shards of failed nodes.
func (n *Node) reconcileShards(ctx context.Context, ls *leaderState) {
	cfg := n.fsm.Config()
	members := n.fsm.Members()
	state := make(map[string]fsm.MemberState, len(members))
	in := balancer.Input{TotalShards: cfg.TotalShards, MaxMoves: n.cfg.MaxMoves}
	for _, m := range members {
		state[m.ID] = m.State
		bs, err := balancerState(m.State)
		if err != nil {
			n.log.Error("cannot place shards", "node", m.ID, "err", err)
			return
		}
		in.Members = append(in.Members, balancer.Member{ID: m.ID, Weight: m.Weight, State: bs})
	}
	forced := make(map[int]fsm.Assignment)
	for _, a := range n.fsm.Assignments() {
		st, ok := state[a.Node]
		if a.Phase == fsm.Revoking && (!ok || st == fsm.Failed || st == fsm.Left) && ls.fenced(a.Node, n.leaseDuration()) {
			forced[a.Shard] = a // placed as if unassigned, but the move names its old owner
			continue
		}
		bp, err := balancerPhase(a.Phase)
		if err != nil {
			n.log.Error("cannot place shards", "shard", a.Shard, "err", err)
			return
		}
		in.Assignments = append(in.Assignments, balancer.Assignment{Shard: a.Shard, Node: a.Node, Epoch: a.Epoch, Phase: bp})
	}
	plan, err := balancer.Compute(in)
	if err != nil {
		n.log.Error("balancer refused the state", "err", err)
		return
	}
	var revoke fsm.Revoke
	var assign fsm.Assign
	for _, mv := range plan.Moves {
		switch mv.Reason {
		case balancer.Place:
			m := fsm.AssignMove{Shard: mv.Shard, To: mv.To}
			if a, ok := forced[mv.Shard]; ok {
				m.ExpectNode, m.ExpectEpoch = a.Node, a.Epoch
			}
			assign.Moves = append(assign.Moves, m)
		default:
			revoke.Moves = append(revoke.Moves, fsm.RevokeMove{Shard: mv.Shard, ExpectNode: mv.From, ExpectEpoch: mv.FromEpoch})
		}
	}
	if len(revoke.Moves) > 0 {
		if res, err := n.applyLocal(revoke); err == nil {
			if res.Applied > 0 {
				n.note("revoking %s (%s)", foldMoves(len(revoke.Moves), func(i int) int { return revoke.Moves[i].Shard }), plan.Reason)
			}
			n.log.Info("revoking shards", "count", res.Applied, "shards", foldMoves(len(revoke.Moves), func(i int) int { return revoke.Moves[i].Shard }), "plan", plan.Reason)
		}
	}
	if len(assign.Moves) > 0 {
		res, err := n.applyLocal(assign)
		if err == nil {
			failover := 0
			for _, m := range assign.Moves {
				if m.ExpectNode != "" {
					failover++
				}
			}
			n.log.Info("assigned shards", "count", res.Applied, "from_failed_nodes", failover,
				"shards", foldMoves(len(assign.Moves), func(i int) int { return assign.Moves[i].Shard }), "plan", plan.Reason)
			n.logFailovers(ls, assign.Moves)
		}
	}
}

// logFailovers logs, per failed node, how long its shards waited between the node
// being marked failed and their new assignment.
func (n *Node) logFailovers(ls *leaderState, moves []fsm.AssignMove) {
	by := map[string][]int{}
	for _, m := range moves {
		if m.ExpectNode != "" {
			by[m.ExpectNode] = append(by[m.ExpectNode], m.Shard)
		}
	}
	for node, shards := range by {
		ls.mu.Lock()
		since, ok := ls.failedAt[node]
		fast := ls.refused[node]
		ls.mu.Unlock()
		wait := "lease expired"
		if fast {
			wait = "process gone (port refused): no lease wait"
		}
		if ok {
			after := time.Since(since).Round(time.Millisecond)
			n.log.Warn("failover: shards of failed node reassigned", "node", node, "shards", FoldRanges(shards),
				"after", after, "because", wait)
			n.note("failover: %s's shards %s reassigned %v after it failed (%s)", node, FoldRanges(shards), after, wait)
		} else {
			n.log.Warn("failover: shards of failed node reassigned", "node", node, "shards", FoldRanges(shards), "because", wait+" (failed under an earlier leader)")
		}
	}
}

func foldMoves(k int, shard func(i int) int) string {
	ids := make([]int, k)
	for i := range ids {
		ids[i] = shard(i)
	}
	return FoldRanges(ids)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
