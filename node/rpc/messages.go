package rpc

import (
	"time"

	"github.com/discluster/discluster/fsm"
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/shard"
)

// ApplyArgs carries one encoded fsm command to the leader.
type ApplyArgs struct{ Command []byte }

// ApplyReply is the command's outcome.
type ApplyReply struct {
	Status
	Index   uint64
	Applied int
	Stale   []fsm.Stale
}

// Every request below is the node's that its connection named (see hello): a Node
// field in one is overwritten with that name where it arrives, so no node asks for
// another.

// RenewArgs asks the leader to renew a node's lease. Unfit, when set, says why the
// node should hold no shards for now (Discord rejects its token): the leader gives it
// a lease but no shards.
type RenewArgs struct {
	Node  string
	Unfit string
	// ShardingRequired, when not 0, is the generation of a shard of the node that
	// Discord closed with 4011 (too many guilds for the shard count): the leader
	// starts a reshard.
	ShardingRequired uint64
}

// LeaseGrant is a lease the leader gave: valid for Lease from the asker's request,
// once the asker's state machine reached Index.
type LeaseGrant struct {
	Index uint64
	Lease time.Duration
}

// RenewReply grants the lease for Lease, the cluster's replicated value, counted by
// the node from when it sent the request. The node counts it only once its state
// machine has applied Index, so that it has seen every move the leader had made by then.
type RenewReply struct {
	Status
	LeaseGrant
}

// IdentifyArgs asks the leader for a turn to IDENTIFY shard Shard, which Node runs
// under the assignment of Epoch. The leader grants it only while that is the shard's
// current assignment and Node holds a lease.
type IdentifyArgs struct {
	Node  string
	Gen   uint64 // the shard's generation; 0 (an agent before reshards) is the first
	Shard int
	Epoch uint64
}

// IdentifyReply grants it. Waited is how long the request waited at the leader before
// the grant: the asker subtracts it from its round trip to bound how old the grant is
// without comparing clocks.
type IdentifyReply struct {
	Status
	Waited time.Duration
}

// IdentifySentArgs tells the leader that the IDENTIFY it granted shard Shard has been
// written: the bucket's next grant is timed from here, not from the grant.
type IdentifySentArgs struct {
	Node  string
	Shard int
}

// IdentifySentReply is empty.
type IdentifySentReply struct{ Status }

// ShardsArgs asks a node what its shards are doing.
type ShardsArgs struct{}

// ShardsReply is a node's local view, for status.
type ShardsReply struct {
	Status
	Shards []LocalShard
	Budget *api.Budget // from the leader only
	Fences []api.Fence // from the leader only
	Lease  api.Lease
	Sink   api.Sink
	Unfit  string // why the node holds no shards now, "" when it may
	Events []event.Event
}

// LocalShard is a shard as its node runs it.
type LocalShard struct {
	Info    shard.Info
	Cluster int
	Epoch   uint64
	Gen     uint64 // the generation it belongs to
	// Warm is a shard of a reshard's generation that is READY and has received all of
	// its guilds, so the switch may make it deliver. (Always false for the current
	// generation's.)
	Warm bool
}

// CutArgs asks a node for its cut of generation Gen, which a reshard's switch ended:
// for each of Shards (of a generation of Total), the last event it delivered of each
// of the shard's guilds, and the earlier ones of the cut-over's last half window.
type CutArgs struct {
	Gen    uint64
	Total  int
	Shards []int
}

// CutKey names one event across generations, its guild and a hash of its type and
// d, and how long before the old generation stopped it was delivered there. Earlier
// marks a delivery before the guild's last (cutover.CutEntry).
type CutKey struct {
	Guild   uint64
	Hash    uint64
	Age     time.Duration
	Earlier bool
}

// CutReply is a node's cut. Final is false while the generation still delivers
// there: ask again.
type CutReply struct {
	Status
	Final bool
	Keys  map[int][]CutKey
}

// ReshardArgs asks the leader to start a reshard to Shards shards (with Auto, to
// Discord's recommendation), or with Cancel to drop the one that runs.
type ReshardArgs struct {
	Shards int
	Auto   bool
	Cancel bool
}

// ReshardReply is the reshard started or cancelled.
type ReshardReply struct {
	Status
	Reshard fsm.Reshard
}

// PromiseArgs asks a node to wait for the asker's bootstrap, or (Release) frees it.
type PromiseArgs struct {
	Release bool
}

// PromiseReply is empty: an error is a refusal.
type PromiseReply struct{ Status }

// SendArgs carries a gateway command toward shard Shard's owner, as the sender saw it
// at Epoch; Hops counts the forwards so far (see MaxSendHops).
type SendArgs struct {
	Shard int
	Epoch uint64
	Op    int
	D     []byte
	Hops  int
}

// SendReply says which node wrote the command; a refusal worth retrying carries
// RetryAfter.
type SendReply struct {
	Status
	Node       string
	RetryAfter time.Duration
}
