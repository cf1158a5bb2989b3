package shard

import (
	"bytes"
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

// decodeEnvelope parses one uncompressed gateway payload: exactly one JSON value,
// with white space around it at most. The returned D does not alias p, so the
// caller may reuse p.
func decodeEnvelope(p []byte) (envelope, error) {
	env, n, err := scanEnvelope(p)
	if err == errIncomplete {
		err = errors.New("decode gateway payload: unexpected end of JSON input")
	}
	if err != nil {
		return envelope{}, err
	}
	if skipSpace(p, n) != len(p) {
		return envelope{}, fmt.Errorf("decode gateway payload: data after the payload at offset %d", n)
	}
	env.D = bytes.Clone(env.D)
	return env, nil
}

// check rejects payloads that are valid JSON but not gateway envelopes: a payload
// without "op" would silently look like a dispatch.
func (e *envelope) check() error {
	if e.Op == OpDispatch && e.T == "" {
		return errors.New("decode gateway payload: dispatch without an event name (t)")
	}
	return nil
}
