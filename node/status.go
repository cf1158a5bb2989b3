package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hashicorp/serf/serf"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/shard"
)

// Status is what GET /v1/status returns: the cluster as this node sees it.
type Status struct {
	Node      string         `json:"node"`
	Cluster   string         `json:"cluster,omitempty"`
	Leader    string         `json:"leader,omitempty"`
	Term      uint64         `json:"term"`
	RaftState string         `json:"raft_state"`
	Applied   uint64         `json:"applied_index"`
	Lease     LeaseStatus    `json:"lease"`
	Config    *Config0       `json:"config,omitempty"`
	Budget    *Budget        `json:"session_budget,omitempty"`
	Members   []MemberStatus `json:"members"`
	Shards    []ShardStatus  `json:"shards"`
	// Events are the recent events of every member that answered, oldest first.
	Events []Event `json:"events,omitempty"`
	// Problems lists what this node could not find out (an unreachable member).
	Problems []string `json:"problems,omitempty"`
}

// Config0 is the replicated shard configuration.
type Config0 struct {
	TotalShards        int           `json:"total_shards"`
	MaxConcurrency     int           `json:"max_concurrency"`
	IdentifyWindow     time.Duration `json:"identify_window_ns"`
	Lease              time.Duration `json:"lease_ns"`
	CheckpointInterval time.Duration `json:"checkpoint_interval_ns"`
}

// MemberStatus is one node.
type MemberStatus struct {
	ID      string       `json:"id"`
	State   string       `json:"state"`  // the replicated state: alive, failed, draining, left; "" before the leader records it
	Gossip  string       `json:"gossip"` // what gossip says: alive, failed, left
	Raft    string       `json:"raft"`   // voter, nonvoter, or ""
	Leader  bool         `json:"leader"`
	Weight  int          `json:"weight"`
	Cluster string       `json:"cluster_addr"`
	HTTP    string       `json:"http_addr"`
	Shards  int          `json:"shards"`
	Lease   *LeaseStatus `json:"lease,omitempty"`
	Sink    *SinkStatus  `json:"sink,omitempty"`
}

// ShardStatus is one shard.
type ShardStatus struct {
	Shard   int    `json:"shard"`
	Node    string `json:"node,omitempty"`
	Epoch   uint64 `json:"epoch,omitempty"`
	Phase   string `json:"phase,omitempty"` // assigned, revoking; "" when unassigned
	Cluster int    `json:"cluster"`
	State   string `json:"state"` // the shard's own state on its owner, or "unassigned", "unknown"
	Seq     int64  `json:"seq"`
	// Checkpoint is the seq the replicated state holds: where the shard resumes if its
	// node dies now.
	Checkpoint int64     `json:"checkpoint_seq"`
	Latency    float64   `json:"latency_ms"`
	LastEvent  time.Time `json:"last_event,omitzero"`
	Error      string    `json:"error,omitempty"`
}

// localShards is this node's view of its own shards.
func (n *Node) localShards() ShardsReply {
	s := n.sup
	out := ShardsReply{Lease: n.lease.status(), Sink: s.sinkHealth.status(), Events: n.recent.list()}
	if ls := n.leader.Load(); ls != nil {
		ls.mu.Lock()
		b := ls.budget
		ls.mu.Unlock()
		out.Budget = &b
	}
	s.mu.Lock()
	clusters := make([]*shard.Cluster, 0, len(s.clusters))
	for _, c := range s.clusters {
		clusters = append(clusters, c)
	}
	clusterOf := maps.Clone(s.clusterOf)
	s.mu.Unlock()
	for _, c := range clusters {
		for _, info := range c.Info() {
			out.Shards = append(out.Shards, LocalShard{Info: info, Cluster: clusterOf[info.ShardID]})
		}
	}
	return out
}

