package shard

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// The envelope scanner reads a gateway payload in one pass: it validates the whole
// value as JSON (the grammar of RFC 8259, as encoding/json's scanner applies it, with
// its nesting limit) and, on the way, reads op, s and t and the bounds of d. Where
// encoding/json spends two scans per payload (one to find the end of the value, one
// to decode it, skipping d again), this spends one, and d is handed on as the bytes
// Discord sent. What it guarantees, tested against encoding/json by FuzzScanEnvelope:
//   - it accepts a payload exactly when encoding/json unmarshals it into the envelope
//     without an error (an object; op and s integers in range or null; t a string or
//     null; d any value); strings are checked as encoding/json checks them (no control
//     characters, valid escapes; invalid UTF-8 passes, as it does there);
//   - then op, s, t and d are what encoding/json gives when it decodes the object into
//     a map and each member on its own: keys are matched exactly after unescaping,
//     the last of duplicate keys wins and null leaves a field as it was. encoding/json's
//     struct decoding would also match "OP" or "Op"; Discord's keys are lower case;
//   - d is one valid JSON value, byte for byte as sent, white space around it cut.

// maxNestingDepth is encoding/json's limit on nested arrays and objects.
const maxNestingDepth = 10000

// errIncomplete says the input ended inside the value: more bytes may complete it.
var errIncomplete = errors.New("incomplete JSON value")

// scanEnvelope reads the payload at the start of p (after white space) and returns
// it with the offset just after it. D aliases p. When p ends before the payload
// does (and what came so far is valid), the error is errIncomplete.
func scanEnvelope(p []byte) (env envelope, n int, err error) {
	i := skipSpace(p, 0)
	if i == len(p) {
		return env, 0, errIncomplete
	}
	if p[i] != '{' {
		return env, 0, syntaxError(p, i, "gateway payload is not a JSON object")
	}
	i = skipSpace(p, i+1)
	if i == len(p) {
		return env, 0, errIncomplete
	}
	if p[i] == '}' {
		return env, i + 1, env.check()
	}
	for {
		if p[i] != '"' {
			return env, 0, syntaxError(p, i, "looking for the beginning of an object key")
		}
		ke, esc, err := scanString(p, i)
		if err != nil {
			return env, 0, err
		}
		key := p[i+1 : ke-1]
		if esc {
			var k string
			if err := json.Unmarshal(p[i:ke], &k); err != nil {
				return env, 0, err
			}
			key = []byte(k)
		}
		if i = skipSpace(p, ke); i == len(p) {
			return env, 0, errIncomplete
		}
		if p[i] != ':' {
			return env, 0, syntaxError(p, i, "after object key")
		}
		if i = skipSpace(p, i+1); i == len(p) {
			return env, 0, errIncomplete
		}
		vs := i
		if i, err = skipValue(p, i, 2); err != nil {
			return env, 0, err
		}
		if err := env.set(key, p[vs:i]); err != nil {
			return env, 0, err
		}
		if i = skipSpace(p, i); i == len(p) {
			return env, 0, errIncomplete
		}
		switch p[i] {
		case ',':
			if i = skipSpace(p, i+1); i == len(p) {
				return env, 0, errIncomplete
			}
			continue
		case '}':
			return env, i + 1, env.check()
		}
		return env, 0, syntaxError(p, i, "after object key:value pair")
	}
}

// set stores one member of the envelope; v is a valid JSON value.
func (e *envelope) set(key, v []byte) error {
	if len(key) == 0 || len(key) > 2 {
		return nil
	}
	switch string(key) {
	case "op":
		if v[0] == 'n' {
			return nil
		}
		n, err := scanInt(v, "op", strconv.IntSize)
		e.Op = int(n)
		return err
	case "s":
		if v[0] == 'n' {
			return nil
		}
		n, err := scanInt(v, "s", 64)
		e.S = n
		return err
	case "t":
		switch v[0] {
		case 'n':
			return nil
		case '"':
			e.T = eventName(v)
			return nil
		}
		return fmt.Errorf("decode gateway payload: t is %.20s, not a string", v)
	case "d":
		e.D = v
	}
	return nil
}

func scanInt(v []byte, name string, bits int) (int64, error) {
	// Unmarshal into an integer takes an integer literal only: no fraction, no exponent.
	n, err := strconv.ParseInt(string(v), 10, bits)
	if err != nil {
		return 0, fmt.Errorf("decode gateway payload: %s is %.30s, not an integer", name, v)
	}
	return n, nil
}

