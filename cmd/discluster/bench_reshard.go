package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/discluster/discluster/internal/proccluster"
	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
	"github.com/discluster/discluster/shard"
	"github.com/discluster/discluster/shard/gatewaytest"
)

// The reshard scenario's traffic: the fake's guilds, per shard of the new count, each
// sending guild events at reshardGuildRate per second to its shard in every open
// generation (as Discord does during a reshard). Only guild events flow, so that
// every event can be followed by its id through both generations.
const (
	reshardGuildsPerShard = 2
	reshardGuildRate      = 0.5
)

// reshardBench configures bc for the reshard scenario: guild events instead of the
// per-session ones, and sinks that keep the payloads (the message ids).
func reshardBench(bc *benchCluster) {
	bc.rate = "0"
	bc.fakeArgs = []string{"--guilds", strconv.Itoa(reshardGuildsPerShard * 2 * bc.shards),
		"--guild-event-rate", strconv.FormatFloat(reshardGuildRate, 'g', -1, 64)}
	bc.agentArgs = []string{"--sink-payload"}
}

// reshardRun is what one reshard measured.
type reshardRun struct {
	from, to int
	// switched: from the request to the switch, as the leader's reshard_switched
	// event says; gone: to the last session of the old generation closed, as the
	// fake saw it; floor: ⌈to / max_concurrency⌉ identify windows, and margin the
	// slack the identify gate keeps between rounds (shard.ArrivalMargin).
	switched, gone, floor, margin time.Duration
	maxConc                       int
	window                        time.Duration
	// The held events the new generation released at the switch: delivered then
	// (the events the switch delayed) and dropped as delivered by the old one, and
	// the longest one of those delivered was held, over every agent's /metrics;
	// released: from the request to every new shard done releasing (a guild whose
	// cut event its new shard never received waits for it until the cut-over's
	// deadline), or holding, the shards not done after a minute.
	delivered, dropped int
	longest, released  time.Duration
	holding            int
	// Guild events the fake generated; lost: in no sink; twice: in more than one
	// place (or twice in one); doubled: (generation, shard)s the fake ever saw with
	// two live connections.
	events, lost, twice, doubled int
	violations, unverified       int
}

// benchReshard reshards a cluster of S shards per node to twice as many, runs times,
// each on a fresh cluster (its counters and sinks start empty), and reports the
// medians.
func benchReshard(ctx context.Context, bc *benchCluster, runs int) ([][]string, error) {
	base := bc.dir
	var rs []reshardRun
	for i := range runs {
		if i > 0 {
			st, err := bc.status(ctx)
			if err != nil {
				return nil, err
			}
			// A port found free can be taken before the agent binds it (another
			// process on the machine): start again on new ones.
			for attempt := 1; ; attempt++ {
				bc.stop()
				bc.dir = filepath.Join(base, fmt.Sprintf("run%d-%d", i+1, attempt))
				if err := os.Mkdir(bc.dir, 0o755); err != nil {
					return nil, err
				}
				bc.fake, bc.agents, bc.events = nil, nil, nil
				_, err = bc.start(ctx, st.Config.MaxConcurrency, st.Config.IdentifyWindow, "2m")
				if err == nil || attempt == 3 || ctx.Err() != nil {
					break
				}
				fmt.Fprintf(os.Stderr, "bench: run %d: starting again: %v\n", i+1, err)
			}
			if err != nil {
				return nil, fmt.Errorf("run %d: %w", i+1, err)
			}
		}
		r, err := bc.reshard(ctx)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", i+1, err)
		}
		rs = append(rs, r)
	}
	return [][]string{reshardRow(rs)}, nil
}

