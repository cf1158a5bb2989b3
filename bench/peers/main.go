// Command peers measures ingest side by side: the same pre-rendered stream of gateway
// payloads read by discluster's shard client and by the Go libraries bots use for the
// same job (discordgo, disgo, arikawa), each client in a process of its own, the CPU it
// spends per event counted by that process (getrusage), printed as medians and as ratios.
//
// It is a module of its own, so that the main module never depends on the peers:
//
//	cd bench/peers && go run . -n 100000 -runs 3
//
// The driver renders HELLO, READY and n MESSAGE_CREATEs (varied as a guild's are, the
// same generator as shard's BenchmarkDispatch), serves them from this process as fast
// as the client reads them, and runs each client as a child (this binary, -client).
//
// Each peer runs in its cheapest mode for raw ingest: uncompressed, because none reads
// zlib-stream or zstd-stream (they offer only per-message zlib; arikawa fails on the
// second zlib-stream frame with "zlib: invalid header"); discordgo with SyncEvents on
// and its state cache off; disgo's gateway alone; arikawa's gateway package alone (a
// gateway session without the state package's cache) at the driver's URL, its handler
// the loop over the channel Connect returns.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bwmarrin/discordgo"
	"github.com/coder/websocket"
	arikawa "github.com/diamondburned/arikawa/v3/gateway"
	"github.com/disgoorg/disgo/gateway"

	"github.com/discluster/discluster/shard"
)

// A client mode: which library, over which transport compression, and whether the
// handler decodes d into a struct. discordgo, disgo and arikawa always decode every
// dispatch into their own structs before a handler sees it; that is their cheapest mode.
type mode struct {
	lib         string
	compression string // zlib-stream, zstd-stream or none
	decode      bool
}

func (m mode) String() string {
	s := m.lib + ", " + m.compression
	if m.lib == "discluster" {
		if m.decode {
			s += ", d decoded into a struct"
		} else {
			s += ", raw d"
		}
	} else {
		s += ", events decoded by the library"
	}
	return s
}

var modes = []mode{
	{"discluster", "none", false},
	{"discluster", "zstd-stream", false},
	{"discluster", "zlib-stream", false},
	{"discluster", "none", true},
	{"discluster", "zlib-stream", true},
	{"discordgo", "none", false},
	{"disgo", "none", false},
	{"arikawa", "none", false},
}

func main() {
	client := flag.String("client", "", "run as the client child: discluster, discordgo, disgo or arikawa")
	url := flag.String("url", "", "client: the gateway's websocket URL")
	httpURL := flag.String("http", "", "client: the fake REST API's base URL (discordgo asks it for the gateway)")
	compression := flag.String("compression", "none", "client: transport compression")
	decode := flag.Bool("decode", false, "client: decode d into a struct (discluster)")
	n := flag.Int("n", 100000, "MESSAGE_CREATEs per run")
	runs := flag.Int("runs", 3, "runs per client; the figure is their median")
	flag.Parse()
	if *client != "" {
		cpu, err := runClient(*client, *url, *httpURL, *compression, *decode, *n)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(cpu.Seconds())
		return
	}
	drive(*n, *runs)
}

func drive(n, runs int) {
	payloads := ingestStream(n)
	frames := map[string][][]byte{}
	fmt.Printf("%d MESSAGE_CREATEs per run, %d runs per client, medians; CPU is the client process's user + system time\n\n", n, runs)
	type result struct {
		m      mode
		median float64
		min    float64
		max    float64
	}
	var results []result
	for _, m := range modes {
		if frames[m.compression] == nil {
			frames[m.compression] = renderFrames(payloads, m.compression)
		}
		var cpu []float64
		for range runs {
			s, err := runOne(m, frames[m.compression], n)
			if err != nil {
				log.Fatalf("%s: %v", m, err)
			}
			cpu = append(cpu, s/float64(n)*1e6)
		}
		sort.Float64s(cpu)
		results = append(results, result{m, cpu[len(cpu)/2], cpu[0], cpu[len(cpu)-1]})
	}
	base := results[0].median
	fmt.Printf("| client | CPU-s per million events | × discluster (%s) |\n|---|---|---|\n", results[0].m)
	for _, r := range results {
		fmt.Printf("| %s | %.1f [%.1f–%.1f] | %.2f× |\n", r.m, r.median, r.min, r.max, r.median/base)
	}
}

