package cutover

import (
	"bytes"
	"encoding/json"
	"hash/crc32"
)

// Key names one dispatch in both generations: the guild it belongs to (0 for none)
// and a 64-bit hash of its type and its raw d. Both generations receive the same d
// bytes for a guild's event, so they compute the same Key without talking.
type Key struct {
	Guild uint64
	Hash  uint64
}

// ShardOf is the shard of a generation of total shards that Discord sends a guild's
// events to. Guild 0 (no guild: DMs and the session's own events) is shard 0's.
func ShardOf(guild uint64, total int) int {
	if total <= 0 {
		return 0
	}
	return int((guild >> 22) % uint64(total))
}

// The two halves of the hash: CRC-32C and CRC-32 (IEEE) are computed by the CPU on
// amd64 and arm64, ten times faster than FNV-1a or SHA-256 in Go on this path
// (BenchmarkKeyOf), and together they are a CRC of degree 64: two different events
// of one guild collide with probability 2^-64, and no two that differ by a burst of
// up to 64 bits ever do. A CRC is no defence against someone who chooses the bytes;
// see the package comment for why a collision costs at worst one repeated stretch of
// events in practice.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// KeyOf returns the Key of a dispatch of type t with payload d. The guild is the
// top-level "guild_id" of d (a decimal snowflake string, as Discord sends it, or a
// plain integer); a guild_id nested deeper, null, malformed, or absent is guild 0.
// Of duplicate top-level guild_id keys the first counts. KeyOf does not allocate and
// reads d once for the hash and once up to the guild_id: no unmarshalling.
func KeyOf(t string, d json.RawMessage) Key {
	c := crc32.Update(crcType(0, castagnoli, t), castagnoli, d)
	i := crc32.Update(crcType(0, crc32.IEEETable, t), crc32.IEEETable, d)
	return Key{Guild: guildOf(d), Hash: uint64(c)<<32 | uint64(i)}
}

// crcType is crc32.Update(crc, tab, t + "\x00") computed over the string in place:
// converting t to a []byte for Update would allocate on every event, as Update
// passes it through a function variable. The zero byte separates the type from d,
// so that ("AB", "C") and ("A", "BC") differ.
func crcType(crc uint32, tab *crc32.Table, t string) uint32 {
	crc = ^crc
	for i := 0; i < len(t); i++ {
		crc = tab[byte(crc)^t[i]] ^ crc>>8
	}
	crc = tab[byte(crc)] ^ crc>>8
	return ^crc
}

// guildOf scans d's top-level object for "guild_id" and parses its value, skipping
// every other value whole (strings with bytes.IndexByte, nested objects and arrays by
// depth), so a "guild_id" inside a nested object or inside a string never counts.
// On anything that is not JSON it gives up with 0.
func guildOf(d []byte) uint64 {
	// Without the bytes "guild_id", or a backslash that could spell them escaped,
	// there is no guild_id key. For a large payload (a GUILD_CREATE) the index
	// search is ten times faster than the scan; for a small one it costs more than it
	// saves (BenchmarkKeyOf).
	if len(d) > 4096 && !bytes.Contains(d, []byte(guildID)) && bytes.IndexByte(d, '\\') < 0 {
		return 0
	}
	i := skipSpace(d, 0)
	if i >= len(d) || d[i] != '{' {
		return 0
	}
	i++
	for n := 0; n < len(d); n++ { // every member consumes at least one byte
		i = skipSpace(d, i)
		if i >= len(d) || d[i] != '"' {
			return 0 // '}' of an object without guild_id, or not JSON
		}
		end := stringEnd(d, i+1)
		if end < 0 {
			return 0
		}
		key := d[i+1 : end]
		i = skipSpace(d, end+1)
		if i >= len(d) || d[i] != ':' {
			return 0
		}
		i = skipSpace(d, i+1)
		if isGuildID(key) {
			return parseGuild(d, i)
		}
		if i = skipValue(d, i); i < 0 {
			return 0
		}
		i = skipSpace(d, i)
		if i >= len(d) || d[i] != ',' {
			return 0
		}
		i++
	}
	return 0
}