// eventNames are Discord's event names, so that the common ones cost no allocation.
var eventNames = func() map[string]string {
	m := map[string]string{}
	for _, n := range []string{"READY", "RESUMED", "MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE",
		"MESSAGE_DELETE_BULK", "MESSAGE_REACTION_ADD", "MESSAGE_REACTION_REMOVE", "MESSAGE_REACTION_REMOVE_ALL",
		"MESSAGE_REACTION_REMOVE_EMOJI", "MESSAGE_POLL_VOTE_ADD", "MESSAGE_POLL_VOTE_REMOVE", "TYPING_START",
		"PRESENCE_UPDATE", "GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE", "GUILD_MEMBER_ADD",
		"GUILD_MEMBER_UPDATE", "GUILD_MEMBER_REMOVE", "GUILD_MEMBERS_CHUNK", "GUILD_ROLE_CREATE",
		"GUILD_ROLE_UPDATE", "GUILD_ROLE_DELETE", "GUILD_EMOJIS_UPDATE", "GUILD_STICKERS_UPDATE",
		"GUILD_BAN_ADD", "GUILD_BAN_REMOVE", "GUILD_AUDIT_LOG_ENTRY_CREATE", "GUILD_INTEGRATIONS_UPDATE",
		"GUILD_SCHEDULED_EVENT_CREATE", "GUILD_SCHEDULED_EVENT_UPDATE", "GUILD_SCHEDULED_EVENT_DELETE",
		"GUILD_SCHEDULED_EVENT_USER_ADD", "GUILD_SCHEDULED_EVENT_USER_REMOVE", "GUILD_SOUNDBOARD_SOUND_CREATE",
		"GUILD_SOUNDBOARD_SOUND_UPDATE", "GUILD_SOUNDBOARD_SOUND_DELETE", "GUILD_SOUNDBOARD_SOUNDS_UPDATE",
		"SOUNDBOARD_SOUNDS", "CHANNEL_CREATE", "CHANNEL_UPDATE", "CHANNEL_DELETE", "CHANNEL_PINS_UPDATE",
		"CHANNEL_INFO", "THREAD_CREATE", "THREAD_UPDATE", "THREAD_DELETE", "THREAD_LIST_SYNC",
		"THREAD_MEMBER_UPDATE", "THREAD_MEMBERS_UPDATE", "VOICE_STATE_UPDATE", "VOICE_SERVER_UPDATE",
		"VOICE_CHANNEL_EFFECT_SEND", "VOICE_CHANNEL_STATUS_UPDATE", "INTERACTION_CREATE", "INVITE_CREATE", "INVITE_DELETE",
		"INTEGRATION_CREATE", "INTEGRATION_UPDATE", "INTEGRATION_DELETE", "WEBHOOKS_UPDATE",
		"STAGE_INSTANCE_CREATE", "STAGE_INSTANCE_UPDATE", "STAGE_INSTANCE_DELETE", "USER_UPDATE",
		"APPLICATION_COMMAND_PERMISSIONS_UPDATE", "AUTO_MODERATION_RULE_CREATE", "AUTO_MODERATION_RULE_UPDATE",
		"AUTO_MODERATION_RULE_DELETE", "AUTO_MODERATION_ACTION_EXECUTION", "ENTITLEMENT_CREATE",
		"ENTITLEMENT_UPDATE", "ENTITLEMENT_DELETE", "SUBSCRIPTION_CREATE", "SUBSCRIPTION_UPDATE",
		"SUBSCRIPTION_DELETE"} {
		m[n] = n
	}
	return m
}()

// eventName is the value of the JSON string v (quotes included).
func eventName(v []byte) string {
	raw := v[1 : len(v)-1]
	if n, ok := eventNames[string(raw)]; ok { // no allocation
		return n
	}
	for _, c := range raw {
		if c == '\\' || c >= 0x80 {
			// Escapes and non-ASCII bytes (invalid UTF-8 becomes U+FFFD there) as
			// encoding/json unquotes them.
			var s string
			_ = json.Unmarshal(v, &s) // v is a valid string
			return s
		}
	}
	return string(raw)
}

