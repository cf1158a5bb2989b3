package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/shard/gatewaytest"
)

// scrape reads a node's /metrics as Prometheus would.
func scrape(t *testing.T, n *testNode) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + n.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics on %s: %s", n.Name(), resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s's /metrics does not parse: %v", n.Name(), err)
	}
	return mfs
}

// value is the value of the series of name with the given label pairs (a counter's,
// a gauge's, a histogram's sample count), or -1 when there is none.
func value(mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	mf := mfs[name]
	if mf == nil {
		return -1
	}
series:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
			}
			if !found {
				continue series
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// total is the sum of the series of a counter, over its labels.
func total(mfs map[string]*dto.MetricFamily, name string) float64 {
	sum := 0.0
	for _, m := range mfs[name].GetMetric() {
		sum += m.GetCounter().GetValue()
	}
	return sum
}

// A running cluster's /metrics passes Prometheus's lint and says what the cluster
// does: each node's ready shards, events flowing, one leader, commands sent.
func TestMetricsOfARunningCluster(t *testing.T) {
	const shards = 4
	c := newTestCluster(t, shards, gatewaytest.Options{})
	nodes := c.startN(2)
	leader := c.waitLeader(20*time.Second, nodes...)
	c.readyAndBalanced(30*time.Second, leader, nodes...)

	for _, n := range nodes {
		mfs := scrape(t, n)
		problems, err := testutil.GatherAndLint(prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
			out := make([]*dto.MetricFamily, 0, len(mfs))
			for _, mf := range mfs {
				out = append(out, mf)
			}
			return out, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s: lint: %s: %s", n.Name(), p.Metric, p.Text)
		}
		for _, want := range []string{"go_goroutines", "process_cpu_seconds_total", "discluster_lease_held", "discluster_raft_term"} {
			if mfs[want] == nil {
				t.Errorf("%s: no %s", n.Name(), want)
			}
		}
	}

	// Events and bytes counted at the start, to see them grow on a later scrape.
	grow := []string{"discluster_gateway_events_total", "discluster_events_total",
		"discluster_gateway_wire_bytes_total", "discluster_gateway_payload_bytes_total"}
	first := map[string]map[string]float64{}
	for _, n := range nodes {
		m := scrape(t, n)
		first[n.Name()] = map[string]float64{}
		for _, name := range grow {
			first[n.Name()][name] = total(m, name)
		}
	}
	waitFor(t, 20*time.Second, "each node's ready shards in its metrics, events growing, heartbeats timed", func() error {
		leaders := 0.0
		for _, n := range nodes {
			before := scrape(t, n)
			held := len(n.fsm.ShardsOf(n.Name()))
			if got := value(before, "discluster_shards", "state", "ready"); got != float64(held) {
				return fmt.Errorf("%s: discluster_shards{state=ready} %v, it holds %d", n.Name(), got, held)
			}
			leaders += value(before, "discluster_raft_is_leader")
			if v := value(before, "discluster_lease_held"); v != 1 {
				return fmt.Errorf("%s: lease_held %v", n.Name(), v)
			}
			if v := value(before, "discluster_gateway_heartbeat_latency_seconds"); v < 1 {
				return fmt.Errorf("%s: %v heartbeat round trips timed", n.Name(), v)
			}
			if held == 0 {
				continue
			}
			for _, name := range grow {
				b, a := first[n.Name()][name], total(before, name)
				if a <= b {
					return fmt.Errorf("%s: %s went from %v to %v", n.Name(), name, b, a)
				}
			}
		}
		if leaders != 1 {
			return fmt.Errorf("discluster_raft_is_leader is 1 on %v nodes", leaders)
		}
		return nil
	})

	// A command asked of a node counts there.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	presence := api.Command{Op: 3, D: json.RawMessage(`{"since":null,"activities":[],"status":"online","afk":false}`)}
	if _, err := api.NewClient(nodes[1].HTTPAddr()).Send(ctx, api.Target{Shard: 0}, presence); err != nil {
		t.Fatal(err)
	}
	if _, err := api.NewClient(nodes[1].HTTPAddr()).Send(ctx, api.Target{Shard: shards + 5}, presence); err == nil {
		t.Fatal("a command to a shard the cluster does not run was sent")
	}
	mfs := scrape(t, nodes[1])
	if v := value(mfs, "discluster_commands_sent_total"); v != 1 {
		t.Errorf("commands_sent_total %v, want 1", v)
	}
	if v := value(mfs, "discluster_commands_refused_total", "code", api.CodeUnknownShard); v != 1 {
		t.Errorf("commands_refused_total{code=unknown_shard} %v, want 1", v)
	}
}
