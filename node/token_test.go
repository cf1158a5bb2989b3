package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/shard"
	"github.com/discluster/discluster/shard/gatewaytest"
)

// A node whose bot token Discord rejects (401 on GET /gateway/bot, or close 4004 at
// the gateway) holds no shards, says so in status and /healthz, asks Discord with a
// capped backoff rather than once per shard per second, never costs the other nodes
// their shards, and takes shards again by itself once the token is accepted.
func TestRejectedTokenHoldsNoShardsAndRecovers(t *testing.T) {
	for _, how := range []string{"401", "4004"} {
		t.Run(how, func(t *testing.T) {
			c := newTestCluster(t, 8, gatewaytest.Options{})
			nodes := c.startN(2)
			c.waitLeader(20*time.Second, nodes...)
			c.readyAndBalanced(30*time.Second, nodes[0], nodes...)
			cfg := c.config("node3", 2)
			cfg.Token = shard.Token("rejected-" + testToken)
			if how == "4004" {
				cfg.GatewayURL = c.fake.GatewayURL() // no GET /gateway/bot first: the gateway itself refuses
			}
			bad := c.start(cfg, nodes[0])
			before := c.fake.Stats()
			waitFor(t, 20*time.Second, "node3 reported unfit, in status and /healthz", func() error {
				st := nodes[0].Status(context.Background())
				var problem string
				for _, m := range st.Members {
					if m.ID == "node3" {
						problem = m.Problem
					}
				}
				if !strings.Contains(problem, "rejected the bot token") {
					return fmt.Errorf("node3's problem %q", problem)
				}
				if h := healthOf(t, bad); h.Healthy || !strings.Contains(h.Problem, "token") {
					return fmt.Errorf("node3's health %+v", h)
				}
				return nil
			})
			// It holds nothing, and the others keep every shard ready.
			waitFor(t, 20*time.Second, "node3 holding no shard", func() error {
				if k := len(nodes[0].fsm.ShardsOf("node3")); k > 0 {
					return fmt.Errorf("node3 holds %d shards", k)
				}
				return nil
			})
			c.readyAndBalanced(30*time.Second, nodes[0], nodes...)
			// One ask of Discord per node, backed off: over a few seconds a handful,
			// not one per shard per second.
			window := time.Now()
			start := c.fake.Stats()
			deadline := window.Add(4 * time.Second)
			for time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			asked := c.fake.Stats().GatewayBotRequests - start.GatewayBotRequests
			if asked > 6 {
				t.Errorf("%d GET /gateway/bot in %v while the token was rejected", asked, time.Since(window).Round(time.Second))
			}
			if st := c.fake.Stats(); st.IdentifyViolations != before.IdentifyViolations {
				t.Errorf("identify violations: %d", st.IdentifyViolations-before.IdentifyViolations)
			}
			// Discord accepts the token now: the node takes its share without a restart.
			c.fake.AcceptTokens(testToken, string(cfg.Token))
			c.readyAndBalanced(40*time.Second, nodes[0], append(nodes, bad)...)
			if h := healthOf(t, bad); !h.Healthy {
				t.Errorf("node3 healthy again? %+v", h)
			}
		})
	}
}

func healthOf(t *testing.T, n *testNode) api.Health {
	t.Helper()
	resp, err := http.Get("http://" + n.HTTPAddr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h api.Health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	if (resp.StatusCode == http.StatusOK) != h.Healthy {
		t.Errorf("/healthz answered %d with healthy %v", resp.StatusCode, h.Healthy)
	}
	return h
}
