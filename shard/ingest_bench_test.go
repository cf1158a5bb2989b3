package shard_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
)

// The ingest benchmark's gateway runs in a child process (this test binary, started
// with DISCLUSTER_BLAST_CHILD), so that the benchmark's getrusage counts the client
// alone. The child renders and compresses every frame before it prints its address.

const (
	blastChildEnv  = "DISCLUSTER_BLAST_CHILD"  // the compression: zlib-stream, zstd-stream or none
	blastEventsEnv = "DISCLUSTER_BLAST_EVENTS" // MESSAGE_CREATEs after READY
	blastShapeEnv  = "DISCLUSTER_BLAST_SHAPE"  // varied (default) or identical
)

// ingestStream renders the gateway payloads of one benchmark connection: HELLO,
// READY, then n MESSAGE_CREATEs. Varied payloads differ as a real guild's do (ids,
// authors, channels, content, embeds, mentions, attachments) and compress about as
// well as Discord's traffic; identical ones repeat one payload, which a compression
// context shrinks to a few bytes and the client inflates unrealistically fast.
func ingestStream(n int, varied bool) [][]byte {
	out := make([][]byte, 0, n+2)
	out = append(out,
		[]byte(`{"op":10,"d":{"heartbeat_interval":45000}}`),
		[]byte(`{"op":0,"s":1,"t":"READY","d":{"v":10,"session_id":"bench","resume_gateway_url":"ws://127.0.0.1/","user":{"id":"1"},"guilds":[],"application":{"id":"1","flags":0}}}`))
	rng := rand.New(rand.NewPCG(18, 1))
	for i := range n {
		d := messageCreate
		if varied {
			d = variedMessage(rng, i)
		}
		out = append(out, []byte(`{"t":"MESSAGE_CREATE","s":`+strconv.Itoa(i+2)+`,"op":0,"d":`+d+`}`))
	}
	return out
}

var words = strings.Fields(`the a to and of is in it you that for on this be with are have not
	was just but so like what can at do if my all your get me no we they up about one out
	there know now or how when time will think good yeah lol server bot role channel voice
	game play anyone here tonight update patch build deploy error works thanks please ok
	discord gateway shard message event queue latency ping pong nice gg wp brb afk`)

// variedMessage is the d of a MESSAGE_CREATE in Discord's shape, drawn from rng.
func variedMessage(rng *rand.Rand, i int) string {
	const base = 1300000000000000000
	user := rng.IntN(2000)
	snow := func(kind, k int) string { return strconv.Itoa(base + kind*1e15 + k) }
	var content strings.Builder
	for range 3 + rng.IntN(90) {
		content.WriteString(words[rng.IntN(len(words))])
		content.WriteByte(' ')
	}
	mentions := []any{}
	if rng.IntN(5) == 0 {
		mentions = append(mentions, map[string]any{"id": snow(1, rng.IntN(2000)), "username": fmt.Sprintf("user%d", rng.IntN(2000)),
			"global_name": nil, "discriminator": "0", "avatar": fmt.Sprintf("%032x", rng.Uint64()), "public_flags": 0})
	}
	embeds := []any{}
	if rng.IntN(3) == 0 {
		embeds = append(embeds, map[string]any{"type": "rich", "title": content.String()[:min(40, content.Len())],
			"description": strings.Repeat(words[rng.IntN(len(words))]+" ", 10+rng.IntN(60)), "color": rng.IntN(1 << 24)})
	}
	attachments := []any{}
	if rng.IntN(10) == 0 {
		id := snow(5, i)
		attachments = append(attachments, map[string]any{"id": id, "filename": "image.png", "size": 10000 + rng.IntN(1e6),
			"url": "https://cdn.discordapp.com/attachments/" + id + "/image.png", "proxy_url": "https://media.discordapp.net/attachments/" + id + "/image.png",
			"width": 640 + rng.IntN(1000), "height": 480 + rng.IntN(800), "content_type": "image/png"})
	}
	roles := []string{}
	for range rng.IntN(5) {
		roles = append(roles, snow(4, rng.IntN(50)))
	}
	d := map[string]any{
		"id": snow(0, i), "channel_id": snow(2, rng.IntN(40)), "guild_id": snow(3, rng.IntN(3)),
		"type": 0, "tts": false, "mention_everyone": false, "pinned": false, "flags": 0,
		"timestamp": fmt.Sprintf("2026-11-22T21:%02d:%02d.%06d+00:00", i/60000%60, i/1000%60, rng.IntN(1e6)), "edited_timestamp": nil,
		"author": map[string]any{"id": snow(1, user), "username": fmt.Sprintf("user%d", user), "global_name": fmt.Sprintf("User %d", user),
			"discriminator": "0", "avatar": fmt.Sprintf("%016x%016x", uint64(user)*0x9e3779b97f4a7c15, uint64(user)*0xbf58476d1ce4e5b9), "public_flags": user % 3},
		"member": map[string]any{"roles": roles, "nick": nil, "joined_at": fmt.Sprintf("2024-%02d-01T00:00:00.000000+00:00", 1+user%12),
			"deaf": false, "mute": false, "flags": 0, "premium_since": nil, "pending": false},
		"mentions": mentions, "mention_roles": []any{}, "attachments": attachments, "components": []any{},
		"embeds": embeds, "content": content.String(), "nonce": snow(0, i) + "0",
	}
	b, _ := json.Marshal(d)
	return string(b)
}