func skipSpace(d []byte, i int) int {
	for i < len(d) {
		switch d[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// stringEnd returns the index of the quote that closes the string whose contents
// start at i, or -1.
func stringEnd(d []byte, i int) int {
	for {
		q := bytes.IndexByte(d[i:], '"')
		if q < 0 {
			return -1
		}
		q += i
		// The quote is escaped when an odd number of backslashes precede it.
		bs := 0
		for j := q - 1; j >= i && d[j] == '\\'; j-- {
			bs++
		}
		if bs%2 == 0 {
			return q
		}
		i = q + 1
	}
}

// skipValue returns the index just past the value that starts at i, or -1.
func skipValue(d []byte, i int) int {
	if i >= len(d) {
		return -1
	}
	switch d[i] {
	case '"':
		end := stringEnd(d, i+1)
		if end < 0 {
			return -1
		}
		return end + 1
	case '{', '[':
		depth := 0
		for i < len(d) {
			switch d[i] {
			case '"':
				end := stringEnd(d, i+1)
				if end < 0 {
					return -1
				}
				i = end
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	default: // a number, true, false, null
		for i < len(d) {
			switch d[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}

const guildID = "guild_id"

// isGuildID compares a raw key with guild_id. Discord never escapes a key, but JSON
// may ("guild\u005fid"), and then both generations would still agree, so the slow
// path decodes.
func isGuildID(key []byte) bool {
	if string(key) == guildID {
		return true
	}
	if bytes.IndexByte(key, '\\') < 0 {
		return false
	}
	j := 0
	for i := 0; i < len(key); {
		r, next := nextChar(key, i)
		if r < 0 || j >= len(guildID) || r != rune(guildID[j]) {
			return false
		}
		i, j = next, j+1
	}
	return j == len(guildID)
}

// nextChar decodes the character of a JSON string's contents at i: itself, or an
// escape. It returns -1 for an escape it cannot read.
func nextChar(s []byte, i int) (rune, int) {
	if s[i] != '\\' {
		return rune(s[i]), i + 1
	}
	if i+1 >= len(s) {
		return -1, len(s)
	}
	switch s[i+1] {
	case '"', '\\', '/':
		return rune(s[i+1]), i + 2
	case 'b':
		return '\b', i + 2
	case 'f':
		return '\f', i + 2
	case 'n':
		return '\n', i + 2
	case 'r':
		return '\r', i + 2
	case 't':
		return '\t', i + 2
	case 'u':
		if i+6 > len(s) {
			return -1, len(s)
		}
		var r rune
		for _, h := range s[i+2 : i+6] {
			switch {
			case '0' <= h && h <= '9':
				r = r<<4 | rune(h-'0')
			case 'a' <= h && h <= 'f':
				r = r<<4 | rune(h-'a'+10)
			case 'A' <= h && h <= 'F':
				r = r<<4 | rune(h-'A'+10)
			default:
				return -1, len(s)
			}
		}
		return r, i + 6
	}
	return -1, len(s)
}

// parseGuild reads the value at i as a guild id: a string of decimal digits (escaped
// digits count), or an integer. Anything else, and a number past 2^64-1, is 0.
func parseGuild(d []byte, i int) uint64 {
	if i >= len(d) {
		return 0
	}
	var digits []byte
	quoted := d[i] == '"'
	if quoted {
		end := stringEnd(d, i+1)
		if end < 0 {
			return 0
		}
		digits = d[i+1 : end]
	} else {
		end := skipValue(d, i)
		if end < 0 {
			return 0
		}
		digits = d[i:end]
	}
	if len(digits) == 0 {
		return 0
	}
	var g uint64
	for j := 0; j < len(digits); {
		r, next := rune(digits[j]), j+1
		if quoted {
			r, next = nextChar(digits, j)
		}
		if r < '0' || r > '9' {
			return 0
		}
		v := uint64(r - '0')
		if g > (^uint64(0)-v)/10 {
			return 0
		}
		g = g*10 + v
		j = next
	}
	return g
}
