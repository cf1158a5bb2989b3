package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/shard/gatewaytest"
)

func TestSessionBudgetStopsIdentifiesAtTheReserve(t *testing.T) {
	// 8 shards, 14 session starts left, a reserve of 10: four identify, four wait.
	c := newTestCluster(t, 8, gatewaytest.Options{SessionStartLimit: 14})
	cfg := c.config("solo", 1)
	cfg.SessionReserve = 10
	n := c.start(cfg)
	c.waitLeader(20*time.Second, n)
	waitFor(t, 20*time.Second, "four shards identified and the budget reported low", func() error {
		st := n.Status(context.Background())
		if c.fake.Stats().Identifies != 4 {
			return fmt.Errorf("%d identifies", c.fake.Stats().Identifies)
		}
		if st.Budget == nil || !st.Budget.Known || !st.Budget.Low || st.Budget.Remaining != 10 {
			return fmt.Errorf("budget %+v", st.Budget)
		}
		return nil
	})
	// Nothing more is spent, however long the others wait.
	deadline := time.Now().Add(3 * cfg.IdentifyWindow * 8)
	for time.Now().Before(deadline) {
		if got := c.fake.Stats().Identifies; got != 4 {
			t.Fatalf("%d identifies: the reserve was spent", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := c.fake.Stats(); st.TokenResets != 0 {
		t.Fatalf("token reset %d times", st.TokenResets)
	}
}

func TestHealthzAndStatusJSON(t *testing.T) {
	c := newTestCluster(t, 2, gatewaytest.Options{})
	cfg := c.config("solo", 1)
	cfg.Shards, cfg.MaxConcurrency = 0, 0 // --shards auto: from GET /gateway/bot
	n := c.start(cfg)
	c.waitLeader(20*time.Second, n)
	c.allReady(20*time.Second, n)
	if got := n.fsm.Config().TotalShards; got != 2 {
		t.Fatalf("--shards auto gave %d shards, the fake recommends 2", got)
	}
	resp, err := http.Get("http://" + n.HTTPAddr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz %d with a lease", resp.StatusCode)
	}
	resp, err = http.Get("http://" + n.HTTPAddr() + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st api.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Leader != "solo" || len(st.Members) != 1 || len(st.Shards) != 2 || st.Shards[0].State != "ready" {
		t.Fatalf("status %+v", st)
	}
	for _, s := range st.Shards {
		if s.Node != "solo" || s.Seq < 1 {
			t.Errorf("shard %+v", s)
		}
	}
}
