package fsm

import (
	"errors"
	"fmt"
	"time"

	"github.com/discluster/discluster/session"
)

// MaxShards bounds TotalShards: far above any bot Discord serves today, low enough
// that a corrupt command cannot make a replica allocate without limit.
const MaxShards = 1 << 20

// Config is the cluster-wide configuration.
type Config struct {
	TotalShards        int
	MaxConcurrency     int
	ShardsPerCluster   int
	IdentifyWindow     time.Duration
	Lease              time.Duration
	CheckpointInterval time.Duration
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.TotalShards < 1 || c.TotalShards > MaxShards:
		return fmt.Errorf("TotalShards %d must be in [1, %d]", c.TotalShards, MaxShards)
	case c.MaxConcurrency < 1:
		return fmt.Errorf("MaxConcurrency %d must be at least 1", c.MaxConcurrency)
	case c.ShardsPerCluster < 1:
		return fmt.Errorf("ShardsPerCluster %d must be at least 1", c.ShardsPerCluster)
	case c.IdentifyWindow <= 0:
		return fmt.Errorf("IdentifyWindow %v must be positive", c.IdentifyWindow)
	case c.Lease <= 0:
		return fmt.Errorf("Lease %v must be positive", c.Lease)
	case c.CheckpointInterval <= 0:
		return fmt.Errorf("CheckpointInterval %v must be positive", c.CheckpointInterval)
	}
	return nil
}

// MemberState is a member's standing.
type MemberState uint8

const (
	Alive    MemberState = 0
	Failed   MemberState = 1
	Draining MemberState = 2
	Left     MemberState = 3
)

var memberStateNames = [...]string{"alive", "failed", "draining", "left"}

func (s MemberState) String() string {
	if int(s) < len(memberStateNames) {
		return memberStateNames[s]
	}
	return fmt.Sprintf("MemberState(%d)", uint8(s))
}

func (s MemberState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Member is one node of the cluster.
type Member struct {
	ID         string
	RaftAddr   string
	GossipAddr string
	HTTPAddr   string
	Weight     int
	State      MemberState
	Since      int64 // unix nanoseconds, stamped by the proposer: when State began
}

func (m Member) validate() error {
	switch {
	case m.ID == "":
		return errors.New("member ID is empty")
	case m.Weight < 0:
		return fmt.Errorf("member %q: weight %d is negative", m.ID, m.Weight)
	case m.State > Left:
		return fmt.Errorf("member %q: unknown state %d", m.ID, m.State)
	}
	return nil
}

// Phase is where an assignment is in its life.
type Phase uint8

const (
	// Assigned: the owner runs the shard.
	Assigned Phase = 0
	// Revoking: the shard is to leave its owner, which stops it, writes its final
	// resume state and releases it.
	Revoking Phase = 1
)

func (p Phase) String() string {
	switch p {
	case Assigned:
		return "assigned"
	case Revoking:
		return "revoking"
	}
	return fmt.Sprintf("Phase(%d)", uint8(p))
}

func (p Phase) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// Assignment is one shard's owner.
type Assignment struct {
	Shard int
	Node  string
	Epoch uint64 // the Raft index that wrote it
	Phase Phase
	// Gen is the generation the shard belongs to (the read side fills it in; each
	// generation keeps its own table).
	Gen uint64
}

// FirstGen is the generation a cluster starts with. A reshard starts the next one
// beside it and switches to it: generations count the shard counts a cluster ran.
const FirstGen uint64 = 1

// Reshard is a generation being started beside the current one: Total shards,
// placed, identified and held back until the switch makes it current.
type Reshard struct {
	Gen       uint64
	Total     int
	StartedAt int64 // unix nanoseconds, stamped by the proposer
}

// Resume is what a new owner needs to RESUME a shard's Discord session: its position,
// and when and under which assignment it was written.
type Resume struct {
	Shard int
	session.Position
	Epoch     uint64 // the assignment epoch it was written under
	UpdatedAt int64  // unix nanoseconds, stamped by the proposer
}
