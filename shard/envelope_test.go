package shard

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

// referenceEnvelope decodes p with encoding/json as the scanner promises to: the
// payload one JSON object, its members in order, keys matched exactly after
// unescaping, the last of duplicate keys winning, null leaving a field as it was,
// any member of the wrong type an error.
func referenceEnvelope(p []byte) (envelope, error) {
	var env envelope
	if !json.Valid(p) {
		return env, errors.New("invalid JSON")
	}
	var members []json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(p))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return env, errors.New("not an object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return env, err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return env, err
		}
		members = append(members, v)
		key := tok.(string)
		null := string(v) == "null"
		switch {
		case key == "op" && !null:
			err = json.Unmarshal(v, &env.Op)
		case key == "s" && !null:
			err = json.Unmarshal(v, &env.S)
		case key == "t" && !null:
			err = json.Unmarshal(v, &env.T)
		case key == "d":
			env.D = v
		}
		if err != nil {
			return env, err
		}
	}
	return env, env.check()
}

// FuzzScanEnvelope holds the scanner to what scan.go promises, against encoding/json:
// the same payloads accepted, the same op, s, t and d, d byte for byte as sent; and a
// stream of payloads, cut anywhere, reads back the same.
func FuzzScanEnvelope(f *testing.F) {
	for _, s := range []string{
		`{"op":0,"s":42,"t":"MESSAGE_CREATE","d":{"id":"1"}}`,
		`{"t":"MESSAGE_CREATE","s":2,"op":0,"d":{"content":"h\u00e9\"llo","a":[1,-2.5e+3,true,false,null,{}]}}`,
		`{"op":10,"d":{"heartbeat_interval":41250}}`, `{"op":11}`, `{"op":9,"d":true}`, `null`, `{}`,
		`{"op":1e400}`, `{"op":1.0}`, `{"op":-0}`, `{"s":9223372036854775808,"t":"X"}`, `{"d":"\ud800"}`,
		`{"t":5,"t":"X"}`, `{"t":"X","t":null}`, `{"\u006fp":1}`, `{"OP":1,"t":"A"}`, `{"t":"A\u0042"}`,
		"{\"t\":\"\xff\"}", `{"t":"X","d":01}`, `{"t":"X","d":[1,]}`, ` {"t":"X"} `, `{"t":"X"}{}`,
		`{"t":"X","d":"` + "\x01" + `"}`, `{"t":"X","d":"\x"}`, `{"t":"X","d":tru}`, `[1]`, `"s"`,
	} {
		f.Add([]byte(s))
	}
	for _, fr := range documentedFrames(f) {
		f.Add(fr.raw)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		got, gotErr := decodeEnvelope(p)
		want, wantErr := referenceEnvelope(p)
		if (gotErr != nil) != (wantErr != nil) {
			t.Fatalf("%q: scanner err %v, encoding/json err %v", p, gotErr, wantErr)
		}
		if gotErr != nil {
			return
		}
		if got.Op != want.Op || got.S != want.S || got.T != want.T || !bytes.Equal(got.D, want.D) {
			t.Fatalf("%q: scanner %d %d %q %q, encoding/json %d %d %q %q", p, got.Op, got.S, got.T, got.D, want.Op, want.S, want.T, want.D)
		}
		if got.D != nil && !json.Valid(got.D) {
			t.Fatalf("%q: d is not valid JSON: %q", p, got.D)
		}
		// The same payload three times in a stream, delivered in pieces, reads back the
		// same three times whatever the pieces.
		stream := bytes.Repeat(append(bytes.Clone(p), '\n'), 3)
		r := &streamReader{r: &chunkReader{data: stream, sizes: p}}
		for k := range 3 {
			var env envelope
			if err := r.next(&env); err != nil {
				t.Fatalf("%q: stream payload %d: %v", p, k, err)
			}
			if env.Op != want.Op || env.S != want.S || env.T != want.T || !bytes.Equal(env.D, want.D) {
				t.Fatalf("%q: stream payload %d: %d %d %q %q", p, k, env.Op, env.S, env.T, env.D)
			}
		}
		var env envelope
		if err := r.next(&env); err != io.EOF {
			t.Fatalf("%q: after the stream: %v, want EOF", p, err)
		}
	})
}

