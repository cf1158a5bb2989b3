package shard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

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

// messageStruct is what a bot that decodes MESSAGE_CREATE typically decodes it into.
type messageStruct struct {
	ID        string `json:"id"`
	ChannelID string `json:"channel_id"`
	GuildID   string `json:"guild_id"`
	Content   string `json:"content"`
	Timestamp string `json:"timestamp"`
	Author    struct {
		ID         string  `json:"id"`
		Username   string  `json:"username"`
		GlobalName *string `json:"global_name"`
		Avatar     string  `json:"avatar"`
	} `json:"author"`
	Member struct {
		Roles    []string `json:"roles"`
		Nick     *string  `json:"nick"`
		JoinedAt string   `json:"joined_at"`
	} `json:"member"`
	Mentions []struct {
		ID       string `json:"id"`
		Username string `json:"username"`
	} `json:"mentions"`
	Embeds []struct {
		Type        string `json:"type"`
		Title       string `json:"title"`
		Description string `json:"description"`
		Color       int    `json:"color"`
	} `json:"embeds"`
	Attachments []struct {
		ID       string `json:"id"`
		Filename string `json:"filename"`
		Size     int    `json:"size"`
		URL      string `json:"url"`
	} `json:"attachments"`
	Flags int `json:"flags"`
}

// BenchmarkDispatch measures ingest through one shard: a gateway in another process
// (see blastServer) sends HELLO, READY and b.N MESSAGE_CREATEs, pre-rendered and
// pre-compressed, as fast as the client reads them. CPU-s/Mevents is this process's
// CPU (user + system) per million events: the client alone. Payloads are varied
// (distinct ids, authors, content, embeds: ~230 bytes per event on a zlib-stream
// wire) unless the name says identical. The handler either drops the event (raw: the
// shard's own cost) or decodes d into a struct (struct: what a bot that decodes pays).
func BenchmarkDispatch(b *testing.B) {
	type tc struct {
		compression shard.Compression
		identical   bool
		decode      bool
	}
	var cases []tc
	for _, c := range []shard.Compression{shard.CompressionZlibStream, shard.CompressionZstdStream, shard.CompressionNone} {
		cases = append(cases, tc{compression: c}, tc{compression: c, decode: true})
	}
	cases = append(cases, tc{compression: shard.CompressionZlibStream, identical: true})
	for _, tc := range cases {
		name := string(tc.compression)
		if tc.identical {
			name += "/identical"
		}
		if tc.decode {
			name += "/struct"
		} else {
			name += "/raw"
		}
		b.Run(name, func(b *testing.B) {
			url, wire, payloadBytes, stop := blastServer(b, string(tc.compression), b.N, tc.identical)
			defer stop()
			var got atomic.Int64
			done := make(chan struct{})
			gate, _ := shard.NewLocalGate(1, time.Millisecond)
			sh, err := shard.New(shard.Config{
				Token: "bench", ShardCount: 1, Compression: tc.compression, Gate: gate, GatewayURL: url,
				Dispatch: shard.DispatchFunc(func(_ context.Context, ev shard.Event) error {
					if ev.Type != "MESSAGE_CREATE" {
						return nil
					}
					if tc.decode {
						var m messageStruct
						if err := json.Unmarshal(ev.Data, &m); err != nil {
							return err
						}
					}
					if got.Add(1) == int64(b.N) {
						close(done)
					}
					return nil
				}),
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(payloadBytes / int64(b.N))
			cpu0 := cpuTime()
			b.ResetTimer()
			go sh.Run(context.Background())
			<-done
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N)*1e6, "CPU-s/Mevents")
			b.ReportMetric(float64(wire)/float64(b.N), "wire-B/event")
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
	if os.Getenv(blastChildEnv) != "" {
		blastChild()
	}
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

// BenchmarkIdleShardHeap connects 1,000 shards to a fake Discord in another process
// and reports what each idle READY shard holds: heap, goroutine stacks, goroutines
// and resident memory, with each transport compression.
func BenchmarkIdleShardHeap(b *testing.B) {
	for _, c := range []shard.Compression{shard.CompressionZlibStream, shard.CompressionZstdStream, shard.CompressionNone} {
		b.Run(string(c), func(b *testing.B) { idleShardHeap(b, c) })
	}
}

func idleShardHeap(b *testing.B, compression shard.Compression) {
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
		g0 := runtime.NumGoroutine()
		gate, _ := shard.NewLocalGate(shards, time.Millisecond)
		var ready atomic.Int64
		all := make([]*shard.Shard, shards)
		for id := range shards {
			sh, err := shard.New(shard.Config{
				Token: testToken, ShardID: id, ShardCount: shards, GatewayURL: gw, Gate: gate, Compression: compression,
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
		// Once READY, the fake sends GUILD_CREATEs; let them arrive before measuring.
		time.Sleep(2 * time.Second)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(runtime.NumGoroutine()-g0)/shards, "goroutines/shard")
		if f := os.Getenv("DISCLUSTER_IDLE_HEAP_PROFILE"); f != "" { // what the heap holds, for go tool pprof
			if out, err := os.Create(f); err == nil {
				pprof.Lookup("heap").WriteTo(out, 0)
				out.Close()
			}
		}
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
