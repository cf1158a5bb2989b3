package gatewaytest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkRenderMessage measures rendering one MESSAGE_CREATE from its
// pre-split template.
func BenchmarkRenderMessage(b *testing.B) {
	p, err := loadPayloads()
	if err != nil {
		b.Fatal(err)
	}
	tm := p.message[0][1]
	args := renderArgs{guildID: guildID(7), guildIndex: 7, messageID: 1300000000000000001}
	var buf []byte
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		args.messageID++
		buf = tm.render(buf[:0], int64(i), &args)
	}
	b.SetBytes(int64(len(buf)))
}

// rawClient is a websocket client with no websocket library: it sends
// IDENTIFY as one masked frame and then only counts the bytes that arrive,
// so that the benchmark measures the fake and not a client's decoder.
func rawClient(b *testing.B, s *Server, query string) (net.Conn, *bufio.Reader) {
	b.Helper()
	nc, err := net.Dial("tcp", s.base)
	if err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(nc, "GET /gateway?%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", query, s.base)
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		b.Fatalf("upgrade: %v %v", resp, err)
	}
	id, _ := json.Marshal(map[string]any{"op": opIdentify, "d": identifyD(defaultToken, nil, testIntents)})
	// A client frame: FIN+text, masked, 16-bit length, a zero mask key
	// (valid, and it leaves the payload as it is).
	frame := []byte{0x81, 0x80 | 126, byte(len(id) >> 8), byte(len(id)), 0, 0, 0, 0}
	if _, err := nc.Write(append(frame, id...)); err != nil {
		b.Fatal(err)
	}
	return nc, br
}

// BenchmarkEventPath pushes generated events through the whole server path
// (generate under the session lock, queue, render, compress, websocket
// write) to a loopback client that only counts bytes. events/s is what one
// session of the fake can deliver.
func BenchmarkEventPath(b *testing.B) {
	for _, compress := range []string{"zlib-stream", "zstd-stream", ""} {
		name := compress
		if name == "" {
			name = "plain"
		}
		b.Run(name, func(b *testing.B) {
			s, err := NewServer(Options{IdentifyWindow: time.Nanosecond})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			q := "v=10&encoding=json"
			if compress != "" {
				q += "&compress=" + compress
			}
			nc, br := rawClient(b, s, q)
			defer nc.Close()
			var received atomic.Int64
			var wg sync.WaitGroup
			wg.Go(func() {
				n, _ := io.Copy(io.Discard, br)
				received.Add(n)
			})
			var ss *session
			await(b, s, "session", func(st Stats) bool { return st.Identifies == 1 })
			s.mu.Lock()
			for _, x := range s.sessions {
				ss = x
			}
			s.mu.Unlock()
			// Let READY and GUILD_CREATE go out first.
			ss.mu.Lock()
			startSeq := ss.seq
			ss.mu.Unlock()
			for ss.eventsSent.Load() < startSeq {
				ch := s.changed.wait()
				if ss.eventsSent.Load() < startSeq {
					<-ch
				}
			}
			base := ss.eventsSent.Load()

			const batch = 256
			window := int64(s.opts.OutboundQueue / 2)
			b.ResetTimer()
			var generated int64
			for generated < int64(b.N) {
				// Keep the queue below its limit, as a client that keeps
				// up would.
				for generated-(ss.eventsSent.Load()-base) > window {
					ch := s.changed.wait()
					if generated-(ss.eventsSent.Load()-base) > window {
						<-ch
					}
				}
				n := min(batch, int64(b.N)-generated)
				ss.generate(int(n), time.Now())
				generated += n
			}
			for ss.eventsSent.Load()-base < generated {
				ch := s.changed.wait()
				if ss.eventsSent.Load()-base < generated {
					<-ch
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			s.Close()
			wg.Wait()
			b.ReportMetric(float64(received.Load())/float64(b.N), "wire-B/event")
		})
	}
}
