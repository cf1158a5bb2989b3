package node

import (
	"testing"
	"time"

	"github.com/discluster/discluster/shard/gatewaytest"
)

func TestThreeNodesBootstrapAndSpread(t *testing.T) {
	c := newTestCluster(t, 12, gatewaytest.Options{})
	nodes := c.startN(3)
	c.waitLeader(20*time.Second, nodes...)
	per := c.allReady(30*time.Second, nodes[1])
	if err := balanced(per, nodes...); err != nil {
		t.Fatal(err)
	}
	st := c.fake.Stats()
	if st.IdentifyViolations != 0 {
		t.Fatalf("%d identify violations", st.IdentifyViolations)
	}
	if st.Identifies != 12 {
		t.Errorf("%d identifies for 12 shards", st.Identifies)
	}
	c.events.check(t, st, true)
}