// reshard runs one reshard to twice the shards and measures it.
func (bc *benchCluster) reshard(ctx context.Context) (reshardRun, error) {
	st, err := bc.status(ctx)
	if err != nil {
		return reshardRun{}, err
	}
	if st.Config == nil {
		return reshardRun{}, errors.New("no configuration in the status")
	}
	r := reshardRun{from: bc.shards, to: 2 * bc.shards}
	r.maxConc, r.window = max(st.Config.MaxConcurrency, 1), st.Config.IdentifyWindow
	rounds := (r.to + r.maxConc - 1) / r.maxConc
	r.floor = time.Duration(rounds) * r.window
	r.margin = time.Duration(rounds-1) * shard.ArrivalMargin(r.window)

	// Through a follower, as an operator's `discluster reshard` may be. The leader
	// refuses while it has not read the session budget yet: ask again.
	via, err := bc.victim(ctx)
	if err != nil {
		return r, err
	}
	cl := api.NewClient(via.http)
	var t0 time.Time
	var started api.Reshard
	for deadline := time.Now().Add(30 * time.Second); ; {
		t0 = time.Now()
		started, err = cl.Reshard(ctx, api.ReshardRequest{Shards: r.to})
		var e *api.Error
		notYet := errors.As(err, &e) && e.Code == api.CodeRefused && strings.Contains(e.Msg, "not known")
		if !notYet || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err != nil {
		return r, fmt.Errorf("reshard to %d: %w", r.to, err)
	}

	// Until the switch and the old generation's last session closed at the fake.
	var switchSeen, gone time.Time
	every := min(20*time.Millisecond+time.Duration(r.to)*50*time.Microsecond, 500*time.Millisecond)
	err = proccluster.Poll(ctx, 10*time.Minute, every, func() error {
		if switchSeen.IsZero() {
			st, err := bc.status(ctx)
			if err != nil {
				return err
			}
			if st.Config == nil || st.Config.TotalShards != r.to {
				return fmt.Errorf("not switched yet (%v)", st.Reshard)
			}
			switchSeen = time.Now()
		}
		fs := bc.fakeStats()
		if n := fs.Generations[r.from].OpenSessions; n > 0 {
			return fmt.Errorf("%d sessions of the old generation open", n)
		}
		if g := fs.Generations[r.to]; g.Live != r.to {
			return fmt.Errorf("%d of the new generation's %d shards live", g.Live, r.to)
		}
		gone = time.Now()
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("reshard %d → %d: %w", r.from, r.to, err)
	}
	r.gone = gone.Sub(t0)
	r.switched = switchSeen.Sub(t0) // the status's view, unless the event is found
	if _, err := bc.status(ctx); err == nil {
		for _, e := range bc.events {
			if e.Kind == event.ReshardSwitched && e.Gen == started.Generation {
				r.switched = e.Duration
			}
		}
	}

	// Until every new shard released what it held, with events flowing: the events of
	// a guild that waits for its cut event are held until then, and delayed as long.
	released := 0
	err = proccluster.Poll(ctx, time.Minute, 250*time.Millisecond, func() error {
		released = 0
		for _, a := range bc.agents {
			m, err := scrape(ctx, a.http, "discluster_reshard_released_shards_total")
			if err != nil {
				return fmt.Errorf("%s: %w", a.name, err)
			}
			released += int(m["discluster_reshard_released_shards_total"])
		}
		if released < r.to {
			return fmt.Errorf("%d of %d new shards done releasing", released, r.to)
		}
		return nil
	})
	r.released, r.holding = time.Since(t0), r.to-released
	if err != nil && ctx.Err() != nil {
		return r, err
	}

	// Stop the guild events, let those in flight arrive, and compare the union of the
	// sinks with everything the fake generated.
	if err := bc.fakePost(ctx, "/fake/guild-events?rate=0"); err != nil {
		return r, err
	}
	evs, err := bc.guildEvents(ctx)
	if err != nil {
		return r, err
	}
	proccluster.Poll(ctx, 30*time.Second, 250*time.Millisecond, func() error {
		seen := bc.sinkGuildMessages()
		r.events, r.lost, r.twice = 0, 0, 0
		for _, ev := range evs {
			if len(ev.Generations) == 0 {
				continue // no open session held its guild: it reached no one
			}
			r.events++
			switch n := seen[ev.ID]; {
			case n == 0:
				r.lost++
			case n > 1:
				r.twice++
			}
		}
		if r.lost > 0 {
			return fmt.Errorf("%d guild events not in the sinks yet", r.lost)
		}
		return nil
	})
	fs := bc.fakeStats()
	r.violations, r.unverified = fs.IdentifyViolations, fs.IdentifyUnverified
	for _, g := range fs.Generations {
		for _, s := range g.Shards {
			if s.MaxLive > 1 {
				r.doubled++
			}
		}
	}
	for _, a := range bc.agents {
		m, err := scrape(ctx, a.http, "discluster_reshard_released_events_total", "discluster_reshard_held_longest_seconds")
		if err != nil {
			return r, fmt.Errorf("%s: %w", a.name, err)
		}
		r.delivered += int(m[`discluster_reshard_released_events_total{outcome="delivered"}`])
		r.dropped += int(m[`discluster_reshard_released_events_total{outcome="dropped"}`])
		r.longest = max(r.longest, time.Duration(m["discluster_reshard_held_longest_seconds"]*float64(time.Second)))
	}
	return r, nil
}

func reshardRow(rs []reshardRun) []string {
	pick := func(f func(reshardRun) time.Duration) time.Duration {
		ds := make([]time.Duration, len(rs))
		for i, r := range rs {
			ds[i] = f(r)
		}
		return median(ds)
	}
	ratio := func(f func(reshardRun) time.Duration, margin bool) float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			floor := r.floor
			if margin {
				floor += r.margin
			}
			xs[i] = float64(f(r)) / float64(floor)
		}
		slices.Sort(xs)
		return xs[len(xs)/2]
	}
	switchedAt := func(r reshardRun) time.Duration { return r.switched }
	goneAt := func(r reshardRun) time.Duration { return r.gone }
	count := func(f func(reshardRun) int) int {
		return int(pick(func(r reshardRun) time.Duration { return time.Duration(f(r)) }))
	}
	var lost, twice, called, unverified, doubled, events int
	for _, r := range rs {
		lost, twice, called, doubled, events = lost+r.lost, twice+r.twice, called+r.violations, doubled+r.doubled, events+r.events
		unverified += r.unverified
	}
	first := rs[0]
	switched := pick(switchedAt).Round(time.Millisecond)
	split := fmt.Sprintf("switch %v = %.2f × floor ceil(%d/%d)·%v = %v (%.3f × with the %v safety margin per round); old generation gone %v (%.2f ×); "+
		"held events at the switch: %d delivered then, longest held %v, %d dropped as the old generation's, the last given back %v after the request; "+
		"%d guild events over %d runs (%d guilds at %g/s)",
		switched, ratio(switchedAt, false), first.to, first.maxConc, first.window, first.floor, ratio(switchedAt, true), shard.ArrivalMargin(first.window),
		pick(goneAt).Round(time.Millisecond), ratio(goneAt, false),
		count(func(r reshardRun) int { return r.delivered }), pick(func(r reshardRun) time.Duration { return r.longest }).Round(time.Millisecond),
		count(func(r reshardRun) int { return r.dropped }), pick(func(r reshardRun) time.Duration { return r.released }).Round(100*time.Millisecond),
		events, len(rs), reshardGuildsPerShard*first.to, reshardGuildRate)
	if holding := count(func(r reshardRun) int { return r.holding }); holding > 0 {
		split += fmt.Sprintf("; %d new shards still holding a minute after the switch", holding)
	}
	if doubled > 0 {
		split += fmt.Sprintf("; %d (generation, shard)s with two live connections", doubled)
	}
	return []string{fmt.Sprintf("reshard %d → %d shards: request to switch", first.from, first.to), switched.String(), split,
		violations(gatewaytest.Stats{IdentifyViolations: called, IdentifyUnverified: unverified}), strconv.Itoa(lost), strconv.Itoa(twice)}
}

