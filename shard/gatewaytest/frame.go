package gatewaytest

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Gateway opcodes a client may send, and the ones the fake sends.
const (
	opDispatch            = 0
	opHeartbeat           = 1
	opIdentify            = 2
	opPresenceUpdate      = 3
	opVoiceStateUpdate    = 4
	opResume              = 6
	opReconnect           = 7
	opRequestGuildMembers = 8
	opInvalidSession      = 9
	opHello               = 10
	opHeartbeatACK        = 11
	opRequestSoundboard   = 31
	opRequestChannelInfo  = 43
)

// Gateway close codes the fake sends (Discord's table; 4006 no longer exists).
const (
	closeUnknownError         = 4000
	closeUnknownOpcode        = 4001
	closeDecodeError          = 4002
	closeNotAuthenticated     = 4003
	closeAuthenticationFailed = 4004
	closeAlreadyAuthenticated = 4005
	closeInvalidSeq           = 4007
	closeRateLimited          = 4008
	closeSessionTimedOut      = 4009
	closeInvalidShard         = 4010
	closeShardingRequired     = 4011
	closeInvalidAPIVersion    = 4012
	closeInvalidIntents       = 4013
	closeDisallowedIntents    = 4014
)

// Close codes chosen where Discord does not document one.
const (
	// closeHeartbeatTimeout closes a connection that missed its heartbeat
	// deadline. Discord says only that the client "has to resume", so the
	// code must be one every reading treats as resumable: 4000 is the only
	// generic code that both the docs and the community testing in
	// discord-api-docs#7172 mark as reconnect-and-resume.
	closeHeartbeatTimeout = closeUnknownError
	// closeSessionTakenOver closes the older connection when a RESUME of its
	// session arrives on another one. A resumable code would invite the old
	// client to resume straight back and the two would steal the session
	// from each other forever; 4009 means "start a new session".
	closeSessionTakenOver = closeSessionTimedOut
)

// maxPayload is Discord's limit on one client payload; larger ones get 4002.
const maxPayload = 4096

// intent bits Discord defines; any other bit gets 4013.
const (
	intentGuildMembers   = 1 << 1
	intentGuildPresences = 1 << 8
	intentGuildMessages  = 1 << 9
	intentDirectMessages = 1 << 12
	intentMessageContent = 1 << 15

	definedIntents    = 1<<17 - 1 | 1<<20 | 1<<21 | 1<<24 | 1<<25
	privilegedIntents = intentGuildMembers | intentGuildPresences | intentMessageContent
)

// closeErr is the fake's verdict on a client: close the connection with
// Code. Reason goes into the close frame, so it never contains client data.
type closeErr struct {
	Code   int
	Reason string
}

func (e *closeErr) Error() string { return fmt.Sprintf("close %d: %s", e.Code, e.Reason) }

func closeWith(code int, reason string) *closeErr { return &closeErr{Code: code, Reason: reason} }

// clientFrame is one decoded client payload. Exactly one of the typed
// fields matching Op is set for ops the fake acts on.
type clientFrame struct {
	Op int
	// Heartbeat is d of op 1: the client's last seq, nil for null.
	Heartbeat *int64
	Identify  *identifyData
	Resume    *resumeData
}

type identifyData struct {
	Token      string          `json:"token"`
	Properties json.RawMessage `json:"properties"`
	Intents    *int64          `json:"intents"`
	Shard      []int64         `json:"shard"`
	Compress   bool            `json:"compress"`
}

type resumeData struct {
	Token     string `json:"token"`
	SessionID string `json:"session_id"`
	Seq       *int64 `json:"seq"`
}

// parseClientFrame decodes and validates one client payload without any
// connection state. It is pure so that it can be fuzzed. A syntax error,
// a non-object, or an op that is not an integer is a decode error (4002);
// an unknown op, or a d of the wrong shape for a known op, is 4001 ("invalid
// payload for an opcode").
func parseClientFrame(b []byte) (clientFrame, *closeErr) {
	if len(b) > maxPayload {
		return clientFrame{}, closeWith(closeDecodeError, "payload larger than 4096 bytes")
	}
	var env struct {
		Op *json.RawMessage `json:"op"`
		D  json.RawMessage  `json:"d"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return clientFrame{}, closeWith(closeDecodeError, "error while decoding payload")
	}
	if env.Op == nil {
		return clientFrame{}, closeWith(closeDecodeError, "payload has no op")
	}
	var op int
	if err := json.Unmarshal(*env.Op, &op); err != nil {
		return clientFrame{}, closeWith(closeDecodeError, "op is not an integer")
	}
	f := clientFrame{Op: op}
	d := bytes.TrimSpace(env.D)
	isNull := len(d) == 0 || string(d) == "null"
	isObject := len(d) > 0 && d[0] == '{'
	switch op {
	case opHeartbeat:
		if !isNull {
			var seq int64
			if err := json.Unmarshal(d, &seq); err != nil {
				return clientFrame{}, closeWith(closeUnknownOpcode, "heartbeat d must be an integer or null")
			}
			f.Heartbeat = &seq
		}
	case opIdentify:
		var id identifyData
		if !isObject || json.Unmarshal(d, &id) != nil {
			return clientFrame{}, closeWith(closeUnknownOpcode, "invalid identify payload")
		}
		f.Identify = &id
	case opResume:
		var r resumeData
		if !isObject || json.Unmarshal(d, &r) != nil {
			return clientFrame{}, closeWith(closeUnknownOpcode, "invalid resume payload")
		}
		f.Resume = &r
	case opPresenceUpdate, opVoiceStateUpdate, opRequestGuildMembers, opRequestSoundboard, opRequestChannelInfo:
		if !isObject {
			return clientFrame{}, closeWith(closeUnknownOpcode, "d must be an object")
		}
	default:
		return clientFrame{}, closeWith(closeUnknownOpcode, "unknown opcode")
	}
	return f, nil
}

// shardOf returns the [id, total] an IDENTIFY asks for; no shard field means
// [0, 1] as on Discord.
func (id *identifyData) shardOf() (shardID, total int, err *closeErr) {
	if id.Shard == nil {
		return 0, 1, nil
	}
	if len(id.Shard) != 2 {
		return 0, 0, closeWith(closeInvalidShard, "invalid shard")
	}
	sid, tot := id.Shard[0], id.Shard[1]
	// The upper bound keeps int conversion and guild arithmetic safe; no bot
	// has a million shards.
	if tot < 1 || tot > 1<<20 || sid < 0 || sid >= tot {
		return 0, 0, closeWith(closeInvalidShard, "invalid shard")
	}
	return int(sid), int(tot), nil
}

// checkIntents applies Discord's intent rules: intents are required since
// v8 and may hold only defined bits (4013); privileged ones need approval
// (4014).
func checkIntents(intents *int64, denyPrivileged bool) *closeErr {
	if intents == nil {
		return closeWith(closeInvalidIntents, "intents are required")
	}
	if *intents < 0 || *intents&^definedIntents != 0 {
		return closeWith(closeInvalidIntents, "invalid intent(s)")
	}
	if denyPrivileged && *intents&privilegedIntents != 0 {
		return closeWith(closeDisallowedIntents, "disallowed intent(s)")
	}
	return nil
}
