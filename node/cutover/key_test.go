package cutover

import (
	"bytes"
	"encoding/json"
	"hash/crc32"
	"strconv"
	"strings"
	"testing"
)

func TestKeyOfGuild(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    string
		want uint64
	}{
		{"top level", `{"guild_id":"81384788765712384","id":"1"}`, 81384788765712384},
		{"last member", `{"id":"1","content":"hi","guild_id":"42"}`, 42},
		{"spaces everywhere", " \n{ \"id\" : 1 ,\t\"guild_id\"\r\n:\n \"7\" } ", 7},
		{"nested only", `{"member":{"guild_id":"5"},"id":"1"}`, 0},
		{"nested before top level", `{"message":{"guild_id":"5","x":[{"guild_id":"6"}]},"guild_id":"9"}`, 9},
		{"nested in an array", `{"guilds":[{"guild_id":"5"}],"guild_id":"8"}`, 8},
		{"in a string value", `{"content":"\"guild_id\":\"5\"","guild_id":"3"}`, 3},
		{"in a string only", `{"content":"{\"guild_id\":\"5\"}"}`, 0},
		{"escaped backslash before the quote", `{"content":"a\\","guild_id":"4"}`, 4},
		{"three backslashes", `{"content":"a\\\"b","guild_id":"4"}`, 4},
		{"escaped key", `{"guild\u005fid":"12"}`, 12},
		{"escaped digits", `{"guild_id":"1\u0032"}`, 12},
		{"a key that only starts alike", `{"guild_ids":["5"],"guild_id_x":"6","guild_id":"2"}`, 2},
		{"no guild_id", `{"id":"1","channel_id":"2","content":"dm"}`, 0},
		{"null", `{"guild_id":null,"id":"1"}`, 0},
		{"number", `{"guild_id":123456789012345678}`, 123456789012345678},
		{"number followed", `{"guild_id":77,"id":1}`, 77},
		{"float", `{"guild_id":1.5}`, 0},
		{"negative", `{"guild_id":-3}`, 0},
		{"exponent", `{"guild_id":1e3}`, 0},
		{"empty string", `{"guild_id":""}`, 0},
		{"not digits", `{"guild_id":"12a"}`, 0},
		{"max uint64", `{"guild_id":"18446744073709551615"}`, 18446744073709551615},
		{"past uint64", `{"guild_id":"18446744073709551616"}`, 0},
		{"other numbers first", `{"a":-1.5e+10,"b":true,"c":false,"d":null,"e":[1,[2,{}]],"guild_id":"6"}`, 6},
		{"first of duplicates", `{"guild_id":"1","guild_id":"2"}`, 1},
		{"d is null", `null`, 0},
		{"d is an array", `[{"guild_id":"5"}]`, 0},
		{"d is a string", `"guild_id"`, 0},
		{"empty", ``, 0},
		{"empty object", `{}`, 0},
		{"braces in strings", `{"a":"}{][","b":{"c":"}"},"guild_id":"5"}`, 5},
		{"unicode in strings", `{"content":"héllo \ud83d\ude00 日本","guild_id":"5"}`, 5},
		{"truncated", `{"content":"abc`, 0},
		{"large, no guild_id", `{"members":[` + strings.Repeat(`{"id":"1"},`, 500) + `{}],"id":"5"}`, 0},
		{"large, guild_id last", `{"members":[` + strings.Repeat(`{"id":"1"},`, 500) + `{}],"guild_id":"5"}`, 5},
		{"large, escaped key", `{"members":[` + strings.Repeat(`{"id":"1"},`, 500) + `{}],"guild\u005fid":"5"}`, 5},
		{"truncated in guild_id", `{"guild_id":"12`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := KeyOf("MESSAGE_CREATE", json.RawMessage(tc.d)).Guild; got != tc.want {
				t.Errorf("guild of %s = %d, want %d", tc.d, got, tc.want)
			}
			if json.Valid([]byte(tc.d)) {
				if ref := referenceGuild([]byte(tc.d)); ref != tc.want {
					t.Errorf("the reference reads %d: the case is wrong", ref)
				}
			}
		})
	}
}

