package shard

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func TestDecodeEnvelope(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    envelope
		wantErr bool
	}{
		{"dispatch", `{"op":0,"s":42,"t":"MESSAGE_CREATE","d":{"id":"1","nested":{"a":[1,2]}}}`,
			envelope{Op: 0, S: 42, T: "MESSAGE_CREATE", D: json.RawMessage(`{"id":"1","nested":{"a":[1,2]}}`)}, false},
		{"hello with nulls", `{"op":10,"s":null,"t":null,"d":{"heartbeat_interval":41250}}`,
			envelope{Op: 10, D: json.RawMessage(`{"heartbeat_interval":41250}`)}, false},
		{"ack without d", `{"op":11}`, envelope{Op: 11}, false},
		{"invalid session", `{"op":9,"d":false}`, envelope{Op: 9, D: json.RawMessage(`false`)}, false},
		{"unknown fields ignored", `{"op":7,"d":null,"x":{"y":1}}`, envelope{Op: 7, D: json.RawMessage(`null`)}, false},
		{"dispatch without t", `{"op":0,"s":1,"d":{}}`, envelope{}, true},
		{"not an object", `[1,2]`, envelope{}, true},
		{"truncated", `{"op":0,"s":1,"t":"X","d":{`, envelope{}, true},
		{"op is a string", `{"op":"0"}`, envelope{}, true},
		{"empty", ``, envelope{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeEnvelope([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if got.Op != tt.want.Op || got.S != tt.want.S || got.T != tt.want.T || !bytes.Equal(got.D, tt.want.D) {
				t.Fatalf("got %+v (d %s), want %+v (d %s)", got, got.D, tt.want, tt.want.D)
			}
		})
	}
}

func TestDecodeEnvelopeDoesNotAliasInput(t *testing.T) {
	in := []byte(`{"op":0,"s":1,"t":"X","d":{"k":"v"}}`)
	env, err := decodeEnvelope(in)
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		in[i] = 'z'
	}
	if string(env.D) != `{"k":"v"}` {
		t.Fatalf("d changed with its input buffer: %s", env.D)
	}
}

// FuzzDecodeEnvelope: any bytes a gateway (or an attacker in its place) sends give
// an envelope or an error, never a panic; a decoded d is always valid JSON.
func FuzzDecodeEnvelope(f *testing.F) {
	for _, s := range []string{
		`{"op":0,"s":42,"t":"MESSAGE_CREATE","d":{"id":"1"}}`,
		`{"op":10,"d":{"heartbeat_interval":41250}}`,
		`{"op":11}`, `{"op":9,"d":true}`, `null`, `{}`, `{"op":1e400}`, `{"d":"\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	for _, fr := range documentedFrames(f) {
		f.Add(fr.raw)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		env, err := decodeEnvelope(p)
		if err != nil {
			return
		}
		if env.D != nil && !json.Valid(env.D) {
			t.Fatalf("decoded d is not valid JSON: %q", env.D)
		}
		if env.Op == OpDispatch && env.T == "" {
			t.Fatalf("dispatch without t accepted: %q", p)
		}
	})
}

// documentedFrame is one of the shared fixtures in testdata/gateway: a frame in the
// shape Discord documents, with what it must decode to.
type documentedFrame struct {
	file string
	op   int
	s    int64
	t    string
	raw  []byte
}

func documentedFrames(tb testing.TB) []documentedFrame {
	tb.Helper()
	frames := []documentedFrame{
		{file: "hello.json", op: OpHello},
		{file: "heartbeat_ack.json", op: OpHeartbeatACK},
		{file: "invalid_session.json", op: OpInvalidSession},
		{file: "reconnect.json", op: OpReconnect},
		{file: "ready.json", op: OpDispatch, s: 1, t: "READY"},
		{file: "resumed.json", op: OpDispatch, s: 43, t: "RESUMED"},
		{file: "message_create.json", op: OpDispatch, s: 42, t: "MESSAGE_CREATE"},
	}
	for i := range frames {
		b, err := os.ReadFile(filepath.Join("..", "testdata", "gateway", frames[i].file))
		if err != nil {
			tb.Fatal(err)
		}
		frames[i].raw = b
	}
	return frames
}

// Every frame in Discord's documented shape decodes with its op, seq and event name,
// and d exactly as sent.
func TestDocumentedFramesDecode(t *testing.T) {
	for _, fr := range documentedFrames(t) {
		env, err := decodeEnvelope(fr.raw)
		if err != nil {
			t.Errorf("%s: %v", fr.file, err)
			continue
		}
		if env.Op != fr.op || env.S != fr.s || env.T != fr.t {
			t.Errorf("%s: op %d s %d t %q, want op %d s %d t %q", fr.file, env.Op, env.S, env.T, fr.op, fr.s, fr.t)
		}
		var whole struct {
			D json.RawMessage `json:"d"`
		}
		if err := json.Unmarshal(fr.raw, &whole); err != nil {
			t.Fatal(err)
		}
		if string(whole.D) != "null" && !bytes.Equal(env.D, whole.D) {
			t.Errorf("%s: d %s, want %s", fr.file, env.D, whole.D)
		}
	}
}
