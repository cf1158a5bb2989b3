// Package event is the agent's typed record of what happened in the cluster: a node
// joined, failed or left, shards failed over and how long that took, a leader was
// elected. Every room reports through it; status, the live view, the benchmark and
// the tests read an event's Kind and fields, never its wording, which is for people
// and may change.
//
// It must never hold more than a few dozen events per node or block the reporter:
// events are for the status page, the logs hold the full story.
package event

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Kind says what happened. Its values are part of the API: status --json and
// GET /v1/status carry them.
type Kind string

// The kinds.
const (
	LeaderElected  Kind = "leader_elected"  // Node became the leader (Term)
	NodeJoined     Kind = "node_joined"     // Subject joined the cluster
	NodeBack       Kind = "node_back"       // Subject, failed or left, is alive again
	NodeFailed     Kind = "node_failed"     // Subject was marked failed (Cause); Shards were revoked
	NodeRemoved    Kind = "node_removed"    // Subject was removed from the member table (Cause)
	Revoking       Kind = "revoking"        // Shards are being moved off their owners (Cause: the plan)
	Failover       Kind = "failover"        // Subject's Shards were reassigned Duration after it failed (Cause)
	HandedOff      Kind = "handed_off"      // Node released Shards at their exact seq
	Resumed        Kind = "resumed"         // Node resumed Shards: Duration the median, Max the slowest
	LeaseLost      Kind = "lease_lost"      // Node lost its lease and suspended Shards (Cause)
	FlagOverridden Kind = "flag_overridden" // a flag of Node differs from the cluster's value (Cause)
	TokenRejected  Kind = "token_rejected"  // Discord rejected Node's bot token; it stopped Shards (Cause)
	SessionsEnded  Kind = "sessions_ended"  // Node ended the sessions of Shards of a generation a reshard retired (Cause)
	// ShardingRequired: Discord closed Node's Shards of generation Gen with 4011 (too
	// many guilds for the shard count); the leader starts a reshard.
	ShardingRequired Kind = "sharding_required"
	ReshardStarted   Kind = "reshard_started"   // generation Gen began beside the current one (Cause: from what to what, and who asked)
	ReshardSwitched  Kind = "reshard_switched"  // generation Gen became current, Duration after its start
	ReshardCancelled Kind = "reshard_cancelled" // generation Gen was dropped before its switch, Duration after its start (Cause)
)

// Event is one thing that happened, as the node that saw it reports it.
type Event struct {
	At       time.Time     `json:"at"`
	Kind     Kind          `json:"kind"`
	Node     string        `json:"node"`              // the node that saw it
	Subject  string        `json:"subject,omitempty"` // the node it is about, when another
	Shards   Shards        `json:"shards,omitempty"`
	Duration time.Duration `json:"duration_ns,omitempty"`
	Max      time.Duration `json:"max_ns,omitempty"`
	Term     uint64        `json:"term,omitempty"`
	// Gen is the generation of shards the event is about, when a reshard's: the
	// shard ids of two generations name different shards.
	Gen   uint64 `json:"gen,omitempty"`
	Cause string `json:"cause,omitempty"`
	// Reason is Cause as a fixed value for programs (a metric's label, a UI's
	// colour), set on the kinds that have one: Failover.
	Reason Reason `json:"reason,omitempty"`
}

// Reason is why something happened, from a fixed list, where Cause is its words.
type Reason string

// The reasons of a Failover.
const (
	ReasonLeaseExpired Reason = "lease_expired" // the failed node's lease ran out first
	ReasonProcessGone  Reason = "process_gone"  // its cluster port refused: no lease wait
)