// renderFrames compresses the payloads as Discord does: one zlib stream with a sync
// flush per payload, or one zstd frame never ended with a flush per payload; one
// websocket message per payload.
func renderFrames(payloads [][]byte, compression string) (frames [][]byte, wire int64) {
	var buf bytes.Buffer
	var flush func(p []byte)
	switch compression {
	case "zlib-stream":
		zw, _ := zlib.NewWriterLevel(&buf, zlib.DefaultCompression)
		flush = func(p []byte) { zw.Write(p); zw.Flush() }
	case "zstd-stream":
		zw, _ := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
		flush = func(p []byte) { zw.Write(p); zw.Flush() }
	default:
		flush = func(p []byte) { buf.Write(p) }
	}
	for _, p := range payloads {
		buf.Reset()
		flush(p)
		frames = append(frames, bytes.Clone(buf.Bytes()))
		wire += int64(buf.Len())
	}
	return frames, wire
}

// blastChild is the child's main: it serves one connection the rendered stream as
// fast as the client reads it and then keeps it open until its stdin closes.
func blastChild() {
	compression := os.Getenv(blastChildEnv)
	n, _ := strconv.Atoi(os.Getenv(blastEventsEnv))
	payloads := ingestStream(n, os.Getenv(blastShapeEnv) != "identical")
	frames, wire := renderFrames(payloads, compression)
	var payloadBytes int64
	for _, p := range payloads[2:] {
		payloadBytes += int64(len(p))
	}
	typ := websocket.MessageBinary
	if compression == "none" {
		typ = websocket.MessageText
	}
	quit := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			return
		}
		defer c.CloseNow()
		go func() { // swallow what the client sends
			for {
				if _, _, err := c.Read(context.Background()); err != nil {
					return
				}
			}
		}()
		for _, f := range frames {
			if c.Write(context.Background(), typ, f) != nil {
				return
			}
		}
		<-quit
	}))
	fmt.Println("ws"+strings.TrimPrefix(srv.URL, "http"), wire, payloadBytes)
	bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
	close(quit)
	srv.Close()
	os.Exit(0)
}

// blastServer starts a child gateway with n events; the returned stop ends it.
func blastServer(b *testing.B, compression string, n int, identical bool) (url string, wire, payloadBytes int64, stop func()) {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	shape := "varied"
	if identical {
		shape = "identical"
	}
	cmd.Env = append(os.Environ(), blastChildEnv+"="+compression, blastEventsEnv+"="+strconv.Itoa(n), blastShapeEnv+"="+shape)
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if _, serr := fmt.Sscan(line, &url, &wire, &payloadBytes); err != nil || serr != nil {
		b.Fatalf("blast child: %q %v %v", line, err, serr)
	}
	return url, wire, payloadBytes, func() { stdin.Close(); cmd.Wait() }
}
