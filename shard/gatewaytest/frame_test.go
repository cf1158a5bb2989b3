package gatewaytest

import (
	"strings"
	"testing"
)

func TestParseClientFrame(t *testing.T) {
	for _, tc := range []struct {
		in   string
		op   int
		code int // 0: accepted
	}{
		{`{"op":1,"d":null}`, 1, 0},
		{`{"op":1}`, 1, 0},
		{`{"op":1,"d":42}`, 1, 0},
		{`{"op":1,"d":-1}`, 1, 0},
		{`{"op":1,"d":"42"}`, 0, 4001},
		{`{"op":1,"d":1.5}`, 0, 4001},
		{`{"op":2,"d":{"token":"t","intents":513,"properties":{}}}`, 2, 0},
		{`{"op":2,"d":{"token":"t","intents":"513"}}`, 0, 4001},
		{`{"op":2,"d":{"token":"t","shard":"0,1"}}`, 0, 4001},
		{`{"op":2,"d":null}`, 0, 4001},
		{`{"op":2,"d":[]}`, 0, 4001},
		{`{"op":3,"d":{"status":"online"}}`, 3, 0},
		{`{"op":3,"d":7}`, 0, 4001},
		{`{"op":6,"d":{"token":"t","session_id":"s","seq":3}}`, 6, 0},
		{`{"op":6,"d":{"token":"t","session_id":"s","seq":null}}`, 6, 0},
		{`{"op":6,"d":{"seq":"3"}}`, 0, 4001},
		{`{"op":5,"d":null}`, 0, 4001},
		{`{"op":0,"d":null}`, 0, 4001},
		{`{"op":11}`, 0, 4001},
		{`{"op":-1}`, 0, 4001},
		{`{"op":"1"}`, 0, 4002},
		{`{"op":1.0}`, 0, 4002},
		{`{"d":null}`, 0, 4002},
		{`{"op":null}`, 0, 4002},
		{`[1]`, 0, 4002},
		{`null`, 0, 4002},
		{`{"op":1`, 0, 4002},
		{``, 0, 4002},
		{`{"op":1,"d":null} x`, 0, 4002},
		{`{"op":1,"d":null,"x":"` + strings.Repeat("a", 4096) + `"}`, 0, 4002},
	} {
		f, cerr := parseClientFrame([]byte(tc.in))
		in := tc.in
		if len(in) > 60 {
			in = in[:60] + "..."
		}
		switch {
		case tc.code == 0 && cerr != nil:
			t.Errorf("%s: %v, want accepted", in, cerr)
		case tc.code != 0 && (cerr == nil || cerr.Code != tc.code):
			t.Errorf("%s: %v, want close %d", in, cerr, tc.code)
		case tc.code == 0 && f.Op != tc.op:
			t.Errorf("%s: op %d, want %d", in, f.Op, tc.op)
		}
	}
}

func TestIdentifyChecks(t *testing.T) {
	i := func(v int64) *int64 { return &v }
	for _, tc := range []struct {
		intents *int64
		deny    bool
		code    int
	}{
		{i(513), false, 0},
		{i(0), false, 0},
		{i(definedIntents), false, 0},
		{i(1<<25 | 1<<24 | 1<<21 | 1<<20 | 1<<16), false, 0},
		{nil, false, 4013},
		{i(1 << 17), false, 4013},
		{i(1 << 22), false, 4013},
		{i(1 << 26), false, 4013},
		{i(-1), false, 4013},
		{i(intentGuildMembers), true, 4014},
		{i(intentGuildPresences), true, 4014},
		{i(intentMessageContent | 1), true, 4014},
		{i(intentMessageContent), false, 0},
		{i(513), true, 0},
	} {
		err := checkIntents(tc.intents, tc.deny)
		if (err == nil) != (tc.code == 0) || (err != nil && err.Code != tc.code) {
			t.Errorf("intents %v deny %v: %v, want %d", tc.intents, tc.deny, err, tc.code)
		}
	}
	for _, tc := range []struct {
		shard     []int64
		id, total int
		ok        bool
	}{
		{nil, 0, 1, true},
		{[]int64{0, 1}, 0, 1, true},
		{[]int64{15, 16}, 15, 16, true},
		{[]int64{16, 16}, 0, 0, false},
		{[]int64{0, 0}, 0, 0, false},
		{[]int64{-1, 4}, 0, 0, false},
		{[]int64{0}, 0, 0, false},
		{[]int64{0, 1, 2}, 0, 0, false},
		{[]int64{0, 1 << 40}, 0, 0, false},
	} {
		id, total, err := (&identifyData{Shard: tc.shard}).shardOf()
		if (err == nil) != tc.ok || (tc.ok && (id != tc.id || total != tc.total)) {
			t.Errorf("shard %v: %d %d %v", tc.shard, id, total, err)
		}
		if err != nil && err.Code != closeInvalidShard {
			t.Errorf("shard %v: code %d", tc.shard, err.Code)
		}
	}
}

// FuzzClientFrame feeds arbitrary bytes to the decoder of client payloads
// and the identify checks behind it: no input may panic, and every verdict
// must be a well-formed Discord close code.
func FuzzClientFrame(f *testing.F) {
	for _, s := range []string{
		`{"op":1,"d":null}`,
		`{"op":1,"d":12345}`,
		`{"op":2,"d":{"token":"test-token","intents":513,"shard":[0,1],"properties":{"os":"linux","browser":"x","device":"x"}}}`,
		`{"op":2,"d":{"token":"t","intents":-1,"shard":[5,2]}}`,
		`{"op":6,"d":{"token":"t","session_id":"abc","seq":10}}`,
		`{"op":3,"d":{"since":null,"activities":[],"status":"online","afk":false}}`,
		`{"op":8,"d":{"guild_id":"1","query":"","limit":0,"nonce":"n"}}`,
		`{"op":99}`,
		`{"op":"1"}`,
		`{"op":1e3}`,
		`[`, `null`, `{}`, "\x00\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, cerr := parseClientFrame(b)
		if len(b) > maxPayload && (cerr == nil || cerr.Code != closeDecodeError) {
			t.Fatalf("%d-byte payload: %v, want 4002", len(b), cerr)
		}
		if cerr != nil {
			if cerr.Code != closeUnknownOpcode && cerr.Code != closeDecodeError {
				t.Fatalf("parse verdict %d", cerr.Code)
			}
			if len(cerr.Reason) > 123 {
				t.Fatalf("close reason of %d bytes does not fit a close frame", len(cerr.Reason))
			}
			return
		}
		switch fr.Op {
		case opIdentify:
			if fr.Identify == nil {
				t.Fatal("identify without data")
			}
			id, total, err := fr.Identify.shardOf()
			if err == nil && (id < 0 || id >= total || total < 1) {
				t.Fatalf("shardOf accepted [%d, %d]", id, total)
			}
			if err == nil {
				if n := guildCount(7, id, total); n < 0 || n > 7 {
					t.Fatalf("guildCount %d", n)
				}
			}
			if err := checkIntents(fr.Identify.Intents, true); err != nil && err.Code != closeInvalidIntents && err.Code != closeDisallowedIntents {
				t.Fatalf("intent verdict %d", err.Code)
			}
		case opResume:
			if fr.Resume == nil {
				t.Fatal("resume without data")
			}
		case opHeartbeat, opPresenceUpdate, opVoiceStateUpdate, opRequestGuildMembers, opRequestSoundboard, opRequestChannelInfo:
		default:
			t.Fatalf("accepted op %d", fr.Op)
		}
	})
}