// String is the event in words, for people.
func (e Event) String() string {
	switch e.Kind {
	case LeaderElected:
		return fmt.Sprintf("became leader (term %d)", e.Term)
	case NodeJoined:
		return "node joined: " + e.Subject
	case NodeBack:
		return "node is back: " + e.Subject
	case NodeFailed:
		return fmt.Sprintf("%s failed: %s; %d shards revoked", e.Subject, e.Cause, len(e.Shards))
	case NodeRemoved:
		return fmt.Sprintf("%s removed: %s", e.Subject, e.Cause)
	case Revoking:
		return fmt.Sprintf("revoking %s%s (%s)", e.Shards, e.ofGen(), e.Cause)
	case Failover:
		return fmt.Sprintf("failover: %s's shards %s%s reassigned %v after it failed (%s)", e.Subject, e.Shards, e.ofGen(), e.Duration, e.Cause)
	case HandedOff:
		return "handed off shards " + e.Shards.String()
	case Resumed:
		if len(e.Shards) == 1 {
			return fmt.Sprintf("shard %s resumed in %v", e.Shards, e.Duration)
		}
		return fmt.Sprintf("shards %s resumed in %v (median), %v at most", e.Shards, e.Duration, e.Max)
	case LeaseLost:
		return fmt.Sprintf("lease lost: %d shards suspended (%s)", len(e.Shards), e.Cause)
	case FlagOverridden:
		return e.Cause
	case TokenRejected:
		return fmt.Sprintf("bot token rejected: %d shards stopped (%s)", len(e.Shards), e.Cause)
	case SessionsEnded:
		return fmt.Sprintf("sessions of %d shards ended (%s)", len(e.Shards), e.Cause)
	case ShardingRequired:
		return fmt.Sprintf("sharding required: Discord closed shards %s with 4011 (%s)", e.Shards, e.Cause)
	case ReshardStarted:
		return fmt.Sprintf("reshard started: generation %d, %s", e.Gen, e.Cause)
	case ReshardSwitched:
		return fmt.Sprintf("reshard switched: generation %d delivers, %v after its start (%s)", e.Gen, e.Duration, e.Cause)
	case ReshardCancelled:
		return fmt.Sprintf("reshard cancelled: generation %d dropped %v after its start (%s)", e.Gen, e.Duration, e.Cause)
	}
	s := string(e.Kind) + " " + e.Cause
	if e.Gen != 0 {
		s += fmt.Sprintf(" (generation %d)", e.Gen)
	}
	return s
}

// ofGen names the generation of an event's shards, when it is a reshard's.
func (e Event) ofGen() string {
	if e.Gen == 0 {
		return ""
	}
	return fmt.Sprintf(" of generation %d", e.Gen)
}

// Shards is a set of shard ids; it prints, and travels as JSON, in ranges: "0-15,17".
type Shards []int

func (s Shards) String() string { return FoldRanges(s) }

// MarshalJSON writes the ranges.
func (s Shards) MarshalJSON() ([]byte, error) { return json.Marshal(FoldRanges(s)) }

// UnmarshalJSON reads the ranges.
func (s *Shards) UnmarshalJSON(b []byte) error {
	var txt string
	if err := json.Unmarshal(b, &txt); err != nil {
		return err
	}
	ids, err := ParseRanges(txt)
	*s = ids
	return err
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

// ParseRanges reads what FoldRanges writes.
func ParseRanges(s string) ([]int, error) {
	var ids []int
	if s == "" {
		return nil, nil
	}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("shard range %q: %q is not a shard id", s, lo)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("shard range %q: %q does not end at or after %d", s, part, a)
			}
		}
		if b-a > 1<<20 {
			return nil, fmt.Errorf("shard range %q: %q is too long", s, part)
		}
		for id := a; id <= b; id++ {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// Notifier takes events. Rooms that report events own an interface of this shape;
// Log is the one implementation.
type Notifier interface{ Notify(Event) }

// Log keeps the last few events of one node.
type Log struct {
	node  string
	clock func() time.Time
	mu    sync.Mutex
	buf   []Event
}

// Keep is how many events a Log holds.
const Keep = 32

// NewLog records events seen by node, stamped by clock (time.Now when nil).
func NewLog(node string, clock func() time.Time) *Log {
	if clock == nil {
		clock = time.Now
	}
	return &Log{node: node, clock: clock}
}

// Notify records e; a zero At and Node are filled in.
func (l *Log) Notify(e Event) {
	if e.At.IsZero() {
		e.At = l.clock()
	}
	if e.Node == "" {
		e.Node = l.node
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, e)
	if len(l.buf) > Keep {
		l.buf = slices.Delete(l.buf, 0, len(l.buf)-Keep)
	}
}

// List returns the events, oldest first.
func (l *Log) List() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.buf)
}

// Merge merges the events of several nodes, oldest first, keeping the last n.
func Merge(lists [][]Event, n int) []Event {
	var all []Event
	for _, l := range lists {
		all = append(all, l...)
	}
	slices.SortStableFunc(all, func(a, b Event) int { return a.At.Compare(b.At) })
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return all
}