func skipSpace(p []byte, i int) int {
	for i < len(p) {
		switch p[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func syntaxError(p []byte, i int, msg string) error {
	return fmt.Errorf("decode gateway payload: invalid character %q at offset %d: %s", p[i], i, msg)
}

// skipValue validates the value at p[i] (not white space) and returns the offset
// just after it. depth is the nesting depth the value would have if it were an
// array or object.
func skipValue(p []byte, i, depth int) (int, error) {
	switch c := p[i]; c {
	case '"':
		end, _, err := scanString(p, i)
		return end, err
	case '{', '[':
		if depth > maxNestingDepth {
			return 0, fmt.Errorf("decode gateway payload: exceeded max depth at offset %d", i)
		}
		return skipComposite(p, i, depth)
	case 't':
		return skipLiteral(p, i, "true")
	case 'f':
		return skipLiteral(p, i, "false")
	case 'n':
		return skipLiteral(p, i, "null")
	default:
		if c == '-' || c >= '0' && c <= '9' {
			return skipNumber(p, i)
		}
		return 0, syntaxError(p, i, "looking for beginning of value")
	}
}

// skipComposite validates the object or array at p[i].
func skipComposite(p []byte, i, depth int) (int, error) {
	object := p[i] == '{'
	closer := byte(']')
	if object {
		closer = '}'
	}
	if i = skipSpace(p, i+1); i == len(p) {
		return 0, errIncomplete
	}
	if p[i] == closer {
		return i + 1, nil
	}
	for {
		var err error
		if object {
			if p[i] != '"' {
				return 0, syntaxError(p, i, "looking for the beginning of an object key")
			}
			if i, _, err = scanString(p, i); err != nil {
				return 0, err
			}
			if i = skipSpace(p, i); i == len(p) {
				return 0, errIncomplete
			}
			if p[i] != ':' {
				return 0, syntaxError(p, i, "after object key")
			}
			if i = skipSpace(p, i+1); i == len(p) {
				return 0, errIncomplete
			}
		}
		if i, err = skipValue(p, i, depth+1); err != nil {
			return 0, err
		}
		if i = skipSpace(p, i); i == len(p) {
			return 0, errIncomplete
		}
		switch p[i] {
		case ',':
			if i = skipSpace(p, i+1); i == len(p) {
				return 0, errIncomplete
			}
			continue
		case closer:
			return i + 1, nil
		}
		return 0, syntaxError(p, i, "after a value in an object or array")
	}
}

func skipLiteral(p []byte, i int, lit string) (int, error) {
	for k := 1; k < len(lit); k++ {
		if i+k == len(p) {
			return 0, errIncomplete
		}
		if p[i+k] != lit[k] {
			return 0, syntaxError(p, i+k, "in literal "+lit)
		}
	}
	return i + len(lit), nil
}

// skipNumber validates a number, -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?. A
// number that reaches the end of p is incomplete: more digits may follow.
func skipNumber(p []byte, i int) (int, error) {
	if p[i] == '-' {
		if i++; i == len(p) {
			return 0, errIncomplete
		}
	}
	switch {
	case p[i] == '0':
		i++
	case p[i] >= '1' && p[i] <= '9':
		for i++; i < len(p) && p[i] >= '0' && p[i] <= '9'; i++ {
		}
	default:
		return 0, syntaxError(p, i, "in numeric literal")
	}
	if i == len(p) {
		return 0, errIncomplete
	}
	if p[i] == '.' {
		if i++; i == len(p) {
			return 0, errIncomplete
		}
		if p[i] < '0' || p[i] > '9' {
			return 0, syntaxError(p, i, "after decimal point in numeric literal")
		}
		for i++; i < len(p) && p[i] >= '0' && p[i] <= '9'; i++ {
		}
		if i == len(p) {
			return 0, errIncomplete
		}
	}
	if p[i] == 'e' || p[i] == 'E' {
		if i++; i == len(p) {
			return 0, errIncomplete
		}
		if p[i] == '+' || p[i] == '-' {
			if i++; i == len(p) {
				return 0, errIncomplete
			}
		}
		if p[i] < '0' || p[i] > '9' {
			return 0, syntaxError(p, i, "in exponent of numeric literal")
		}
		for i++; i < len(p) && p[i] >= '0' && p[i] <= '9'; i++ {
		}
		if i == len(p) {
			return 0, errIncomplete
		}
	}
	return i, nil
}

// plainString marks the bytes a string may hold as they are: not a quote, not a
// backslash, not a control character.
var plainString = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanString validates the string at p[i] (a quote) and returns the offset just
// after its closing quote and whether it holds escapes.
func scanString(p []byte, i int) (end int, escaped bool, err error) {
	i++
	for {
		for i < len(p) && plainString[p[i]] {
			i++
		}
		if i == len(p) {
			return 0, false, errIncomplete
		}
		switch c := p[i]; {
		case c == '"':
			return i + 1, escaped, nil
		case c == '\\':
			escaped = true
			if i+1 == len(p) {
				return 0, false, errIncomplete
			}
			switch p[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				for k := 2; k < 6; k++ {
					if i+k == len(p) {
						return 0, false, errIncomplete
					}
					if !isHex(p[i+k]) {
						return 0, false, syntaxError(p, i+k, "in \\u hexadecimal character escape")
					}
				}
				i += 6
			default:
				return 0, false, syntaxError(p, i+1, "in string escape code")
			}
		default:
			return 0, false, syntaxError(p, i, "in string literal")
		}
	}
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
