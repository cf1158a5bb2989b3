package shard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/discluster/discluster/session"
	"log/slog"
	"net/http"
	"time"
)

// DefaultAPIBase is Discord's v10 REST API.
const DefaultAPIBase = "https://discord.com/api/v10"

// Config describes one shard. Zero durations and limits take the defaults Discord
// documents; tests shorten them to run the production code paths in milliseconds.
type Config struct {
	Token      Token
	ShardID    int
	ShardCount int
	Intents    uint64

	// GatewayURL is where new sessions connect (the url of GET /gateway/bot). Empty
	// means ask APIBase. A node fetches it once and shares it with every shard: Discord
	// allows 50 REST requests per second for the whole bot.
	GatewayURL string
	APIBase    string // default DefaultAPIBase

	Compression    Compression     // default CompressionZlibStream
	LargeThreshold int             // 50..250, default 50
	Presence       json.RawMessage // optional initial presence (an update-presence object)
	Properties     Properties      // default os=runtime, browser=device="discluster"

	// Resume is the session to continue. When it holds a session id the shard
	// RESUMEs it (on its resume URL) instead of identifying: this is how a session
	// moves from a dead or draining node to this one.
	Resume ResumeState

	Gate IdentifyGate // required unless every start is a resume; see LocalGate
	// Permit, when set, is asked right before every IDENTIFY and RESUME is written
	// (after the gate's grant). An error closes the connection resumably without
	// logging in, and Run returns an error wrapping ErrNotPermitted: whoever runs
	// shards on a lease checks it here, so a process that was paused or cut off
	// never logs in a session that may have moved elsewhere meanwhile.
	Permit   func() error
	Dispatch Dispatcher // required: receives every dispatch, in order
	Observe  func(Lifecycle)
	// ObserveLatency, when set, is called with the round trip of every heartbeat
	// the gateway acknowledges (every 41 s or so), from the read loop: it must not
	// block. Metrics keep a histogram of it; Info holds only the last one.
	ObserveLatency func(rtt time.Duration)

	HTTPClient *http.Client
	Logger     *slog.Logger

	HandshakeTimeout time.Duration // websocket dial and upgrade; default 30 s
	HelloTimeout     time.Duration // HELLO after the upgrade; default 60 s
	CloseTimeout     time.Duration // waiting for the gateway to answer our close; default 1 s
	WriteTimeout     time.Duration // one payload write; default 10 s
	// InvalidSessionDelay bounds the random wait before identifying again after an
	// INVALID_SESSION(false): Discord asks for 1 to 5 s.
	InvalidSessionDelayMin time.Duration
	InvalidSessionDelayMax time.Duration
	SendLimit              int           // payloads per SendWindow per connection; default 120
	SendWindow             time.Duration // default 60 s
	MaxMessageSize         int64         // largest websocket message accepted; default 64 MiB
}

// Properties are the connection properties sent in IDENTIFY.
type Properties struct {
	OS      string `json:"os"`
	Browser string `json:"browser"`
	Device  string `json:"device"`
}

// ResumeState is what another connection, process or node needs to continue a
// session: the one position shape of every layer.
type ResumeState = session.Position

// Dispatcher receives the dispatches of a shard. Dispatch may block: that is the
// back-pressure a slow handler applies (the shard stops reading its socket, never
// drops an event). It returns an error only when ctx ends, and then the event counts
// as not delivered, so the sequence number is not advanced past it.
type Dispatcher interface {
	Dispatch(ctx context.Context, ev Event) error
}

// DispatchFunc adapts a function to Dispatcher.
type DispatchFunc func(ctx context.Context, ev Event) error

func (f DispatchFunc) Dispatch(ctx context.Context, ev Event) error { return f(ctx, ev) }

// Errors a caller can branch on.
var (
	ErrInvalidConfig   = errors.New("invalid shard config")
	ErrPayloadTooLarge = errors.New("gateway payload over 4096 bytes")
	ErrNotConnected    = errors.New("shard has no established session")
	ErrManagedOpcode   = errors.New("opcode is managed by the shard itself")
	ErrStopped         = errors.New("shard stopped")
	ErrNotPermitted    = errors.New("login not permitted")
	// ErrRateLimited refuses a command the connection's send limit would hold past
	// the caller's deadline; a *RateLimitedError says when to try again.
	ErrRateLimited = errors.New("send limit reached")
)

// RateLimitedError is ErrRateLimited with the wait: the send limit frees a slot for
// a command after RetryAfter.
type RateLimitedError struct{ RetryAfter time.Duration }

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("%v: retry after %v", ErrRateLimited, e.RetryAfter.Round(time.Millisecond))
}

func (e *RateLimitedError) Is(target error) bool { return target == ErrRateLimited }

// MaxPayloadSize is the largest payload a client may send; Discord closes with 4002
// on anything larger.
const MaxPayloadSize = 4096

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.APIBase == "" {
		c.APIBase = DefaultAPIBase
	}
	if c.Compression == "" {
		c.Compression = CompressionZlibStream
	}
	if c.LargeThreshold == 0 {
		c.LargeThreshold = 50
	}
	if c.Properties == (Properties{}) {
		c.Properties = Properties{OS: goos, Browser: "discluster", Device: "discluster"}
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	setDefault(&c.HandshakeTimeout, 30*time.Second)
	setDefault(&c.HelloTimeout, 60*time.Second)
	setDefault(&c.CloseTimeout, time.Second)
	setDefault(&c.WriteTimeout, 10*time.Second)
	setDefault(&c.InvalidSessionDelayMin, time.Second)
	setDefault(&c.InvalidSessionDelayMax, 5*time.Second)
	setDefault(&c.SendWindow, 60*time.Second)
	if c.SendLimit == 0 {
		c.SendLimit = 120
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = 64 << 20
	}
	return c
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d == 0 {
		*d = v
	}
}

// Validate names the first field that is wrong, with the bound it breaks.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Token == "":
		return bad("Token is empty")
	case c.ShardCount < 1:
		return bad("ShardCount %d must be at least 1", c.ShardCount)
	case c.ShardID < 0 || c.ShardID >= c.ShardCount:
		return bad("ShardID %d must be in [0, %d)", c.ShardID, c.ShardCount)
	case c.Dispatch == nil:
		return bad("Dispatch is nil")
	case c.Gate == nil && !c.Resume.Resumable():
		return bad("Gate is nil and there is no session to resume")
	case c.LargeThreshold < 50 || c.LargeThreshold > 250:
		return bad("LargeThreshold %d must be in [50, 250]", c.LargeThreshold)
	case c.Compression != CompressionZlibStream && c.Compression != CompressionZstdStream && c.Compression != CompressionNone && c.Compression != CompressionPayload:
		return bad("Compression %q must be zlib-stream, zstd-stream, payload or none", c.Compression)
	case c.InvalidSessionDelayMax < c.InvalidSessionDelayMin:
		return bad("InvalidSessionDelayMax %v is below InvalidSessionDelayMin %v", c.InvalidSessionDelayMax, c.InvalidSessionDelayMin)
	case c.SendLimit < 2:
		return bad("SendLimit %d must be at least 2", c.SendLimit)
	case c.Presence != nil && !json.Valid(c.Presence):
		return bad("Presence is not valid JSON")
	}
	return nil
}
