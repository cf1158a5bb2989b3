package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/discluster/discluster/internal/certs"
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/membership"
	"github.com/discluster/discluster/node/sink"
	"github.com/discluster/discluster/shard"
	"github.com/discluster/discluster/transport"
)

// Default ports: gossip (UDP and TCP), the cluster port (Raft and RPC), HTTP.
const (
	DefaultGossipPort  = 7946
	DefaultClusterPort = 7947
	DefaultHTTPPort    = api.DefaultPort
)

// ErrInvalidConfig wraps every configuration error.
var ErrInvalidConfig = errors.New("invalid node config")

// Config configures a node. Start from DefaultConfig. Zero values of the other fields
// take the defaults documented per field; Weight is the exception, as 0 means a node
// that holds no shards, so Config{} is a node that only votes and serves the API.
type Config struct {
	// Name identifies the node in gossip, Raft and the state; it must be unique and
	// stay the same across restarts with one data dir. Default: the host name.
	Name    string
	DataDir string // required: Raft log, snapshots and the node's identity

	GossipAddr  string // bind address, default 0.0.0.0:7946
	ClusterAddr string // bind address of Raft and RPC, default 0.0.0.0:7947
	HTTPAddr    string // the API, default 127.0.0.1:7948 (loopback unless told otherwise)
	// HTTPToken is the API's bearer token. On loopback, reads are open and writes
	// need it; on any other address every route but /healthz needs it, and the node
	// refuses to start without one.
	HTTPToken shard.Token
	// TLS, when set, is the cluster port's mutual TLS: the CA, and this node's
	// certificate and key (see internal/certs). A peer without a certificate the CA
	// issued for the cluster role is refused before any Raft or RPC byte.
	TLS *certs.Files
	// HTTPTLS serves the API over HTTPS with TLS's certificate (reloaded with it);
	// it needs TLS. Clients verify the agent against the CA and authenticate with
	// HTTPToken as over plain HTTP.
	HTTPTLS bool
	// HTTPInsecureLoopback lets writes through without a token when none is set and
	// the API is on loopback (the demo's choice).
	HTTPInsecureLoopback bool
	// Advertise is the IP other nodes reach this one at. Default: the bind IP, or, if
	// that is 0.0.0.0, the private IP gossip picks.
	Advertise string

	Join []string // gossip addresses of any members; retried until one answers
	// EncryptKey encrypts and authenticates gossip (16, 24 or 32 bytes; see
	// membership.ParseKey). The data dir keeps the keyring from then on, and a
	// keyring there wins over this key.
	EncryptKey []byte
	// JoinTimeout gives up joining after this long, with an error on Fatal; 0 retries
	// forever (a node may well start before the others).
	JoinTimeout     time.Duration
	BootstrapExpect int // default 1
	Voters          int // Raft voters, default 5
	Weight          int // relative capacity; DefaultConfig sets 1; 0 holds no shards

	// Shards is the total shard count; 0 asks Discord (GET /gateway/bot).
	// MaxConcurrency 0 also asks Discord, or is 1 when Shards is set and Discord
	// cannot be asked.
	Shards         int
	MaxConcurrency int
	IdentifyWindow time.Duration // default shard.DefaultIdentifyWindow
	// SessionReserve is how many session starts the cluster keeps unspent out of
	// Discord's daily session_start_limit: identifies stop there. Default: 5% of the
	// limit, at least 10.
	SessionReserve int
	// ReshardAutoThreshold, when not 0, lets the leader start a reshard on its own
	// once Discord recommends at least this many times the current shard count (at
	// most once an hour); 0, the default, leaves reshards to operators (and to a
	// shard closed with 4011, which always starts one).
	ReshardAutoThreshold float64

	ShardsPerCluster   int           // shards per local cluster (goroutine group), default 16
	CheckpointInterval time.Duration // default 1 s
	// Lease is the lease a cluster configured by this node uses (default 5 s; see
	// the package doc). The lease is one replicated value: a node joining a cluster
	// follows the cluster's, and logs a warning when its own differs.
	Lease    time.Duration
	MaxMoves int // rebalance handoffs in flight, default 16

	Token       shard.Token
	APIBase     string // default shard.DefaultAPIBase
	GatewayURL  string // default: from GET /gateway/bot
	Intents     uint64
	Compression shard.Compression

	// NoSessionStealing starts every moved shard with IDENTIFY instead of resuming it
	// from the replicated state: what a system without session stealing does. It
	// exists for the benchmark that compares the two; it costs session starts.
	NoSessionStealing bool

	Sink sink.Sink // where delivered events go; default: nowhere (counted only)
	// Handler, in place of Sink, receives the events with the node, for a program
	// that embeds the agent and answers through Send (see Handler).
	Handler Handler
	// Events, when set, are the dispatch types the sink gets (--events); the others
	// move the shards' positions but are not delivered.
	Events []string
	// Commands, when set, is where the bot's workers publish gateway commands (the
	// brokers' gateway_send stream): the node takes its share and sends each through
	// the shard's owner, as POST /v1/shards/{id}/send does.
	Commands CommandSource
	Logger   *slog.Logger

	Timing Timing
	// Filter cuts network paths for tests of partitions; nil in production.
	Filter *transport.Filter
}

