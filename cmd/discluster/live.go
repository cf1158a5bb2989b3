package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
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

// watchAs is watch, asking addrs as base would (fetchStatusAs).
func watchAs(ctx context.Context, w io.Writer, base api.Client, addrs []string, interval time.Duration, header func(io.Writer)) error {
	term := isTerminal(w)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		var b strings.Builder
		if header != nil {
			header(&b)
		}
		st, from, err := fetchStatusAs(ctx, base, addrs)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			fmt.Fprintf(&b, "no agent answers (%v); retrying\n", err)
		default:
			renderLive(&b, st, time.Now())
			fmt.Fprintf(&b, "\n(from %s, every %v; Ctrl-C to stop)\n", from, interval)
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
