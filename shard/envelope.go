package shard

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Gateway opcodes (developers/topics/opcodes-and-status-codes).
const (
	OpDispatch                = 0
	OpHeartbeat               = 1
	OpIdentify                = 2
	OpPresenceUpdate          = 3
	OpVoiceStateUpdate        = 4
	OpResume                  = 6
	OpReconnect               = 7
	OpRequestGuildMembers     = 8
	OpInvalidSession          = 9
	OpHello                   = 10
	OpHeartbeatACK            = 11
	OpRequestSoundboardSounds = 31
	OpRequestChannelInfo      = 43
)

// envelope is the part of a gateway payload the read path decodes. D stays raw: the
// handler decides what, if anything, to decode, so a shard's cost per event does not
// grow with the size or shape of Discord's payloads.
type envelope struct {
	Op int             `json:"op"`
	D  json.RawMessage `json:"d"`
	S  int64           `json:"s"` // null leaves 0: Discord's sequence numbers start at 1
	T  string          `json:"t"`
}

var errNotObject = errors.New("gateway payload is not a JSON object")

// decodeEnvelope parses one uncompressed gateway payload. The returned D does not
// alias p, so the caller may reuse p.
func decodeEnvelope(p []byte) (envelope, error) {
	var env envelope
	if err := json.Unmarshal(p, &env); err != nil {
		return envelope{}, fmt.Errorf("decode gateway payload: %w", err)
	}
	return env, env.check()
}

// check rejects payloads that are valid JSON but not gateway envelopes: a top-level
// array or string unmarshals into the struct as an error already, but "null" does
// not, and a payload without "op" would silently look like a dispatch.
func (e *envelope) check() error {
	if e.Op == OpDispatch && e.T == "" {
		return errors.New("decode gateway payload: dispatch without an event name (t)")
	}
	return nil
}