func TestKeyOfHash(t *testing.T) {
	d := json.RawMessage(`{"id":"1","guild_id":"5","content":"x"}`)
	k := KeyOf("MESSAGE_CREATE", d)
	if k != KeyOf("MESSAGE_CREATE", append(json.RawMessage(nil), d...)) {
		t.Error("the same type and bytes gave two keys")
	}
	for _, other := range []struct {
		t string
		d string
	}{
		{"MESSAGE_UPDATE", string(d)},
		{"MESSAGE_CREATE", `{"id":"2","guild_id":"5","content":"x"}`},
		{"MESSAGE_CREATE", `{"guild_id":"5","id":"1","content":"x"}`}, // same JSON, other bytes
		{"MESSAGE_CREATE", `{"id":"1","guild_id":"5","content":"x"} `},
		{"MESSAGE_CREATEx", `{"id":"1","guild_id":"5","content":"x"}`[1:]}, // type and d run together alike
	} {
		if o := KeyOf(other.t, json.RawMessage(other.d)); o.Hash == k.Hash {
			t.Errorf("%s %s has the hash of %s", other.t, other.d, d)
		}
	}
}

// crcType is crc32.Update over the type and a zero byte, without the copy.
func TestCRCType(t *testing.T) {
	for _, typ := range []string{"", "READY", "MESSAGE_CREATE", "GUILD_AUDIT_LOG_ENTRY_CREATE"} {
		for _, tab := range []*crc32.Table{castagnoli, crc32.IEEETable} {
			if got, want := crcType(7, tab, typ), crc32.Update(7, tab, append([]byte(typ), 0)); got != want {
				t.Errorf("crcType(%q) = %x, crc32.Update = %x", typ, got, want)
			}
		}
	}
}

func TestKeyOfAllocatesNothing(t *testing.T) {
	d := json.RawMessage(`{"id":"1","member":{"guild_id":"9"},"content":"a \"quoted\" word","guild_id":"81384788765712384"}`)
	if n := testing.AllocsPerRun(100, func() { KeyOf("MESSAGE_CREATE", d) }); n != 0 {
		t.Errorf("KeyOf allocates %v times per call", n)
	}
}

func TestShardOf(t *testing.T) {
	for _, tc := range []struct {
		guild uint64
		total int
		want  int
	}{
		{0, 16, 0},
		{81384788765712384, 16, int((81384788765712384 >> 22) % 16)},
		{5 << 22, 4, 1},
		{5 << 22, 0, 0},
	} {
		if got := ShardOf(tc.guild, tc.total); got != tc.want {
			t.Errorf("ShardOf(%d, %d) = %d, want %d", tc.guild, tc.total, got, tc.want)
		}
	}
}

// FuzzKeyOf checks the scanner against encoding/json on every valid input, and that
// it neither panics nor loops on the rest.
func FuzzKeyOf(f *testing.F) {
	for _, s := range []string{
		`{"guild_id":"81384788765712384","id":"1"}`,
		`{"member":{"guild_id":"5"},"guild_id":"9"}`,
		`{"content":"\"guild_id\":\"5\"","guild_id":"3"}`,
		`{"guild\u005fid":"1\u0032"}`,
		`{"guild_id":123,"x":[1,{"y":"}"}]}`,
		`{"guild_id":null}`,
		`{"a":"\\\\","guild_id":"4"}`,
		`[1,2]`,
		`{"guild_id":"18446744073709551616"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, d []byte) {
		k := KeyOf("T", d)
		if !json.Valid(d) {
			return
		}
		if want := referenceGuild(d); k.Guild != want {
			t.Errorf("guild of %q = %d, encoding/json reads %d", d, k.Guild, want)
		}
	})
}

// referenceGuild is KeyOf's guild rule through encoding/json: the first top-level
// "guild_id" (a decimal string or an integer), else 0.
func referenceGuild(d []byte) uint64 {
	dec := json.NewDecoder(bytes.NewReader(d))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return 0
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return 0
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return 0
		}
		if tok != "guild_id" {
			continue
		}
		var s string
		if err := json.Unmarshal(v, &s); err == nil {
			if strings.TrimLeft(s, "0123456789") != "" {
				return 0
			}
			g, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return 0
			}
			return g
		}
		g, err := strconv.ParseUint(string(v), 10, 64)
		if err != nil {
			return 0
		}
		return g
	}
	return 0
}