// Status gathers the cluster's status: the replicated state from this node, and
// each shard's live state from its owner.
func (n *Node) Status(ctx context.Context) Status {
	st := Status{Node: n.cfg.Name, Cluster: n.clusterID(), RaftState: n.raft.State().String(),
		Term: n.raft.CurrentTerm(), Applied: n.raft.AppliedIndex(), Lease: n.lease.status()}
	_, leader := n.raft.LeaderWithID()
	st.Leader = string(leader)
	if c := n.fsm.Config(); c.TotalShards > 0 {
		st.Config = &Config0{TotalShards: c.TotalShards, MaxConcurrency: c.MaxConcurrency, IdentifyWindow: c.IdentifyWindow,
			Lease: c.Lease, CheckpointInterval: c.CheckpointInterval}
	}
	suffrage := map[string]string{}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			suffrage[string(s.ID)] = map[raft.ServerSuffrage]string{raft.Voter: "voter", raft.Nonvoter: "nonvoter", raft.Staging: "staging"}[s.Suffrage]
		}
	}
	gossip := map[string]serf.Member{}
	for _, m := range n.ourMembers() {
		gossip[m.Name] = m
	}
	byID := map[string]*MemberStatus{}
	for _, m := range n.fsm.Members() {
		ms := &MemberStatus{ID: m.ID, State: m.State.String(), Weight: m.Weight, Cluster: m.RaftAddr, HTTP: m.HTTPAddr,
			Raft: suffrage[m.ID], Leader: m.ID == st.Leader, Gossip: "unknown"}
		if g, ok := gossip[m.ID]; ok {
			ms.Gossip = g.Status.String()
		}
		byID[m.ID] = ms
	}
	for name, g := range gossip {
		if _, ok := byID[name]; !ok {
			w, _ := strconv.Atoi(g.Tags[tagWeight])
			byID[name] = &MemberStatus{ID: name, Gossip: g.Status.String(), Raft: suffrage[name], Leader: name == st.Leader,
				Weight: w, Cluster: g.Tags[tagRPC], HTTP: g.Tags[tagHTTP]}
		}
	}

	// Live shard states from every member that gossip sees alive, in parallel.
	type answer struct {
		id    string
		reply ShardsReply
		err   error
	}
	var wg sync.WaitGroup
	answers := make(chan answer, len(byID))
	for id, ms := range byID {
		if ms.Gossip != serf.StatusAlive.String() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if id == n.cfg.Name {
				answers <- answer{id: id, reply: n.localShards()}
				return
			}
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			var r ShardsReply
			err := n.peers.call(cctx, ms.Cluster, "Shards", &ShardsArgs{}, &r)
			answers <- answer{id: id, reply: r, err: err}
		}()
	}
	wg.Wait()
	close(answers)
	var events [][]Event
	live := map[int]LocalShard{}
	liveOwner := map[int]string{}
	for a := range answers {
		if a.err != nil {
			st.Problems = append(st.Problems, fmt.Sprintf("%s: %v", a.id, a.err))
			continue
		}
		l, sk := a.reply.Lease, a.reply.Sink
		byID[a.id].Lease, byID[a.id].Sink = &l, &sk
		if sk.Failing {
			st.Problems = append(st.Problems, fmt.Sprintf("%s: sink failing since %s (%d failures, shards held at their last delivered event): %s",
				a.id, sk.Since.Format(time.TimeOnly), sk.Failures, sk.Error))
		}
		events = append(events, a.reply.Events)
		if a.reply.Budget != nil {
			st.Budget = a.reply.Budget
		}
		for _, s := range a.reply.Shards {
			live[s.Info.ShardID] = s
			liveOwner[s.Info.ShardID] = a.id
		}
	}
	slices.Sort(st.Problems)
	st.Events = mergeEvents(events, 20)
	for _, ms := range byID {
		st.Members = append(st.Members, *ms)
	}
	slices.SortFunc(st.Members, func(a, b MemberStatus) int { return strings.Compare(a.ID, b.ID) })

	if st.Config != nil {
		asg := make([]fsm.Assignment, st.Config.TotalShards)
		for _, a := range n.fsm.Assignments() {
			asg[a.Shard] = a
		}
		count := map[string]int{}
		for id := range st.Config.TotalShards {
			a := asg[id]
			s := ShardStatus{Shard: id, State: "unassigned", Cluster: id / n.cfg.ShardsPerCluster}
			if a.Node != "" {
				count[a.Node]++
				s.Node, s.Epoch, s.Phase, s.State = a.Node, a.Epoch, a.Phase.String(), "unknown"
				if r, ok := n.fsm.Resume(id); ok && r.SessionID != "" {
					s.Seq, s.Checkpoint = r.Seq, r.Seq
				}
				if l, ok := live[id]; ok && liveOwner[id] == a.Node {
					s.State, s.Seq, s.Cluster = l.Info.State.String(), l.Info.Seq, l.Cluster
					s.Latency = float64(l.Info.Latency) / float64(time.Millisecond)
					s.LastEvent, s.Error = l.Info.LastEvent, l.Info.Err
				} else if ms, ok := byID[a.Node]; ok && ms.Lease != nil && !ms.Lease.Held {
					s.State = "suspended"
				} else if _, reached := byID[a.Node]; !reached || byID[a.Node].Gossip != "alive" {
					s.State = "unreachable"
				} else {
					s.State = "starting"
				}
			}
			st.Shards = append(st.Shards, s)
		}
		for i := range st.Members {
			st.Members[i].Shards = count[st.Members[i].ID]
		}
	}
	return st
}

func (n *Node) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Status(r.Context()))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		l := n.lease.status()
		body := map[string]any{"node": n.cfg.Name, "lease": l, "raft_state": n.raft.State().String()}
		code := http.StatusOK
		// Healthy means able to run shards. A node without a lease for longer than
		// a few seconds after start needs attention.
		if !l.Held && time.Since(n.started) > 2*n.leaseDuration() {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, body)
	})
	mux.HandleFunc("POST /v1/drain/{node}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("node")
		if _, ok := n.fsm.Member(id); !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no member %q", id)})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		if _, err := n.write(ctx, fsm.Drain{ID: id, At: time.Now().UnixNano()}); err != nil {
			code := http.StatusServiceUnavailable
			if errors.Is(err, fsm.ErrInvalid) {
				code = http.StatusBadRequest
			}
			writeJSON(w, code, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"draining": id, "shards": len(n.fsm.ShardsOf(id))})
	})
	// Cancelling a drain makes the node take shards again; the balancer moves some
	// back to it one handoff at a time.
	mux.HandleFunc("DELETE /v1/drain/{node}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("node")
		// The leader's state decides, not this node's replica: right after a drain
		// sent through a follower, the follower may not have applied it yet.
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		if _, err := n.write(ctx, fsm.Undrain{ID: id, At: time.Now().UnixNano()}); err != nil {
			code := http.StatusServiceUnavailable
			if errors.Is(err, fsm.ErrInvalid) {
				code = http.StatusConflict
				if _, known := n.fsm.Member(id); !known {
					code = http.StatusNotFound
				}
			}
			writeJSON(w, code, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"undrained": id})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// FoldRanges writes shard ids as ranges: 0-15,17,20-21. The ids need not be sorted.
func FoldRanges(ids []int) string {
	if len(ids) == 0 {
		return ""
	}
	s := slices.Clone(ids)
	slices.Sort(s)
	s = slices.Compact(s)
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(s[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(s[j]))
		}
		i = j + 1
	}
	return b.String()
}
