package shard

import (
	"encoding/json"
	"fmt"
	"runtime"
	"time"
)

var goos = runtime.GOOS

// Event is one dispatch (op 0) as it left the gateway: the envelope decoded, Data raw.
// Data is owned by the receiver.
type Event struct {
	ShardID   int
	SessionID string
	Seq       int64
	Type      string
	Data      json.RawMessage
}

// State is where a shard is in its life.
type State uint8

const (
	StateIdle         State = iota // not started
	StateConnecting                // dialing, waiting for HELLO
	StateIdentifying               // waiting on the identify gate, or for READY
	StateResuming                  // RESUME sent, replay under way until RESUMED
	StateReady                     // session established, events flowing
	StateReconnecting              // the connection ended; a new one follows
	StateStopped                   // stopped on purpose; the session is resumable
	StateFailed                    // a fatal close code; needs an operator
)

var stateNames = [...]string{"idle", "connecting", "identifying", "resuming", "ready", "reconnecting", "stopped", "failed"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// LifecycleKind names a lifecycle event.
type LifecycleKind uint8

const (
	LifecycleCreated LifecycleKind = iota
	LifecycleIdentifying
	LifecycleResuming
	LifecycleReady
	LifecycleResumed
	LifecycleReconnecting
	LifecycleInvalidated
	LifecycleStopped
	LifecycleFailed
)

var lifecycleNames = [...]string{"created", "identifying", "resuming", "ready", "resumed", "reconnecting", "invalidated", "stopped", "failed"}

func (k LifecycleKind) String() string {
	if int(k) < len(lifecycleNames) {
		return lifecycleNames[k]
	}
	return fmt.Sprintf("LifecycleKind(%d)", uint8(k))
}

func (k LifecycleKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Lifecycle reports a change in a shard's life to its owner.
type Lifecycle struct {
	ShardID int
	Kind    LifecycleKind
	At      time.Time
	// Reason says why, for reconnecting, invalidated and failed: a close code and its
	// meaning, "zombie connection", "gateway asked to reconnect", an error.
	Reason string
	Err    error // for failed, and for reconnecting after an error
}

// Info is a snapshot of a shard for status output.
type Info struct {
	ShardID   int           `json:"shard"`
	State     State         `json:"state"`
	SessionID string        `json:"session_id,omitempty"`
	Seq       int64         `json:"seq"`
	Latency   time.Duration `json:"latency_ns"` // last heartbeat round trip
	LastEvent time.Time     `json:"last_event,omitzero"`
	Err       string        `json:"error,omitempty"`
	Counters  Counters      `json:"counters"`
}

// Counters count what happened to a shard since it was created.
type Counters struct {
	Events          uint64 `json:"events"`
	Connects        uint64 `json:"connects"`
	Identifies      uint64 `json:"identifies"`
	Resumes         uint64 `json:"resumes"`
	InvalidSessions uint64 `json:"invalid_sessions"`
	Reconnects      uint64 `json:"reconnects"`
	Zombies         uint64 `json:"zombies"`
	HeartbeatsSent  uint64 `json:"heartbeats_sent"`
	HeartbeatACKs   uint64 `json:"heartbeat_acks"`
	// WireBytes are the gateway's messages as they arrived, compressed when the
	// connection is; PayloadBytes the JSON payloads they decompressed to. Their ratio
	// is what compression saves.
	WireBytes    uint64 `json:"wire_bytes"`
	PayloadBytes uint64 `json:"payload_bytes"`
}