// fakePost posts nothing to the fake's path.
func (bc *benchCluster) fakePost(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+bc.fakeAddr+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fake: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("fake: POST %s: HTTP %d", path, resp.StatusCode)
	}
	return nil
}

// guildEvents lists every guild event the fake generated (and still keeps).
func (bc *benchCluster) guildEvents(ctx context.Context) ([]gatewaytest.GuildEvent, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+bc.fakeAddr+"/fake/guild-events?from=0", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fake: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		Events []gatewaytest.GuildEvent `json:"events"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("fake: guild events: %w", err)
	}
	return body.Events, nil
}

// sinkGuildMessages counts, by message id, the guild MESSAGE_CREATEs in every agent's
// sink file (written with --sink-payload).
func (bc *benchCluster) sinkGuildMessages() map[uint64]int {
	seen := map[uint64]int{}
	for _, a := range bc.agents {
		countGuildMessages(a.events, seen) // an agent that never wrote one has no file
	}
	return seen
}

// countGuildMessages adds the guild MESSAGE_CREATEs of one sink file (written with
// --sink-payload) to seen, by message id. Lines that are another type, or cut short
// (a SIGKILL mid-write), are skipped.
func countGuildMessages(path string, seen map[uint64]int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		var l struct {
			T string `json:"t"`
			D struct {
				ID      string `json:"id"`
				GuildID string `json:"guild_id"`
			} `json:"d"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.T != "MESSAGE_CREATE" || l.D.GuildID == "" {
			continue
		}
		if id, err := strconv.ParseUint(l.D.ID, 10, 64); err == nil {
			seen[id]++
		}
	}
	return sc.Err()
}

// scrape reads the named series from an agent's /metrics (Prometheus's text
// format), by their name with labels as written there.
func scrape(ctx context.Context, addr string, names ...string) (map[string]float64, error) {
	body, err := api.NewClient(addr).Do(ctx, http.MethodGet, "/metrics")
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(body), "\n") {
		series, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		name, _, _ := strings.Cut(series, "{")
		for _, n := range names {
			if name == n {
				if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
					out[series] = v
				}
			}
		}
	}
	return out, nil
}
