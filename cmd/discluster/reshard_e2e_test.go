package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/discluster/discluster/shard/gatewaytest"
)

// The reshard test, with real processes: three agents run 16 shards while
// the fake sends every guild's events; `discluster reshard --shards 32` starts the
// new generation beside the old one and switches. Throughout, the fake never sees
// two live connections of one (generation, shard) nor an identify violation, the old
// generation is gone at the end, and the union of the sinks holds every guild event
// the fake sent: exactly once when no process died; at least once (and the
// duplicates counted) when an agent, or the leader, was SIGKILLed mid-reshard.
func TestE2EReshard(t *testing.T) {
	for _, tc := range []struct {
		name string
		kill string // "", "agent" or "leader": SIGKILLed once the new generation is half ready
	}{
		{"clean", ""},
		{"agent killed mid-reshard", "agent"},
		{"leader killed mid-reshard", "leader"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const from, to = 16, 32
			e := newE2EFake(t, from, "--guilds", "64", "--guild-event-rate", "1", "--event-rate", "0")
			// A window of 150 ms: the new generation takes 32 windows to identify,
			// long enough to kill something in the middle of it.
			e.startAgentsWith(3, func(int) []string { return []string{"--sink-payload", "--identify-window", "150ms"} })
			e.allReady(60*time.Second, e.nodes...)
			leader := e.leader(e.nodes...)
			via := e.others(leader)[0]

			started := time.Now()
			out, err := exec.Command(e.bin, "reshard", "--shards", strconv.Itoa(to), "--addr", via.http).CombinedOutput()
			if err != nil {
				t.Fatalf("discluster reshard: %v\n%s", err, out)
			}
			t.Logf("discluster reshard: %s", strings.TrimSpace(string(out)))
			alive := e.nodes
			if tc.kill != "" {
				victim := leader
				if tc.kill == "agent" {
					victim = via
				}
				e.waitFor(30*time.Second, "half of the new generation identified", func() error {
					if g := e.mustStats().Generations[to]; g.Identifies < to/2 {
						return fmt.Errorf("%d of %d identified", g.Identifies, to)
					}
					return nil
				})
				sendSignal(t, victim.Child, syscall.SIGKILL)
				victim.Wait(10 * time.Second)
				alive = e.others(victim)
				t.Logf("SIGKILLed %s (%s) with %d of the new generation identified", victim.name, tc.kill, e.mustStats().Generations[to].Identifies)
			}

			e.waitFor(90*time.Second, "the switch to 32 shards, and the old generation gone", func() error {
				st, err := e.status(alive[0])
				if err != nil {
					return err
				}
				if st.Config == nil || st.Config.TotalShards != to {
					return fmt.Errorf("the cluster runs %v", st.Config)
				}
				fs := e.mustStats()
				if old := fs.Generations[from]; old.OpenSessions != 0 {
					return fmt.Errorf("%d sessions of the old generation open", old.OpenSessions)
				}
				if g := fs.Generations[to]; g.Live != to {
					return fmt.Errorf("%d of the new generation's %d shards live", g.Live, to)
				}
				return nil
			})
			took := time.Since(started)

			// Stop the events, let those in flight arrive, then compare the union of
			// the sinks with everything the fake generated.
			setGuildEventRate(t, e.fakeA, 0)
			evs := guildEvents(t, e.fakeA)
			var missing, twice int
			e.waitFor(30*time.Second, "every guild event in the sinks", func() error {
				seen := e.guildMessages()
				missing, twice = 0, 0
				var first []string
				for _, ev := range evs {
					if len(ev.Generations) == 0 {
						continue // no open session held its guild: it reached no one
					}
					switch n := seen[ev.ID]; {
					case n == 0:
						if missing++; len(first) < 5 {
							first = append(first, fmt.Sprintf("event %d of guild %d at %s (generations %v)", ev.Index, ev.GuildID, ev.At.Format("15:04:05.000"), ev.Generations))
						}
					case n > 1:
						twice++
					}
				}
				if missing > 0 {
					return fmt.Errorf("%d of %d guild events missing: %v", missing, len(evs), first)
				}
				return nil
			})
			fs := e.mustStats()
			if fs.IdentifyViolations != 0 {
				t.Errorf("%d identify violations", fs.IdentifyViolations)
			}
			for total, g := range fs.Generations {
				for id, s := range g.Shards {
					if s.MaxLive > 1 {
						t.Errorf("generation of %d, shard %d: %d live connections at once", total, id, s.MaxLive)
					}
				}
			}
			if tc.kill == "" && twice > 0 {
				t.Errorf("%d guild events delivered more than once, with no process killed", twice)
			}
			floor := time.Duration(to) * 150 * time.Millisecond // ⌈N / max_concurrency⌉ windows, max_concurrency 1
			released, dropped := e.heldReleased()
			t.Logf("reshard %d → %d: %v from the command to the old generation gone (identify floor %v, %.1fx); "+
				"%d guild events, %d delivered twice; at the switch %d held events delivered, %d dropped as the old generation's",
				from, to, took.Round(time.Millisecond), floor, float64(took)/float64(floor), len(evs), twice, released, dropped)
		})
	}
}

// guildMessages counts, by message id, the guild MESSAGE_CREATEs in every agent's
// sink file (written with --sink-payload).
func (e *e2e) guildMessages() map[uint64]int {
	e.t.Helper()
	seen := map[uint64]int{}
	for _, a := range e.nodes {
		if err := countGuildMessages(a.events, seen); err != nil {
			e.t.Fatal(err)
		}
	}
	return seen
}

var releasedLine = regexp.MustCompile(`held events released past the old generation's cut.* delivered=(\d+) dropped=(\d+)`)

// heldReleased sums, over the agents' logs, the held events the new generation
// delivered at the switch and those it dropped as delivered by the old one.
func (e *e2e) heldReleased() (delivered, dropped int) {
	for _, a := range e.nodes {
		for _, m := range releasedLine.FindAllStringSubmatch(a.Output(), -1) {
			d, _ := strconv.Atoi(m[1])
			x, _ := strconv.Atoi(m[2])
			delivered, dropped = delivered+d, dropped+x
		}
	}
	return delivered, dropped
}

func setGuildEventRate(t *testing.T, fake string, rate float64) {
	t.Helper()
	resp, err := http.Post(fmt.Sprintf("http://%s/fake/guild-events?rate=%g", fake, rate), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("setting the guild event rate: HTTP %d", resp.StatusCode)
	}
}

// guildEvents lists every guild event the fake generated.
func guildEvents(t *testing.T, fake string) []gatewaytest.GuildEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+fake+"/fake/guild-events?from=0", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Events []gatewaytest.GuildEvent `json:"events"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Events
}