// Timing holds the protocol timers. LANTiming is the default; tests shrink them.
type Timing struct {
	RaftHeartbeat     time.Duration
	RaftElection      time.Duration
	RaftLeaderLease   time.Duration
	ProbeInterval     time.Duration // memberlist failure detection
	ProbeTimeout      time.Duration
	SuspicionMult     int
	GossipInterval    time.Duration
	PushPull          time.Duration
	ReconcileInterval time.Duration // the leader's full pass
	ReconnectInterval time.Duration // how often gossip retries failed members (partition heal)
	ReapAfter         time.Duration // a failed member is forgotten after this
	JoinBackoffMax    time.Duration
	// TokenRetryMax caps the wait between asks of GET /gateway/bot while Discord
	// rejects the token: a node recovers by itself at most this long after the token
	// becomes valid.
	TokenRetryMax time.Duration
}

// LANTiming suits machines on one network.
func LANTiming() Timing {
	return Timing{
		RaftHeartbeat:     1000 * time.Millisecond,
		RaftElection:      1000 * time.Millisecond,
		RaftLeaderLease:   500 * time.Millisecond,
		ProbeInterval:     1 * time.Second,
		ProbeTimeout:      500 * time.Millisecond,
		SuspicionMult:     4,
		GossipInterval:    200 * time.Millisecond,
		PushPull:          30 * time.Second,
		ReconcileInterval: 1 * time.Second,
		ReconnectInterval: 10 * time.Second,
		ReapAfter:         72 * time.Hour,
		JoinBackoffMax:    30 * time.Second,
		TokenRetryMax:     time.Minute,
	}
}

// FastTiming suits one machine (tests, the demo): failures are detected in about a
// second, and a lease of 3 s fits a leader election with room to spare.
func FastTiming() Timing {
	return Timing{
		RaftHeartbeat:     500 * time.Millisecond,
		RaftElection:      500 * time.Millisecond,
		RaftLeaderLease:   250 * time.Millisecond,
		ProbeInterval:     200 * time.Millisecond,
		ProbeTimeout:      100 * time.Millisecond,
		SuspicionMult:     2,
		GossipInterval:    50 * time.Millisecond,
		PushPull:          2 * time.Second,
		ReconcileInterval: 200 * time.Millisecond,
		ReconnectInterval: 500 * time.Millisecond,
		ReapAfter:         time.Hour,
		JoinBackoffMax:    2 * time.Second,
		TokenRetryMax:     2 * time.Second,
	}
}

// DefaultConfig is the configuration every caller starts from: every default the
// fields document, Weight 1 included.
func DefaultConfig() Config {
	c := Config{Weight: 1}.withDefaults()
	c.Logger = nil // withDefaults picks a discarding one; the caller may set its own
	return c
}

