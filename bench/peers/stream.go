package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
)

// ingestStream renders the gateway payloads of one connection: HELLO, READY, then n
// MESSAGE_CREATEs that differ as a real guild's do (ids, authors, channels, content,
// embeds, mentions, attachments). A copy of shard's BenchmarkDispatch generator
// (shard/ingest_bench_test.go), so that both measure the same stream.
func ingestStream(n int) [][]byte {
	out := make([][]byte, 0, n+2)
	out = append(out,
		[]byte(`{"op":10,"d":{"heartbeat_interval":45000}}`),
		[]byte(`{"op":0,"s":1,"t":"READY","d":{"v":10,"session_id":"bench","resume_gateway_url":"ws://127.0.0.1/","user":{"id":"1"},"guilds":[],"application":{"id":"1","flags":0}}}`))
	rng := rand.New(rand.NewPCG(18, 1))
	for i := range n {
		d := variedMessage(rng, i)
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
func renderFrames(payloads [][]byte, compression string) (frames [][]byte) {
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
	}
	return frames
}
