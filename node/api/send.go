package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// Refusals of a command, each with its code on the wire and in ErrorBody.Code.
var (
	ErrUnknownShard = errors.New("no such shard")
	// ErrNotReady: the shard's owner has no established session for it right now
	// (connecting, resuming): worth retrying.
	ErrNotReady = errors.New("the shard has no established session")
	// ErrOwnerMoving: the shard is being handed off or failed over, or this node has
	// not caught up with its new owner: worth retrying.
	ErrOwnerMoving = errors.New("the shard's owner is changing")
	// ErrRateLimited: the connection's send limit (120 a minute, a few kept for
	// heartbeats) is used up; a *RetryError says when it frees.
	ErrRateLimited     = errors.New("the shard's send limit is used up")
	ErrPayloadTooLarge = errors.New("the payload is over Discord's 4096 bytes")
	ErrBadCommand      = errors.New("not a command a bot may send")
)

// Codes of the refusals above.
const (
	CodeUnknownShard    = "unknown_shard"
	CodeNotReady        = "not_ready"
	CodeOwnerMoving     = "owner_moving"
	CodeRateLimited     = "rate_limited"
	CodePayloadTooLarge = "payload_too_large"
	CodeBadCommand      = "bad_command"
)

// RetryError is a refusal worth retrying after After.
type RetryError struct {
	Err   error
	After time.Duration
}

func (e *RetryError) Error() string {
	return fmt.Sprintf("%v (retry after %v)", e.Err, e.After.Round(time.Millisecond))
}
func (e *RetryError) Unwrap() error { return e.Err }

// CommandOps are the gateway opcodes a bot may send through the cluster: presence
// update (3), voice state update (4), request guild members (8), request soundboard
// sounds (31) and request channel info (43). IDENTIFY, RESUME and heartbeats are the
// shard's own.
var CommandOps = []int{3, 4, 8, 31, 43}

// Command is a gateway payload a bot sends: {"op": 3, "d": {...}}.
type Command struct {
	Op int             `json:"op"`
	D  json.RawMessage `json:"d"`
}

// Check refuses a command a bot may not send, or without an object d.
func (c Command) Check() error {
	if !slices.Contains(CommandOps, c.Op) {
		return fmt.Errorf("%w: op %d (a bot sends ops %v; heartbeats, IDENTIFY and RESUME are the shard's own)", ErrBadCommand, c.Op, CommandOps)
	}
	var d map[string]json.RawMessage
	if len(c.D) == 0 || json.Unmarshal(c.D, &d) != nil || d == nil {
		return fmt.Errorf("%w: d must be a JSON object", ErrBadCommand)
	}
	return nil
}

// Guild is the guild a command is about, for the ops that name one in d.guild_id
// (voice state 4, request guild members 8, request channel info 43): it must go to
// that guild's shard.
func (c Command) Guild() (uint64, bool) {
	if c.Op != 4 && c.Op != 8 && c.Op != 43 {
		return 0, false
	}
	var d struct {
		GuildID json.RawMessage `json:"guild_id"`
	}
	if json.Unmarshal(c.D, &d) != nil {
		return 0, false
	}
	return ParseSnowflake(d.GuildID)
}

// ParseSnowflake reads a snowflake as Discord writes it: a decimal string, or a
// number.
func ParseSnowflake(raw json.RawMessage) (uint64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, false
		}
		raw = []byte(s)
	}
	id, err := strconv.ParseUint(string(raw), 10, 64)
	return id, err == nil
}

// ShardOf is the shard that receives guild's events, of total: (guild_id >> 22) %
// total, Discord's rule.
func ShardOf(guild uint64, total int) int { return int((guild >> 22) % uint64(total)) }

// Target is the shard a command goes to: Shard, or (ByGuild) the shard of Guild,
// (guild_id >> 22) % total shards.
type Target struct {
	Shard   int
	Guild   uint64
	ByGuild bool
}

// Sent is a command written to the shard's connection.
type Sent struct {
	Sent  bool   `json:"sent"`
	Shard int    `json:"shard"`
	Node  string `json:"node"` // the node that wrote it: the shard's owner
}

// sendCodes answers each refusal with its status and code.
var sendCodes = []struct {
	err    error
	status int
	code   string
}{
	{ErrUnknownShard, http.StatusNotFound, CodeUnknownShard},
	{ErrBadCommand, http.StatusBadRequest, CodeBadCommand},
	{ErrPayloadTooLarge, http.StatusRequestEntityTooLarge, CodePayloadTooLarge},
	{ErrRateLimited, http.StatusTooManyRequests, CodeRateLimited},
	{ErrNotReady, http.StatusServiceUnavailable, CodeNotReady},
	{ErrOwnerMoving, http.StatusServiceUnavailable, CodeOwnerMoving},
}

// sendRoute serves POST /v1/shards/{id}/send and /v1/guilds/{guild_id}/send.
func sendRoute(b Backend, byGuild bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var t Target
		if byGuild {
			g, err := strconv.ParseUint(r.PathValue("guild_id"), 10, 64)
			if err != nil {
				writeJSON(w, http.StatusBadRequest, ErrorBody{Error: "the guild id must be a snowflake (a decimal number)", Code: CodeBadRequest})
				return
			}
			t = Target{Guild: g, ByGuild: true}
		} else {
			id, err := strconv.Atoi(r.PathValue("id"))
			if err != nil || id < 0 {
				writeJSON(w, http.StatusBadRequest, ErrorBody{Error: "the shard id must be a number from 0", Code: CodeBadRequest})
				return
			}
			t = Target{Shard: id}
		}
		var c Command
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			writeJSON(w, http.StatusBadRequest, ErrorBody{Error: `the body must be a gateway payload, {"op": 3, "d": {...}}: ` + err.Error(), Code: CodeBadRequest})
			return
		}
		if err := c.Check(); err != nil {
			writeJSON(w, http.StatusBadRequest, ErrorBody{Error: err.Error(), Code: CodeBadCommand})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), writeTimeout)
		defer cancel()
		sent, err := b.Send(ctx, t, c)
		if err != nil {
			writeSendError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, sent)
	}
}

func writeSendError(w http.ResponseWriter, err error) {
	var retry *RetryError
	if errors.As(err, &retry) {
		w.Header().Set("Retry-After", strconv.Itoa(int((retry.After+time.Second-1)/time.Second)))
	}
	for _, c := range sendCodes {
		if errors.Is(err, c.err) {
			if c.status == http.StatusServiceUnavailable && retry == nil {
				w.Header().Set("Retry-After", "1")
			}
			writeJSON(w, c.status, ErrorBody{Error: err.Error(), Code: c.code})
			return
		}
	}
	writeError(w, err, http.StatusConflict)
}

// Send sends a gateway command to the target shard through the agent, which
// forwards it to the shard's owner. A refusal is an *Error whose Code is one of
// the Code... constants above (unknown_shard, rate_limited, ...).
func (c *Client) Send(ctx context.Context, t Target, cmd Command) (Sent, error) {
	path := fmt.Sprintf("/v1/shards/%d/send", t.Shard)
	if t.ByGuild {
		path = fmt.Sprintf("/v1/guilds/%d/send", t.Guild)
	}
	body, err := json.Marshal(cmd)
	if err != nil {
		return Sent{}, err
	}
	answer, err := c.DoBody(ctx, http.MethodPost, path, body)
	if err != nil {
		return Sent{}, err
	}
	var s Sent
	if err := json.Unmarshal(answer, &s); err != nil {
		return Sent{}, fmt.Errorf("%s: %w", c.Addr, err)
	}
	return s, nil
}
