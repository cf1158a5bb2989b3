package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/discluster/discluster/node/event"
)

// The messages of GET /v1/events, a server-sent event stream: a snapshot first, then
// what changed since, as it changes. A client applies them to the snapshot in order;
// after a reconnect it starts from the new snapshot.
const (
	StreamSnapshot   = "snapshot"    // data: Status, the whole view
	StreamShard      = "shard"       // data: ShardStatus, a shard whose owner, phase or state changed
	StreamMember     = "member"      // data: MemberStatus, a member that joined or whose standing changed
	StreamMemberGone = "member_gone" // data: {"id": ...}, a member no longer listed
	StreamEvent      = "event"       // data: event.Event, one typed event (a failover, a handoff, ...)
	StreamLeader     = "leader"      // data: {"leader": ..., "term": ...}
	// StreamOverview carries the rest of the status when it changes: the watched
	// node's lease and Raft state, the shard configuration, the session budget, the
	// fences, a reshard's progress and the problems (data: Status without members,
	// shards and events).
	StreamOverview = "overview"
)

// LeaderChange is the data of a StreamLeader message.
type LeaderChange struct {
	Leader string `json:"leader"`
	Term   uint64 `json:"term"`
}

// MemberGone is the data of a StreamMemberGone message.
type MemberGone struct {
	ID string `json:"id"`
}

// streamKeepAlive is how often an idle stream carries a comment, so that proxies
// and the client see it alive.
const streamKeepAlive = 15 * time.Second

// Emit sends one message of the stream; an error ends the stream.
type Emit func(kind string, data any) error

// streamRoute serves GET /v1/events over b.Watch.
func streamRoute(b Backend) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		// The server's write timeout bounds a request; a stream lives on, each write
		// bounded on its own.
		write := func(s string) error {
			rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := fmt.Fprint(w, s); err != nil {
				return err
			}
			return rc.Flush()
		}
		if err := write(": discluster events\n\n"); err != nil {
			return
		}
		last := time.Now()
		b.Watch(r.Context(), func(kind string, data any) error {
			if kind == "" { // a tick: a comment now and then
				if time.Since(last) < streamKeepAlive {
					return nil
				}
				last = time.Now()
				return write(": keep-alive\n\n")
			}
			body, err := json.Marshal(data)
			if err != nil {
				return err
			}
			last = time.Now()
			return write("event: " + kind + "\ndata: " + string(body) + "\n\n")
		})
	}
}

// Watch reads the agent's event stream, calling on with each message's kind and its
// data as JSON, until ctx ends, the stream ends, or on returns an error.
func (c *Client) Watch(ctx context.Context, on func(kind string, data []byte) error) error {
	req, err := c.request(ctx, http.MethodGet, "/v1/events", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach an agent at %s: %w", c.Addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusOK && !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return fmt.Errorf("%s: %w", c.Addr, ErrNoStream)
	}
	if resp.StatusCode != http.StatusOK {
		e := &Error{Addr: c.Addr, Status: resp.StatusCode}
		var eb ErrorBody
		if json.NewDecoder(resp.Body).Decode(&eb) == nil {
			e.Code, e.Msg = eb.Code, eb.Error
		}
		return e
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), maxBody) // a snapshot of 20,000 shards is a few MB
	var kind string
	var data strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if kind != "" || data.Len() > 0 {
				if kind == "" {
					kind = "message"
				}
				if err := on(kind, []byte(data.String())); err != nil {
					return err
				}
			}
			kind = ""
			data.Reset()
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event:"):
			kind = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("%s: the event stream broke: %w", c.Addr, err)
	}
	return ctx.Err()
}

// Diff emits, through emit, what changed from old to cur as stream messages: the
// leader, members (joined, changed, gone), shards (owner, phase, state), and the
// typed events newer than old's. A server and a test share it.
func Diff(old, cur Status, emit Emit) error {
	if old.Leader != cur.Leader || old.Term != cur.Term {
		if err := emit(StreamLeader, LeaderChange{Leader: cur.Leader, Term: cur.Term}); err != nil {
			return err
		}
	}
	if o, c := overviewKey(old), overviewKey(cur); o != c {
		ov := cur
		ov.Members, ov.Shards, ov.Events = nil, nil, nil
		if err := emit(StreamOverview, ov); err != nil {
			return err
		}
	}
	was := make(map[string]MemberStatus, len(old.Members))
	for _, m := range old.Members {
		was[m.ID] = m
	}
	for _, m := range cur.Members {
		if o, ok := was[m.ID]; !ok || !sameMember(o, m) {
			if err := emit(StreamMember, m); err != nil {
				return err
			}
		}
		delete(was, m.ID)
	}
	for id := range was {
		if err := emit(StreamMemberGone, MemberGone{ID: id}); err != nil {
			return err
		}
	}
	shards := make(map[int]ShardStatus, len(old.Shards))
	for _, s := range old.Shards {
		shards[s.Shard] = s
	}
	for _, s := range cur.Shards {
		if o, ok := shards[s.Shard]; !ok || o.Node != s.Node || o.Epoch != s.Epoch || o.Phase != s.Phase || o.State != s.State || o.Error != s.Error {
			if err := emit(StreamShard, s); err != nil {
				return err
			}
		}
	}
	var newest time.Time
	for _, e := range old.Events {
		if e.At.After(newest) {
			newest = e.At
		}
	}
	for _, e := range cur.Events {
		if e.At.After(newest) {
			if err := emit(StreamEvent, e); err != nil {
				return err
			}
		}
	}
	return nil
}