// runOne serves one connection the frames and runs one client child against it.
func runOne(m mode, frames [][]byte, n int) (float64, error) {
	typ := websocket.MessageBinary
	if m.compression == "none" {
		typ = websocket.MessageText
	}
	quit := make(chan struct{})
	defer close(quit)
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") { // discordgo asks for the gateway first
			json.NewEncoder(w).Encode(map[string]string{"url": "ws" + strings.TrimPrefix(srv.URL, "http") + "/"})
			return
		}
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
	defer srv.Close()
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	args := []string{"-client", m.lib, "-url", "ws" + strings.TrimPrefix(srv.URL, "http") + "/", "-http", srv.URL,
		"-compression", m.compression, "-n", strconv.Itoa(n)}
	if m.decode {
		args = append(args, "-decode")
	}
	out, err := exec.Command(self, args...).Output()
	if err != nil {
		return 0, fmt.Errorf("client: %v", err)
	}
	return strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
}

// runClient connects one client, waits for n MESSAGE_CREATEs and returns the CPU
// this process spent meanwhile.
func runClient(lib, url, httpURL, compression string, decode bool, n int) (time.Duration, error) {
	var got atomic.Int64
	done := make(chan struct{})
	count := func() {
		if got.Add(1) == int64(n) {
			close(done)
		}
	}
	cpu0 := cpuTime()
	switch lib {
	case "discluster":
		gate, _ := shard.NewLocalGate(1, time.Millisecond)
		sh, err := shard.New(shard.Config{
			Token: "bench", ShardCount: 1, Compression: shard.Compression(compression), Gate: gate, GatewayURL: url,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Dispatch: shard.DispatchFunc(func(_ context.Context, ev shard.Event) error {
				if ev.Type != "MESSAGE_CREATE" {
					return nil
				}
				if decode {
					var m message
					if err := json.Unmarshal(ev.Data, &m); err != nil {
						return err
					}
				}
				count()
				return nil
			}),
		})
		if err != nil {
			return 0, err
		}
		go sh.Run(context.Background())
	case "discordgo":
		discordgo.EndpointGateway = httpURL + "/api/v10/gateway"
		s, err := discordgo.New("Bot bench")
		if err != nil {
			return 0, err
		}
		s.SyncEvents, s.StateEnabled, s.Identify.Compress = true, false, false
		s.LogLevel = -1
		s.AddHandler(func(_ *discordgo.Session, _ *discordgo.MessageCreate) { count() })
		if err := s.Open(); err != nil {
			return 0, err
		}
	case "disgo":
		g := gateway.New("bench", func(t gateway.EventType, _ int, _ int, _ gateway.EventData) {
			if t == gateway.EventTypeMessageCreate {
				count()
			}
		}, nil, gateway.WithURL(strings.TrimSuffix(url, "/")), gateway.WithCompress(false),
			gateway.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
		if err := g.Open(context.Background()); err != nil {
			return 0, err
		}
	case "arikawa":
		// As gateway.NewWithIntents does, but at the driver's URL rather than the one
		// GET /gateway/bot returns; Compress false as for discordgo: arikawa reads
		// only per-message zlib, which the driver does not render.
		id := arikawa.DefaultIdentifier("Bot bench")
		id.Compress = false
		id.AddIntents(arikawa.IntentGuildMessages | arikawa.IntentMessageContent)
		g := arikawa.NewCustomWithIdentifier(arikawa.AddGatewayParams(url), id, nil)
		ch := g.Connect(context.Background())
		go func() {
			for op := range ch {
				if _, ok := op.Data.(*arikawa.MessageCreateEvent); ok {
					count()
				}
			}
		}()
	default:
		return 0, fmt.Errorf("unknown client %q", lib)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Minute):
		return 0, fmt.Errorf("%d of %d events after 10 minutes", got.Load(), n)
	}
	return cpuTime() - cpu0, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// message is what a bot that decodes MESSAGE_CREATE typically decodes it into.
type message struct {
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
