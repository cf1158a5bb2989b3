package api

import (
	"time"

	"github.com/discluster/discluster/node/event"
)

// DefaultPort is the API's port unless --http-addr says otherwise.
const DefaultPort = 7948

// Status is what GET /v1/status returns: the cluster as the answering node sees it.
type Status struct {
	Node      string         `json:"node"`
	Cluster   string         `json:"cluster,omitempty"`
	Leader    string         `json:"leader,omitempty"`
	Term      uint64         `json:"term"`
	RaftState string         `json:"raft_state"`
	Applied   uint64         `json:"applied_index"`
	Lease     Lease          `json:"lease"`
	Config    *ShardConfig   `json:"config,omitempty"`
	Budget    *Budget        `json:"session_budget,omitempty"`
	Members   []MemberStatus `json:"members"`
	Shards    []ShardStatus  `json:"shards"`
	// Fences are the failed nodes whose shards wait for the node's last lease to run
	// out before they move (it may still be running them), from the leader.
	Fences []Fence `json:"fences,omitempty"`
	// Reshard is the reshard in progress, nil when none runs; Shards and each
	// member's Shards are the current generation's until its switch.
	Reshard *Reshard `json:"reshard,omitempty"`
	// Events are the recent events of every member that answered, oldest first.
	Events []event.Event `json:"events,omitempty"`
	// Problems lists what the node could not find out (an unreachable member) and
	// what needs an operator (a failing sink).
	Problems []string `json:"problems,omitempty"`
}

// ShardConfig is the replicated shard configuration.
type ShardConfig struct {
	TotalShards        int           `json:"total_shards"`
	MaxConcurrency     int           `json:"max_concurrency"`
	IdentifyWindow     time.Duration `json:"identify_window_ns"`
	Lease              time.Duration `json:"lease_ns"`
	CheckpointInterval time.Duration `json:"checkpoint_interval_ns"`
	// Generation counts the shard counts the cluster ran: 1 until a reshard switched.
	Generation uint64 `json:"generation,omitempty"`
}

// MemberStatus is one node.
type MemberStatus struct {
	ID      string `json:"id"`
	State   string `json:"state"`  // the replicated state: alive, failed, draining, left; "" before the leader records it
	Gossip  string `json:"gossip"` // what gossip says: alive, failed, left
	Raft    string `json:"raft"`   // voter, nonvoter, or ""
	Leader  bool   `json:"leader"`
	Weight  int    `json:"weight"`
	Cluster string `json:"cluster_addr"`
	HTTP    string `json:"http_addr"`
	Shards  int    `json:"shards"`
	Lease   *Lease `json:"lease,omitempty"`
	Sink    *Sink  `json:"sink,omitempty"`
	// Problem is why the node holds no shards though alive (Discord rejects its
	// token); "" when none.
	Problem string `json:"problem,omitempty"`
	// ReshardShards are the shards of a reshard's generation it holds, being warmed.
	ReshardShards int `json:"reshard_shards,omitempty"`
}

// ShardStatus is one shard.
type ShardStatus struct {
	Shard   int    `json:"shard"`
	Node    string `json:"node,omitempty"`
	Epoch   uint64 `json:"epoch,omitempty"`
	Phase   string `json:"phase,omitempty"` // assigned, revoking; "" when unassigned
	Cluster int    `json:"cluster"`
	State   string `json:"state"` // the shard's own state on its owner, or "unassigned", "unknown"
	// Session is the Discord session the shard runs, or resumes next: a session id
	// is no credential without the bot token, and the sinks carry it with each event.
	Session string `json:"session,omitempty"`
	Seq     int64  `json:"seq"`
	// Checkpoint is the seq the replicated state holds: where the shard resumes if its
	// node dies now.
	Checkpoint int64     `json:"checkpoint_seq"`
	Latency    float64   `json:"latency_ms"`
	LastEvent  time.Time `json:"last_event,omitzero"`
	Error      string    `json:"error,omitempty"`
}

// Fence is a failed node whose shards wait until its last lease has run out.
type Fence struct {
	Node   string    `json:"node"`
	Shards int       `json:"shards"`
	Until  time.Time `json:"until"`
}

// Lease is a node's lease: the right to run shards, granted by the leader.
type Lease struct {
	Held   bool      `json:"held"`
	Until  time.Time `json:"until,omitzero"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since,omitzero"`
}

// Sink is a node's event sink: failing, since when, and why.
type Sink struct {
	Failing  bool      `json:"failing"`
	Since    time.Time `json:"since,omitzero"`
	Error    string    `json:"error,omitempty"`
	Failures int64     `json:"failures"`
	// Backlog is how many events the node's shards received that the sink has not
	// accepted yet: they wait in the local clusters' queues.
	Backlog int `json:"backlog"`
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

// Health is what GET /healthz returns: 200 while the node can run shards, 503 when
// it has been without a lease for longer than a start-up allows.
type Health struct {
	Node      string `json:"node"`
	Lease     Lease  `json:"lease"`
	RaftState string `json:"raft_state"`
	Healthy   bool   `json:"healthy"`
	// Problem says why the node is not healthy, "" when it is.
	Problem string `json:"problem,omitempty"`
}

// Drained is the answer to POST /v1/drain/{node}: the drain holds, replicated,
// across every restart until DELETE.
type Drained struct {
	Draining string `json:"draining"`
	Shards   int    `json:"shards"` // held now; they move off one handoff at a time
	State    string `json:"state"`  // the node's state: draining, or failed (it takes nothing when back)
}

// Undrained is the answer to DELETE /v1/drain/{node}.
type Undrained struct {
	Undrained string `json:"undrained"`
}

// KeyringRequest is the body of POST /v1/keyring: install, use or remove a gossip key
// on every member.
type KeyringRequest struct {
	Op  string `json:"op"`
	Key string `json:"key"`
}

// Keyring is the answer of GET and POST /v1/keyring.
type Keyring struct {
	Nodes     int               `json:"nodes"`
	Responded int               `json:"responded"`
	Failed    map[string]string `json:"failed,omitempty"`
	Keys      map[string]int    `json:"keys"`              // key → members holding it
	Primary   map[string]int    `json:"primary,omitempty"` // key → members using it as their primary
}

// ErrorBody is every error answer: a message for people and a code for programs.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}
