package shard_test

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/discluster/discluster/shard"
	"github.com/discluster/discluster/shard/gatewaytest"
)

// messageCreate is a 1 KB MESSAGE_CREATE in Discord's shape.
var messageCreate = func() string {
	d := map[string]any{
		"id": "1300000000000000001", "channel_id": "1200000000000000002", "guild_id": "1100000000000000003",
		"type": 0, "tts": false, "mention_everyone": false, "pinned": false, "flags": 0,
		"timestamp": "2026-11-22T21:45:00.000000+00:00", "edited_timestamp": nil,
		"author": map[string]any{"id": "1000000000000000004", "username": "someone", "global_name": "Some One",
			"discriminator": "0", "avatar": "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6", "public_flags": 0},
		"member": map[string]any{"roles": []string{"1400000000000000005", "1400000000000000006"}, "nick": nil,
			"joined_at": "2024-01-01T00:00:00.000000+00:00", "deaf": false, "mute": false, "flags": 0},
		"mentions": []any{}, "mention_roles": []any{}, "attachments": []any{}, "components": []any{},
		"embeds":  []any{map[string]any{"type": "rich", "title": "A title", "description": strings.Repeat("lorem ipsum ", 30)}},
		"content": "hello from the benchmark, " + strings.Repeat("x", 120),
		"nonce":   "1300000000000000000",
	}
	b, _ := json.Marshal(d)
	return string(b)
}()

// blaster is a minimal gateway that answers with HELLO, READY and then events, as
// fast as the client reads them. Every frame is rendered and compressed before the
// benchmark's timer starts (one zlib stream, a sync flush per payload, as Discord
// does), so the figures measure the client, not the blaster. Heartbeats are not
// answered: the first one falls due 45 s in, long after the benchmark.
func blaster(b *testing.B, events int, compress bool) *httptest.Server {
	b.Helper()
	var frames [][]byte
	var zbuf bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&zbuf, zlib.BestSpeed)
	add := func(p string) {
		if !compress {
			frames = append(frames, []byte(p))
			return
		}
		zbuf.Reset()
		zw.Write([]byte(p))
		zw.Flush()
		frames = append(frames, bytes.Clone(zbuf.Bytes()))
	}
	add(`{"op":10,"d":{"heartbeat_interval":45000}}`)
	add(`{"op":0,"s":1,"t":"READY","d":{"v":10,"session_id":"bench","resume_gateway_url":"ws://127.0.0.1/","user":{"id":"1"},"guilds":[],"application":{"id":"1","flags":0}}}`)
	for i := range events {
		add(fmt.Sprintf(`{"op":0,"s":%d,"t":"MESSAGE_CREATE","d":%s}`, i+2, messageCreate))
	}
	typ := websocket.MessageText
	if compress {
		typ = websocket.MessageBinary
	}
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := r.Context()
		go func() { // swallow what the client sends
			for {
				if _, _, err := c.Read(ctx); err != nil {
					return
				}
			}
		}()
		for _, f := range frames {
			if c.Write(ctx, typ, f) != nil {
				return
			}
		}
		<-ctx.Done()
	}))
}

// BenchmarkDispatch measures dispatch events per second through one shard into a
// no-op handler, 1 KB MESSAGE_CREATE. Note that zlib-stream's figure is bounded by
// the blaster's compression on the other core as much as by the client.
func BenchmarkDispatch(b *testing.B) {
	for _, tc := range []struct {
		name     string
		compress bool
	}{{"zlib-stream", true}, {"uncompressed", false}} {
		b.Run(tc.name, func(b *testing.B) {
			srv := blaster(b, b.N, tc.compress)
			defer srv.Close()
			var got atomic.Int64
			done := make(chan struct{})
			comp := shard.CompressionNone
			if tc.compress {
				comp = shard.CompressionZlibStream
			}
			gate, _ := shard.NewLocalGate(1, time.Millisecond)
			sh, err := shard.New(shard.Config{
				Token: "bench", ShardCount: 1, Compression: comp, Gate: gate,
				GatewayURL: "ws" + strings.TrimPrefix(srv.URL, "http"),
				Dispatch: shard.DispatchFunc(func(_ context.Context, ev shard.Event) error {
					if ev.Type == "MESSAGE_CREATE" && got.Add(1) == int64(b.N) {
						close(done)
					}
					return nil
				}),
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(messageCreate)))
			cpu0 := cpuTime()
			b.ResetTimer()
			go sh.Run(context.Background())
			<-done
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			// The whole process's CPU: the client plus the blaster's writes.
			b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N)*1e6, "CPU-s/Mevents")
			sh.Stop(context.Background())
		})
	}
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rss is the resident set size of this process, from /proc (Linux); 0 elsewhere.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, resident int64
	if _, err := fmt.Sscan(string(b), &size, &resident); err != nil {
		return 0
	}
	return resident * int64(os.Getpagesize())
}

// TestMain doubles as the fake Discord's host process for BenchmarkIdleShardHeap,
// so the fake's memory is not counted as the client's.
func TestMain(m *testing.M) {
	if os.Getenv("DISCLUSTER_FAKE_CHILD") == "1" {
		srv, err := gatewaytest.NewServer(gatewaytest.Options{
			Token: testToken, Shards: 1000, MaxConcurrency: 1000, IdentifyWindow: time.Millisecond,
			HeartbeatInterval: 41250 * time.Millisecond,
		})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println(srv.GatewayURL())
		bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
		srv.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// BenchmarkIdleShardHeap connects 1,000 shards (zlib-stream) to a fake Discord in
// another process and reports the heap each idle READY shard holds.
func BenchmarkIdleShardHeap(b *testing.B) {
	const shards = 1000
	for range b.N {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "DISCLUSTER_FAKE_CHILD=1")
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "ws://") {
			b.Fatalf("fake child: %q %v", line, err)
		}
		gw := strings.TrimSpace(line)

		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		rss0 := rss()
		gate, _ := shard.NewLocalGate(shards, time.Millisecond)
		var ready atomic.Int64
		all := make([]*shard.Shard, shards)
		for id := range shards {
			sh, err := shard.New(shard.Config{
				Token: testToken, ShardID: id, ShardCount: shards, GatewayURL: gw, Gate: gate,
				Dispatch: shard.DispatchFunc(func(context.Context, shard.Event) error { return nil }),
				Observe: func(l shard.Lifecycle) {
					if l.Kind == shard.LifecycleReady {
						ready.Add(1)
					}
				},
			})
			if err != nil {
				b.Fatal(err)
			}
			all[id] = sh
			go sh.Run(context.Background())
		}
		deadline := time.Now().Add(2 * time.Minute)
		for ready.Load() < shards {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d shards READY after 2 minutes", ready.Load(), shards)
			}
			time.Sleep(50 * time.Millisecond) // a benchmark's progress poll, bounded above
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/shards/1024, "KiB-heap/shard")
		b.ReportMetric(float64(rss()-rss0)/shards/1024, "KiB-RSS/shard")
		b.ReportMetric(float64(after.StackInuse-before.StackInuse)/shards/1024, "KiB-stack/shard")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		for _, sh := range all {
			sh.Stop(ctx)
		}
		cancel()
		stdin.Close()
		cmd.Wait()
	}
}
