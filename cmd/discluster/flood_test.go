package main

// A stranger floods every port of one node: the node keeps its shards, its lease
// and its memory.

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	bigendian "encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/shard/gatewaytest"
)

const (
	// floodFor is how long the stranger floods: the fault under test, so a fixed time.
	floodFor = 5 * time.Second
	// floodHold bounds the connections held open on each TCP port, so that the test
	// machine is not the victim.
	floodHold = 400
	// floodRSSBound is how much the target's resident memory may grow under the flood.
	floodRSSBound = 64 << 20
	// floodLogBound is how much the target may log during the flood: warnings about
	// bad peers are rate-limited, not one line per packet or connection.
	floodLogBound = 64 << 10
	// stranger is the flood's source address: another host on the loopback network,
	// so that the per-address limits of the cluster port count it apart from the
	// cluster's own peers, as they would on a shared network.
	stranger = "127.0.0.2"
	// gossipLabel is node/membership's memberlist label: a stranger who knows it (it
	// is no secret) gets past the label check to the decryption.
	gossipLabel = "discluster"
)

// A cluster with all its security on (gossip encryption, mutual TLS on the cluster
// port, an API token) is flooded, on every port of its leader, by a stranger with
// none of its credentials: garbage datagrams on gossip UDP; held, garbage and
// oversized-claim connections on gossip TCP; held connections beyond the per-address
// limit, garbage, wrong protocol bytes and TLS without a certificate on the cluster
// port; held, slowloris, garbage, oversized and unauthorized requests on the API.
// The leader keeps its shards (no IDENTIFY, no RESUME anywhere), its lease and its
// leadership, its memory grows by less than floodRSSBound, its log by less than
// floodLogBound, it answers status right after, and no seq is lost.
func TestE2EFlood(t *testing.T) {
	e := newE2E(t, 9)
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(e.bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("discluster %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	key := strings.TrimSpace(run("keygen"))
	pki := filepath.Join(e.dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		t.Fatal(err)
	}
	run("tls", "ca", "--dir", pki)
	for i := 1; i <= 3; i++ {
		run("tls", "cert", fmt.Sprintf("n%d", i), "--dir", pki, "--ip", "127.0.0.1")
	}
	tokenFile := filepath.Join(e.dir, "api-token")
	if err := os.WriteFile(tokenFile, []byte("flood-test-api-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.startAgentsWith(3, func(i int) []string {
		name := fmt.Sprintf("n%d", i+1)
		return []string{"--encrypt", key, "--http-token-file", tokenFile, "--http-insecure-loopback=false",
			"--tls-ca", filepath.Join(pki, "discluster-ca.pem"), "--tls-cert", filepath.Join(pki, name+".pem"),
			"--tls-key", filepath.Join(pki, name+"-key.pem")}
	})
	e.allReady(60*time.Second, e.nodes...)
	target := e.leader(e.nodes...)
	before, err := e.status(target)
	if err != nil {
		t.Fatal(err)
	}
	if !before.Lease.Held {
		t.Fatalf("%s holds no lease before the flood: %+v", target.name, before.Lease)
	}
	var mine []int
	for _, s := range before.Shards {
		if s.Node == target.name {
			mine = append(mine, s.Shard)
		}
	}
	fakeBefore := e.mustStats()
	rssBefore := rss(t, target.PID())
	logBefore := len(target.Output())

	ports := floodPorts{gossip: target.gossip, cluster: argValue(target.argsBase, "--cluster-addr"), http: target.http}
	t.Logf("flooding %s (the leader, shards %v) from %s for %v: gossip %s, cluster %s, http %s",
		target.name, mine, stranger, floodFor, ports.gossip, ports.cluster, ports.http)
	floodStart := time.Now()
	var rssMax atomic.Int64
	rssMax.Store(rssBefore)
	counts := flood(t, ports, func() {
		if r := rss(t, target.PID()); r > rssMax.Load() {
			rssMax.Store(r)
		}
	})
	rssAfter := rss(t, target.PID())
	rssMax.Store(max(rssMax.Load(), rssAfter))
	t.Logf("sent: %s", counts)
	t.Logf("%s RSS: %.1f MiB before, %.1f MiB at most during the flood, %.1f MiB right after (growth %.1f MiB, bound %d MiB)",
		target.name, mib(rssBefore), mib(rssMax.Load()), mib(rssAfter), mib(rssMax.Load()-rssBefore), floodRSSBound>>20)
	if !target.Running() {
		t.Fatalf("%s exited under the flood: %v", target.name, target.Err())
	}
	if g := rssMax.Load() - rssBefore; g > floodRSSBound {
		t.Errorf("%s's memory grew by %.1f MiB under the flood, more than %d MiB", target.name, mib(g), floodRSSBound>>20)
	}
	logged := target.Output()[logBefore:]
	t.Logf("%s logged %d bytes (%d lines) during the flood", target.name, len(logged), strings.Count(logged, "\n"))
	if len(logged) > floodLogBound {
		t.Errorf("%s logged %d bytes during the flood, more than %d; it ends:\n%s", target.name, len(logged), floodLogBound, tail(logged, 3000))
	}

	// Right after: it answers, it still leads, it holds the same lease, every shard
	// is where it was and ready, with one connection, and none started or resumed a
	// session.
	after, err := e.status(target)
	if err != nil {
		t.Fatalf("status right after the flood: %v", err)
	}
	if after.Leader != target.name || after.Term != before.Term {
		t.Errorf("leader %q term %d after the flood, was %q term %d", after.Leader, after.Term, target.name, before.Term)
	}
	if !after.Lease.Held || !after.Lease.Since.Equal(before.Lease.Since) {
		t.Errorf("%s's lease after the flood %+v, before %+v: it lapsed", target.name, after.Lease, before.Lease)
	}
	for _, ev := range after.Events {
		switch ev.Kind {
		case event.LeaseLost, event.NodeFailed, event.LeaderElected, event.Revoking, event.Failover, event.NodeRemoved:
			if !ev.At.Before(floodStart) {
				t.Errorf("event during the flood: %s", ev)
			}
		}
	}
	if strings.Contains(logged, "lease lost") {
		t.Errorf("%s lost its lease during the flood", target.name)
	}
	for i, s := range after.Shards {
		if b := before.Shards[i]; s.Node != b.Node || s.Epoch != b.Epoch {
			t.Errorf("shard %d moved during the flood: %s@%d → %s@%d", s.Shard, b.Node, b.Epoch, s.Node, s.Epoch)
		}
	}
	e.allReady(30*time.Second, e.nodes...)
	fakeAfter := e.mustStats()
	checkNoNewSessions(t, fakeBefore, fakeAfter)
	e.maxLive("the flood")
	e.leader(e.nodes...)
	e.checkEvents(false)
}

// checkNoNewSessions fails t when a shard identified, resumed or was refused an
// identify between two readings of the fake's counters.
func checkNoNewSessions(t *testing.T, before, after gatewaytest.Stats) {
	t.Helper()
	for id, a := range after.Shards {
		b := before.Shards[id]
		if a.Identifies != b.Identifies || a.Resumes != b.Resumes {
			t.Errorf("shard %d: identifies %d→%d, resumes %d→%d during the flood", id, b.Identifies, a.Identifies, b.Resumes, a.Resumes)
		}
		if a.Live != 1 {
			t.Errorf("shard %d: %d live connections after the flood", id, a.Live)
		}
	}
	if after.IdentifyViolations != 0 {
		t.Errorf("%d identify violations", after.IdentifyViolations)
	}
}

// rss is the resident memory of process pid, in bytes.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return kb << 10
				}
			}
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// argValue is the value of flag in args, "" if absent.
func argValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