// overviewKey is what of a status's overview a watcher needs to hear about: not the
// applied index or the lease's end, which move every second.
func overviewKey(s Status) string {
	b, _ := json.Marshal(struct {
		Node, Cluster, RaftState string
		Held                     bool
		Reason                   string
		Config                   *ShardConfig
		Budget                   *Budget
		Fences                   []Fence
		Reshard                  *Reshard
		Problems                 []string
	}{s.Node, s.Cluster, s.RaftState, s.Lease.Held, s.Lease.Reason, s.Config, s.Budget, s.Fences, s.Reshard, s.Problems})
	return string(b)
}

// sameMember compares what a member's standing is, not the counters that move all
// the time.
func sameMember(a, b MemberStatus) bool {
	held := func(l *Lease) bool { return l != nil && l.Held }
	failing := func(s *Sink) bool { return s != nil && s.Failing }
	return a.State == b.State && a.Gossip == b.Gossip && a.Raft == b.Raft && a.Leader == b.Leader && a.Weight == b.Weight &&
		a.Shards == b.Shards && a.ReshardShards == b.ReshardShards && a.Problem == b.Problem && held(a.Lease) == held(b.Lease) &&
		failing(a.Sink) == failing(b.Sink)
}

// ErrNoStream is the answer of an agent that serves no event stream (an older one):
// a watcher polls it instead.
var ErrNoStream = errors.New("the agent serves no event stream")

// maxStreamEvents bounds the typed events Apply keeps, newest last.
const maxStreamEvents = 20

// Apply updates s with one stream message: a snapshot replaces it, the others change
// what they name. A watcher keeps its view this way without asking for the status.
func (s *Status) Apply(kind string, data []byte) error {
	switch kind {
	case StreamSnapshot:
		var st Status
		if err := json.Unmarshal(data, &st); err != nil {
			return err
		}
		*s = st
	case StreamOverview:
		var ov Status
		if err := json.Unmarshal(data, &ov); err != nil {
			return err
		}
		ov.Members, ov.Shards, ov.Events = s.Members, s.Shards, s.Events
		*s = ov
	case StreamLeader:
		var l LeaderChange
		if err := json.Unmarshal(data, &l); err != nil {
			return err
		}
		s.Leader, s.Term = l.Leader, l.Term
		for i := range s.Members {
			s.Members[i].Leader = s.Members[i].ID == l.Leader
		}
	case StreamMember:
		var m MemberStatus
		if err := json.Unmarshal(data, &m); err != nil {
			return err
		}
		i := slices.IndexFunc(s.Members, func(x MemberStatus) bool { return x.ID == m.ID })
		if i < 0 {
			s.Members = append(s.Members, m)
			slices.SortFunc(s.Members, func(a, b MemberStatus) int { return strings.Compare(a.ID, b.ID) })
		} else {
			s.Members[i] = m
		}
	case StreamMemberGone:
		var g MemberGone
		if err := json.Unmarshal(data, &g); err != nil {
			return err
		}
		s.Members = slices.DeleteFunc(s.Members, func(x MemberStatus) bool { return x.ID == g.ID })
	case StreamShard:
		var sh ShardStatus
		if err := json.Unmarshal(data, &sh); err != nil {
			return err
		}
		i, found := slices.BinarySearchFunc(s.Shards, sh.Shard, func(x ShardStatus, id int) int { return x.Shard - id })
		if found {
			s.Shards[i] = sh
		} else {
			s.Shards = slices.Insert(s.Shards, i, sh)
		}
	case StreamEvent:
		var e event.Event
		if err := json.Unmarshal(data, &e); err != nil {
			return err
		}
		s.Events = append(s.Events, e)
		if len(s.Events) > maxStreamEvents {
			s.Events = s.Events[len(s.Events)-maxStreamEvents:]
		}
	}
	return nil
}
