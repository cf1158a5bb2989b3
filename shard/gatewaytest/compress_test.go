package gatewaytest

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/json"
	"io"
	"testing"

	"github.com/coder/websocket"
)

func TestTransportCompression(t *testing.T) {
	for _, tc := range []struct {
		compress string
		split    bool
	}{
		{"zlib-stream", false},
		{"zlib-stream", true},
		{"zstd-stream", false},
		{"zstd-stream", true}, // SplitFrames must not split zstd-stream
	} {
		name := tc.compress
		if tc.split {
			name += "/split"
		}
		t.Run(name, func(t *testing.T) {
			s := newTestServer(t, Options{Shards: 1, Guilds: 5, EventRate: 1000, SplitFrames: tc.split})
			c, _, last := start(t, s, "v=10&encoding=json&compress="+tc.compress, nil)
			readUntil(t, c, &last, upTo(last+50))
			c.send(opHeartbeat, last)
			// Events keep coming; read until the ACK.
			for p := c.mustRead(); p.Op != opHeartbeatACK; p = c.mustRead() {
			}
			msgs, payloads := c.src.msgs, c.payloads
			switch {
			case tc.compress == "zlib-stream" && tc.split:
				if msgs < 2*payloads {
					t.Fatalf("%d messages for %d payloads, want every payload split", msgs, payloads)
				}
				if c.src.markers != payloads {
					t.Fatalf("%d messages end with the sync flush marker, want one per payload (%d)", c.src.markers, payloads)
				}
			case tc.compress == "zlib-stream":
				if msgs != payloads || c.src.markers != payloads {
					t.Fatalf("%d messages, %d markers for %d payloads", msgs, c.src.markers, payloads)
				}
			default:
				if msgs != payloads {
					t.Fatalf("zstd-stream: %d messages for %d payloads, want one each", msgs, payloads)
				}
			}
		})
	}
}

func TestSplitPoint(t *testing.T) {
	marker := syncFlushMarker
	cases := [][]byte{
		{0x78, 0x01, 0x00, 0x00, 0xff, 0xff},
		append(bytes.Repeat([]byte{0x00, 0x00, 0xff, 0xff}, 8), marker...),
		append([]byte{1, 2, 3, 0, 0, 0xff, 0xff, 9, 0, 0, 0xff, 0xff, 4}, marker...),
	}
	for i := 0; i < 200; i++ {
		b := make([]byte, 5+i)
		for j := range b {
			b[j] = byte(j * i)
		}
		cases = append(cases, append(b, marker...))
	}
	for _, b := range cases {
		cuts := map[int]bool{}
		for n := uint64(1); n < 50; n++ {
			k := splitPoint(b, n)
			if k < 1 || k > len(b)-len(marker) {
				t.Fatalf("cut %d of %d bytes leaves the marker split", k, len(b))
			}
			if bytes.HasSuffix(b[:k], marker) {
				t.Fatalf("first part %x ends with the marker", b[:k])
			}
			cuts[k] = true
		}
		if len(b) > 20 && len(cuts) < 5 {
			t.Fatalf("cuts %v do not vary", cuts)
		}
	}
	if splitPoint(marker, 1) != 0 || splitPoint(append([]byte{1}, marker...), 1) != 0 {
		t.Fatal("a payload too short to cut was cut")
	}
}

// Payload compression (IDENTIFY's compress:true, without transport compression):
// the large payloads arrive as binary messages, each a complete zlib stream; the
// small ones, and everything before IDENTIFY, as text.
func TestPayloadCompression(t *testing.T) {
	s := newTestServer(t, Options{Shards: 1, Guilds: 40, EventRate: 200})
	c := dial(t, s.GatewayURL(), "v=10&encoding=json")
	c.hello()
	d := identifyD(defaultToken, []int{0, 1}, testIntents)
	d["compress"] = true
	c.send(opIdentify, d)
	binary, text := 0, 0
	for range 50 {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		typ, b, err := c.ws.Read(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if typ == websocket.MessageBinary {
			zr, err := zlib.NewReader(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("a binary message is not a zlib stream of its own: %v", err)
			}
			raw, err := io.ReadAll(zr)
			if err != nil || !json.Valid(raw) || len(raw) < 1024 {
				t.Fatalf("binary message: %d bytes of JSON %v, err %v", len(raw), json.Valid(raw), err)
			}
			binary++
		} else {
			if len(b) >= 1024 {
				t.Fatalf("a %d-byte payload arrived uncompressed", len(b))
			}
			text++
		}
	}
	if binary == 0 {
		t.Fatal("nothing arrived compressed: READY and GUILD_CREATE are large")
	}
	t.Logf("%d binary, %d text", binary, text)
}

// TestZlibStreamIsOneStreamAcrossPayloads: a connection holds a compressor only
// while it writes a batch, yet its payloads are one zlib stream that a single
// inflater reads, and within a batch later payloads refer back to earlier ones (a
// repeated payload costs a few bytes), as Discord's do.
func TestZlibStreamIsOneStreamAcrossPayloads(t *testing.T) {
	e := &zlibEncoder{}
	msg := bytes.Repeat([]byte(`{"t":"MESSAGE_CREATE","s":2,"op":0,"d":{"content":"hi","id":"1"}}`), 3)
	payloads := [][]byte{[]byte(`{"op":10,"d":{"heartbeat_interval":41250}}`), msg, msg, msg, []byte(`{"op":11}`), msg}
	idleAfter := map[int]bool{0: true, 2: true, 4: true} // batches: [0], [1 2], [3 4], [5]
	var stream bytes.Buffer
	sizes := make([]int, len(payloads))
	for i, p := range payloads {
		b, err := e.encode(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(b, syncFlushMarker) {
			t.Fatalf("payload %d does not end with the sync flush marker", i)
		}
		sizes[i] = len(b)
		stream.Write(b)
		if idleAfter[i] {
			e.idle()
			if e.d != nil {
				t.Fatalf("after payload %d the idle encoder still holds its compressor", i)
			}
		}
	}
	if sizes[2] >= sizes[1]/4 {
		t.Fatalf("a payload repeated in a batch took %d bytes after %d: it does not refer back", sizes[2], sizes[1])
	}
	zr, err := zlib.NewReader(&stream)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range payloads {
		got := make([]byte, len(p))
		if _, err := io.ReadFull(zr, got); err != nil {
			t.Fatalf("payload %d: %v", i, err)
		}
		if !bytes.Equal(got, p) {
			t.Fatalf("payload %d decoded as %q", i, got)
		}
	}
}
