// Package proccluster starts discluster agents and the fake Discord as child
// processes on loopback, with ports the OS chose, waits for their HTTP APIs to
// answer, and tells when every shard is ready and spread: the process mechanics the
// demo, the benchmark and the end-to-end tests share. Each caller keeps what it does
// with the cluster (printing, measuring, injecting faults).
//
// It must never contact real Discord (an agent it starts must be given a loopback
// --api-base), never bind or hand a child anything but 127.0.0.1, and never leave a
// child running after Stop.
package proccluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Host is the only address the children are given: loopback.
const Host = "127.0.0.1"

// pollEvery is how often the waits of this package try again.
const pollEvery = 50 * time.Millisecond

// Loopback is host:port on loopback.
func Loopback(port int) string { return net.JoinHostPort(Host, strconv.Itoa(port)) }

// issued holds every port FreePorts handed out in this process: a port closed again
// at once is free to the OS, which hands it out again to the next caller, while the
// child it was meant for may not have bound it yet.
var issued = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// FreePorts asks the OS for n distinct free loopback ports, none of them handed out
// before by this process. They are free when it answers; another program may take
// one in between, rarely.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	issued.Lock()
	defer issued.Unlock()
	out := make([]int, 0, n)
	for tries := 0; len(out) < n; tries++ {
		if tries > 100*n {
			return nil, fmt.Errorf("no %d fresh loopback ports after %d tries", n, tries)
		}
		l, err := net.Listen("tcp", Loopback(0))
		if err != nil {
			return nil, fmt.Errorf("a free loopback port: %w", err)
		}
		ls = append(ls, l) // held until the end, so the OS offers another next
		p := l.Addr().(*net.TCPAddr).Port
		if issued.ports[p] {
			continue
		}
		issued.ports[p] = true
		out = append(out, p)
	}
	return out, nil
}

// Poll calls cond until it returns nil, every interval, for at most d. It returns
// nil once cond does, ctx's error when ctx ends first, and otherwise cond's last
// error when d has passed. cond runs at least once.
func Poll(ctx context.Context, d, every time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := cond()
		if err == nil {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return err
		}
		t := time.NewTimer(min(every, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// FakeStatsPath is where the fake Discord serves its counters as JSON.
const FakeStatsPath = "/fake/stats"

// FakeStats reads the counters of the fake Discord at addr (its --addr) into v, a
// *gatewaytest.Stats of the caller's.
func FakeStats(ctx context.Context, addr string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+FakeStatsPath, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s%s: HTTP %d", addr, FakeStatsPath, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