type floodPorts struct{ gossip, cluster, http string }

// floodCounts is what the stranger sent, by kind.
type floodCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *floodCounts) add(kind string, n int) {
	c.mu.Lock()
	c.n[kind] += n
	c.mu.Unlock()
}

func (c *floodCounts) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for _, k := range []string{"udp datagrams", "gossip held", "gossip garbage", "gossip oversized claims",
		"cluster held", "cluster burst", "cluster garbage", "cluster wrong protocol", "cluster TLS without a certificate",
		"http held", "http slowloris", "http garbage", "http unauthorized", "http oversized bodies", "http oversized headers"} {
		parts = append(parts, fmt.Sprintf("%s %d", k, c.n[k]))
	}
	return strings.Join(parts, ", ")
}

// flood runs the stranger's flood against ports for floodFor, calling sample every
// 200 ms, and closes every connection it opened before it returns.
func flood(t *testing.T, p floodPorts, sample func()) *floodCounts {
	t.Helper()
	counts := &floodCounts{n: map[string]int{}}
	ctx, cancel := context.WithTimeout(context.Background(), floodFor)
	defer cancel()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(stranger)}, Timeout: time.Second}
	dial := func(addr string) net.Conn {
		c, err := dialer.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil
		}
		return c
	}
	// held are the connections kept open until the flood ends.
	var heldMu sync.Mutex
	var held []net.Conn
	hold := func(c net.Conn) {
		heldMu.Lock()
		held = append(held, c)
		heldMu.Unlock()
	}
	defer func() {
		heldMu.Lock()
		for _, c := range held {
			c.Close()
		}
		heldMu.Unlock()
	}()
	var wg sync.WaitGroup
	goFlood := func(f func(rng *rand.Rand)) {
		wg.Add(1)
		seed := rand.Uint64()
		go func() {
			defer wg.Done()
			f(rand.New(rand.NewPCG(seed, 0)))
		}()
	}
	// garbage is n random bytes: a window of a pool made once (the pool is only
	// read, so the flood's goroutines share it).
	pool := make([]byte, 2<<20)
	crand.Read(pool)
	garbage := func(rng *rand.Rand, n int) []byte {
		off := rng.IntN(len(pool) - n + 1)
		return pool[off : off+n : off+n]
	}
	labelled := func(b []byte) []byte {
		return append(append([]byte{244, byte(len(gossipLabel))}, gossipLabel...), b...)
	}
	// churn runs one connection after another to addr until the flood ends, each
	// given to f and closed after.
	churn := func(addr, kind string, f func(c net.Conn, rng *rand.Rand)) {
		goFlood(func(rng *rand.Rand) {
			for ctx.Err() == nil {
				c := dial(addr)
				if c == nil {
					continue
				}
				c.SetDeadline(time.Now().Add(time.Second))
				f(c, rng)
				c.Close()
				counts.add(kind, 1)
			}
		})
	}
	// holdN opens n connections to addr and holds them, silent.
	holdN := func(addr, kind string, n int) {
		for range n {
			if c := dial(addr); c != nil {
				hold(c)
				counts.add(kind, 1)
			}
		}
	}

	// Gossip UDP: garbage datagrams from several source ports, a third of them past
	// the label check.
	for range 2 {
		goFlood(func(rng *rand.Rand) {
			var conns []*net.UDPConn
			for range 4 {
				c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(stranger)})
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				conns = append(conns, c)
			}
			to, err := net.ResolveUDPAddr("udp", p.gossip)
			if err != nil {
				t.Error(err)
				return
			}
			n := 0
			for ; ctx.Err() == nil; n++ {
				b := garbage(rng, 1+rng.IntN(1400))
				if n%3 == 0 {
					b = labelled(b)
				}
				conns[n%len(conns)].WriteToUDP(b, to)
			}
			counts.add("udp datagrams", n)
		})
	}

	// Gossip TCP: held silent; garbage; a claim of a 16 MiB encrypted state, with
	// some of it sent.
	goFlood(func(*rand.Rand) { holdN(p.gossip, "gossip held", floodHold) })
	for range 2 {
		churn(p.gossip, "gossip garbage", func(c net.Conn, rng *rand.Rand) {
			b := garbage(rng, 1+rng.IntN(4096))
			if rng.IntN(2) == 0 {
				b = labelled(b)
			}
			c.Write(b)
		})
	}
	churn(p.gossip, "gossip oversized claims", func(c net.Conn, rng *rand.Rand) {
		hdr := labelled([]byte{10, 0, 0, 0, 0}) // encryptMsg, then the length
		bigendian.BigEndian.PutUint32(hdr[len(hdr)-4:], 16<<20)
		c.Write(hdr)
		c.Write(garbage(rng, 256<<10))
	})

	// Cluster port: held silent, below the per-address limit; a burst beyond it;
	// garbage; a wrong protocol byte; TLS without a client certificate.
	goFlood(func(*rand.Rand) { holdN(p.cluster, "cluster held", 200) })
	goFlood(func(*rand.Rand) {
		if !sleepCtx(ctx, floodFor/3) {
			return
		}
		var burst []net.Conn
		for range 400 {
			if c := dial(p.cluster); c != nil {
				burst = append(burst, c)
			}
		}
		counts.add("cluster burst", len(burst))
		sleepCtx(ctx, time.Second)
		for _, c := range burst {
			c.Close()
		}
	})
	churn(p.cluster, "cluster garbage", func(c net.Conn, rng *rand.Rand) { c.Write(garbage(rng, 1+rng.IntN(2048))) })
	churn(p.cluster, "cluster wrong protocol", func(c net.Conn, rng *rand.Rand) {
		c.Write([]byte{byte(3 + rng.IntN(250))})
		c.Read(make([]byte, 1))
	})
	churn(p.cluster, "cluster TLS without a certificate", func(c net.Conn, rng *rand.Rand) {
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, ServerName: "server.discluster"})
		if tc.Handshake() == nil {
			tc.Write([]byte{1})
			tc.Read(make([]byte, 1))
		}
	})

	// HTTP: held silent; slowloris; garbage; writes without the token; oversized
	// bodies and headers.
	goFlood(func(*rand.Rand) { holdN(p.http, "http held", 300) })
	goFlood(func(rng *rand.Rand) {
		var lor []net.Conn
		for range 100 {
			if c := dial(p.http); c != nil {
				c.Write([]byte("GET /v1/status HTTP/1.1\r\nHost: " + p.http + "\r\n"))
				lor = append(lor, c)
			}
		}
		counts.add("http slowloris", len(lor))
		for i := 0; sleepCtx(ctx, 250*time.Millisecond); i++ {
			for _, c := range lor {
				c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
				c.Write([]byte(fmt.Sprintf("X-Slow-%d: %d\r\n", i, rng.IntN(10))))
			}
		}
		for _, c := range lor {
			c.Close()
		}
	})
	churn(p.http, "http garbage", func(c net.Conn, rng *rand.Rand) { c.Write(garbage(rng, 1+rng.IntN(2048))) })
	request := func(c net.Conn, req string) {
		c.Write([]byte(req))
		br := bufio.NewReader(c)
		br.ReadString('\n')
	}
	churn(p.http, "http unauthorized", func(c net.Conn, rng *rand.Rand) {
		reqs := []string{
			"POST /v1/drain/n1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
			"DELETE /v1/drain/n2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n\r\n",
			"GET /v1/keyring HTTP/1.1\r\nHost: x\r\n\r\n",
			"POST /v1/keyring HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
			"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
		}
		request(c, reqs[rng.IntN(len(reqs))])
	})
	churn(p.http, "http oversized bodies", func(c net.Conn, rng *rand.Rand) {
		const n = 1 << 20
		c.Write([]byte("POST /v1/keyring HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(n) + "\r\n\r\n"))
		c.Write(garbage(rng, n))
	})
	churn(p.http, "http oversized headers", func(c net.Conn, rng *rand.Rand) {
		request(c, "GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 64<<10)+"\r\n\r\n")
	})

	// The memory of the target, while the flood runs.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for sleepCtx(ctx, 200*time.Millisecond) {
			sample()
		}
	}()
	wg.Wait()
	sample()
	return counts
}