// chunkReader returns data in pieces whose sizes come from sizes (1 to 256 bytes).
type chunkReader struct {
	data  []byte
	sizes []byte
	k     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(c.sizes) > 0 {
		n += int(c.sizes[c.k%len(c.sizes)])
		c.k++
	}
	n = copy(p, c.data[:min(n, len(c.data))])
	c.data = c.data[n:]
	return n, nil
}

func TestScanEnvelopeNestingLimit(t *testing.T) {
	// encoding/json allows 10,000 levels of nesting, the envelope being the first.
	ok := `{"t":"X","d":` + strings.Repeat("[", maxNestingDepth-1) + strings.Repeat("]", maxNestingDepth-1) + `}`
	if _, err := decodeEnvelope([]byte(ok)); err != nil {
		t.Fatalf("%d levels: %v", maxNestingDepth, err)
	}
	deep := `{"t":"X","d":` + strings.Repeat("[", maxNestingDepth) + strings.Repeat("]", maxNestingDepth) + `}`
	if _, err := decodeEnvelope([]byte(deep)); err == nil {
		t.Fatalf("%d levels accepted", maxNestingDepth+1)
	}
	if err := json.Unmarshal([]byte(deep), new(any)); err == nil {
		t.Fatal("encoding/json's limit moved")
	}
	if err := json.Unmarshal([]byte(ok), new(any)); err != nil {
		t.Fatalf("encoding/json's limit moved: %v", err)
	}
}

// A payload that arrives in many reads (a large READY) is scanned whole once, not
// once per read: the framer carries its position from read to read.
func TestStreamReaderLargePayloadInPieces(t *testing.T) {
	big := `{"t":"READY","s":1,"op":0,"d":{"guilds":[` + strings.Repeat(`{"id":"1","name":"x \"}]"},`, 50000) + `{}]}}`
	stream := big + big
	r := &streamReader{r: &chunkReader{data: []byte(stream), sizes: []byte{255}}}
	for k := range 2 {
		var env envelope
		if err := r.next(&env); err != nil {
			t.Fatal(err)
		}
		if env.T != "READY" || !json.Valid(env.D) || len(env.D) != len(big)-len(`{"t":"READY","s":1,"op":0,"d":}`) {
			t.Fatalf("payload %d: %q, d of %d bytes", k, env.T, len(env.D))
		}
	}
}

// A payload already in hand is read without asking the stream for more: a zlib or
// zstd reader blocks for the next websocket message once the current one is used up,
// so asking would hold the event back until the gateway sent something else.
func TestStreamReaderDoesNotWaitWithAPayloadInHand(t *testing.T) {
	for _, piece := range []int{1, 7, 4096} {
		src := &stallingReader{data: []byte(`{"op":11}{"t":"X","op":0,"s":1,"d":[1]}`), piece: piece, stall: make(chan struct{})}
		r := &streamReader{r: src}
		done := make(chan error, 1)
		go func() {
			var env envelope
			for range 2 {
				if err := r.next(&env); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("pieces of %d: %v", piece, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("pieces of %d: both payloads were in hand, the reader waited for more", piece)
		}
		close(src.stall)
	}
}

// stallingReader returns data in pieces, then blocks until stall is closed.
type stallingReader struct {
	data  []byte
	piece int
	stall chan struct{}
}

func (s *stallingReader) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		<-s.stall
		return 0, io.EOF
	}
	n := copy(p, s.data[:min(s.piece, len(s.data))])
	s.data = s.data[n:]
	return n, nil
}
