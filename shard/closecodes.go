package shard

import "fmt"

// closeAction is what a shard does after the gateway closed its connection.
type closeAction uint8

const (
	// actionResume reconnects to resume_gateway_url and RESUMEs; a resume the server
	// refuses (op 9 false) still falls back to IDENTIFY, so resuming is the safe default.
	actionResume closeAction = iota
	// actionIdentify drops the session and IDENTIFYs again on the cached gateway URL.
	actionIdentify
	// actionFatal stops the shard: reconnecting cannot succeed without an operator.
	actionFatal
)

func (a closeAction) String() string {
	switch a {
	case actionResume:
		return "resume"
	case actionIdentify:
		return "re-identify"
	case actionFatal:
		return "stop"
	}
	return fmt.Sprintf("closeAction(%d)", uint8(a))
}

type closeRule struct {
	action closeAction
	cause  string
}

// closeActions is the one table that decides what every gateway close code means.
// The reconnect column follows the official docs (developers/topics/
// opcodes-and-status-codes); where the docs only say "reconnect", resume versus
// re-identify follows the community testing in discord-api-docs PR #7172: the session
// survives 4000, 4002 and 4008, and is gone after 4001, 4003, 4005, 4007 and 4009.
var closeActions = map[int]closeRule{
	4000: {actionResume, "unknown error"},
	4001: {actionIdentify, "unknown opcode or invalid payload for the opcode"},
	4002: {actionResume, "decode error: the gateway could not decode a payload"},
	4003: {actionIdentify, "not authenticated, or the session was invalidated"},
	4004: {actionFatal, "authentication failed: Discord rejected the bot token"},
	4005: {actionIdentify, "already authenticated (a second IDENTIFY)"},
	// 4006 left the gateway table (the voice gateway still uses it for "session no
	// longer valid"); should it ever arrive, the session is not worth resuming.
	4006: {actionIdentify, "session no longer valid"},
	4007: {actionIdentify, "invalid seq on RESUME"},
	4008: {actionResume, "rate limited: more than 120 payloads in 60 s"},
	4009: {actionIdentify, "session timed out"},
	4010: {actionFatal, "invalid shard: shard id must be below the shard count, and a large bot's count a multiple of Discord's"},
	4011: {actionFatal, "sharding required: too many guilds for this shard count, raise the shard count"},
	4012: {actionFatal, "invalid API version"},
	4013: {actionFatal, "invalid intents: the intents bitfield has undefined bits"},
	4014: {actionFatal, "disallowed intents: a privileged intent is not enabled for this bot in the developer portal"},
}

// closeRuleFor returns the rule for a close code. Codes outside the table (1000-range
// codes, a dropped TCP connection reported as -1, unknown 4xxx codes) resume: the docs
// say a connection that closed without a reconnect-false code may resume, and a failed
// resume is answered with op 9, which re-identifies.
func closeRuleFor(code int) closeRule {
	if r, ok := closeActions[code]; ok {
		return r
	}
	return closeRule{actionResume, "connection closed"}
}

// CloseResumable is the close code a shard sends when it stops or hands its session
// to another node. Any code other than 1000 and 1001 keeps the session resumable;
// 4200 is in the private-use range (and what discord.js uses for the same purpose),
// so a server log can tell a deliberate handoff from a failure.
const CloseResumable = 4200

// CloseSessionEnded is the close code of a session that ends for good (Shard.End):
// 1000, on which Discord invalidates the session.
const CloseSessionEnded = 1000

// closeZombie is sent when a heartbeat went unacknowledged: not 1000/1001, so the
// session survives and the next connection resumes it.
const closeZombie = 4201

// closeReconnect is sent when the gateway asked for a reconnect (op 7 or op 9 true).
const closeReconnect = 4202
