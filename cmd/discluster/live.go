package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/discluster/discluster/node/api"
)

// fetchStatus asks the first of addrs that answers, over plain HTTP.
func fetchStatus(ctx context.Context, addrs []string, token string) (api.Status, string, error) {
	return fetchStatusAs(ctx, api.Client{Token: token}, addrs)
}

// fetchStatusAs asks the first of addrs that answers, as base would: with its token
// and its HTTP client (for https agents, the one that trusts the cluster CA).
func fetchStatusAs(ctx context.Context, base api.Client, addrs []string) (api.Status, string, error) {
	var last error
	for _, a := range addrs {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		cl := base
		cl.Addr = a
		st, err := cl.Status(ctx)
		cancel()
		if err != nil {
			last = err
			continue
		}
		return st, a, nil
	}
	return api.Status{}, "", last
}

// renderLive is the live view: the status, cold-start progress, and recent events.
func renderLive(w io.Writer, st api.Status, now time.Time) {
	renderStatus(w, st, now)
	if st.Config != nil {
		ready := 0
		for _, s := range st.Shards {
			if s.State == "ready" {
				ready++
			}
		}
		total := st.Config.TotalShards
		fmt.Fprintf(w, "\n%d/%d shards ready", ready, total)
		fenced := map[string]bool{}
		for _, f := range st.Fences {
			fenced[f.Node] = true
		}
		// Each bucket identifies one shard per window; a shard with a checkpoint
		// resumes in a round trip; a failed node's shards wait for its lease.
		identify := 0
		for _, s := range st.Shards {
			if s.State != "ready" && s.Checkpoint == 0 && !fenced[s.Node] {
				identify++
			}
		}
		if identify > 0 {
			mc := max(1, st.Config.MaxConcurrency)
			eta := time.Duration((identify+mc-1)/mc) * st.Config.IdentifyWindow
			fmt.Fprintf(w, "; %d to identify, at most ~%v by the identify schedule (%d per %v)", identify, eta.Round(100*time.Millisecond), mc, st.Config.IdentifyWindow)
		}
		fmt.Fprintln(w)
		for _, f := range st.Fences {
			fmt.Fprintf(w, "%d shards of %s wait for its last lease to run out, until %s (%v): it may still be running them\n",
				f.Shards, f.Node, f.Until.Local().Format("15:04:05.000"), max(0, f.Until.Sub(now)).Round(100*time.Millisecond))
		}
	}
	if len(st.Events) > 0 {
		fmt.Fprintln(w, "\nRECENT")
		for _, e := range st.Events {
			fmt.Fprintf(w, "  %s  %-8s %s\n", e.At.Local().Format("15:04:05.000"), e.Node, e)
		}
	}
}

// isTerminal reports whether w is a terminal, where the view redraws in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// watch redraws the live view every interval until ctx ends. header, when set, is
// printed above each frame (the demo's list of processes).
func watch(ctx context.Context, w io.Writer, addrs []string, token string, interval time.Duration, header func(io.Writer)) error {
	return watchAs(ctx, w, api.Client{Token: token}, addrs, interval, header)
}

// watchAs is watch, asking addrs as base would (fetchStatusAs). The view follows
// the agent's event stream (GET /v1/events) and redraws every interval; when that
// agent goes away it follows the next of addrs, then of the members it last saw; an
// agent without the stream is polled.
func watchAs(ctx context.Context, w io.Writer, base api.Client, addrs []string, interval time.Duration, header func(io.Writer)) error {
	term := isTerminal(w)
	v := &liveView{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		v.follow(ctx, base, addrs, interval)
	}()
	defer func() { <-done }()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		var b strings.Builder
		if header != nil {
			header(&b)
		}
		st, from, how, err := v.get()
		switch {
		case from == "" && err == nil:
			fmt.Fprintln(&b, "asking the agents ...")
		case from == "":
			fmt.Fprintf(&b, "no agent answers (%v); retrying\n", err)
		default:
			renderLive(&b, st, time.Now())
			fmt.Fprintf(&b, "\n(from %s, %s; Ctrl-C to stop)\n", from, how)
			if err != nil {
				fmt.Fprintf(&b, "%v; trying the other agents\n", err)
			}
		}
		if term {
			io.WriteString(w, "\033[H\033[2J")
		} else {
			io.WriteString(w, "\n")
		}
		io.WriteString(w, b.String())
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// liveView is the view a watcher keeps: the status as the stream (or a poll) left
// it, where it came from, and the last error.
type liveView struct {
	mu   sync.Mutex
	st   api.Status
	from string
	how  string
	err  error
}

func (v *liveView) get() (api.Status, string, string, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	st := v.st
	st.Members, st.Shards, st.Events = slices.Clone(st.Members), slices.Clone(st.Shards), slices.Clone(st.Events)
	return st, v.from, v.how, v.err
}

// follow keeps v up to date until ctx ends.
func (v *liveView) follow(ctx context.Context, base api.Client, addrs []string, interval time.Duration) {
	for ctx.Err() == nil {
		for _, a := range v.candidates(addrs) {
			cl := base
			cl.Addr = a
			err := cl.Watch(ctx, func(kind string, data []byte) error {
				v.mu.Lock()
				defer v.mu.Unlock()
				v.from, v.how, v.err = a, "live", nil
				return v.st.Apply(kind, data)
			})
			for errors.Is(err, api.ErrNoStream) && ctx.Err() == nil {
				var st api.Status
				st, _, err = fetchStatusAs(ctx, base, []string{a})
				if err == nil {
					v.mu.Lock()
					v.st, v.from, v.how, v.err = st, a, fmt.Sprintf("every %v", interval), nil
					v.mu.Unlock()
					err = api.ErrNoStream
					sleepCtx(ctx, interval)
				}
			}
			if ctx.Err() != nil {
				return
			}
			v.mu.Lock()
			v.err = err
			v.mu.Unlock()
		}
		sleepCtx(ctx, interval) // every agent failed: try them all again
	}
}

// candidates are addrs, then the members of the last view called as addrs[0] is
// (a cluster's agents serve HTTPS all or none).
func (v *liveView) candidates(addrs []string) []string {
	out := slices.Clone(addrs)
	scheme := ""
	if len(addrs) > 0 {
		if i := strings.Index(addrs[0], "://"); i >= 0 {
			scheme = addrs[0][:i+len("://")]
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, m := range v.st.Members {
		if a := scheme + m.HTTP; m.HTTP != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// sleepCtx waits d, or until ctx ends; it reports whether it waited d.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