func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name, _ = os.Hostname()
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.GossipAddr, net.JoinHostPort("0.0.0.0", strconv.Itoa(DefaultGossipPort)))
	def(&c.ClusterAddr, net.JoinHostPort("0.0.0.0", strconv.Itoa(DefaultClusterPort)))
	def(&c.HTTPAddr, net.JoinHostPort("127.0.0.1", strconv.Itoa(DefaultHTTPPort)))
	def(&c.APIBase, shard.DefaultAPIBase)
	defInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defInt(&c.BootstrapExpect, 1)
	defInt(&c.Voters, 5)
	defInt(&c.ShardsPerCluster, 16)
	defInt(&c.MaxMoves, 16)
	defDur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	defDur(&c.IdentifyWindow, shard.DefaultIdentifyWindow)
	defDur(&c.CheckpointInterval, time.Second)
	defDur(&c.Lease, 5*time.Second)
	if c.Timing == (Timing{}) {
		c.Timing = LANTiming()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first invalid field, by its flag name.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Name == "":
		return bad("--name is empty and the host name is unknown")
	case len(c.Name) > 128:
		return bad("--name %q is longer than 128 bytes", c.Name)
	case c.DataDir == "":
		return bad("--data-dir is required: Raft keeps its log and snapshots there")
	case c.BootstrapExpect < 1:
		return bad("--bootstrap-expect %d must be at least 1", c.BootstrapExpect)
	case c.Voters < 1:
		return bad("--voters %d must be at least 1", c.Voters)
	case c.Weight < 0:
		return bad("--weight %d must not be negative", c.Weight)
	case c.Shards < 0:
		return bad("--shards %d must be positive, or auto", c.Shards)
	case c.MaxConcurrency < 0:
		return bad("--max-concurrency %d must be positive", c.MaxConcurrency)
	case c.ShardsPerCluster < 1:
		return bad("--shards-per-cluster %d must be at least 1", c.ShardsPerCluster)
	case c.IdentifyWindow <= 0:
		return bad("--identify-window %v must be positive (Discord's is 5s)", c.IdentifyWindow)
	case c.Lease <= 0:
		return bad("--lease %v must be positive", c.Lease)
	case c.CheckpointInterval <= 0:
		return bad("--checkpoint-interval %v must be positive", c.CheckpointInterval)
	case c.JoinTimeout < 0:
		return bad("--join-timeout %v must not be negative (0 retries forever)", c.JoinTimeout)
	case c.CheckpointInterval >= c.Lease:
		return bad("--checkpoint-interval %v must be shorter than --lease %v", c.CheckpointInterval, c.Lease)
	case c.Lease < 5*c.Timing.RaftHeartbeat:
		return bad("--lease %v must be at least 5 Raft heartbeat timeouts (%v): a leader election must fit well inside one lease, or every leader change suspends every shard", c.Lease, 5*c.Timing.RaftHeartbeat)
	case c.SessionReserve < 0:
		return bad("--session-reserve %d must not be negative", c.SessionReserve)
	case c.ReshardAutoThreshold != 0 && !(c.ReshardAutoThreshold >= 1):
		return bad("--reshard-auto-threshold %g: 0 (off) or at least 1, the factor by which Discord's recommended shard count must exceed the current one", c.ReshardAutoThreshold)
	}
	for _, a := range []struct{ flag, v string }{{"--gossip-addr", c.GossipAddr}, {"--cluster-addr", c.ClusterAddr}, {"--http-addr", c.HTTPAddr}} {
		if _, _, err := membership.SplitHostPort(a.v); err != nil {
			return bad("%s %q: %v", a.flag, a.v, err)
		}
	}
	for _, j := range c.Join {
		host, _, err := membership.SplitHostPort(j)
		if err != nil {
			return bad("--join %q: %v", j, err)
		}
		if net.ParseIP(host) == nil {
			if _, err := net.LookupHost(host); err != nil {
				return bad("--join %q: cannot resolve %s: %v", j, host, err)
			}
		}
	}
	if n := len(c.EncryptKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return bad("--encrypt: %v", membership.ErrBadKey)
	}
	if c.TLS != nil && (c.TLS.CA == "" || c.TLS.Cert == "" || c.TLS.Key == "") {
		return bad("--tls-ca, --tls-cert and --tls-key go together")
	}
	for _, e := range c.Events {
		if !isEventName(e) {
			return bad("--events %q: a dispatch name as Discord writes it, like MESSAGE_CREATE", e)
		}
	}
	if c.Sink != nil && c.Handler != nil {
		return bad("Sink and Handler: set one (a Handler can hand its events on to a Sink)")
	}
	if c.HTTPTLS && c.TLS == nil {
		return bad("--http-tls serves the API with this node's certificate: it needs --tls-ca, --tls-cert and --tls-key")
	}
	if !IsLoopback(c.HTTPAddr) && c.HTTPToken == "" {
		return bad("--http-addr %s is not loopback: the API then needs a token (--http-token-file, or DISCLUSTER_HTTP_TOKEN), or anyone who reaches the port could drain the cluster", c.HTTPAddr)
	}
	if c.Advertise != "" && net.ParseIP(c.Advertise) == nil {
		return bad("--advertise %q is not an IP address", c.Advertise)
	}
	return nil
}

// IsLoopback reports whether addr (host:port) binds to loopback only.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ParseGossipKey decodes a gossip key (base64 of 16, 24 or 32 bytes) for EncryptKey.
func ParseGossipKey(s string) ([]byte, error) { return membership.ParseKey(s) }

// NewGossipKey makes a gossip key: 32 random bytes, base64, as discluster keygen prints.
func NewGossipKey() string { return membership.NewKey() }

// isEventName reports whether s could be a dispatch name: upper-case letters, digits
// and underscores.
func isEventName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}
