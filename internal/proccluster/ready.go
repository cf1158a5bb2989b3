package proccluster

import (
	"fmt"
	"slices"

	"github.com/discluster/discluster/node/api"
)

// Ready reports why st is not yet every shard ready, assigned and checkpointed (a
// checkpoint seq in the replicated state), or nil. A status with no shards is
// ready: the caller checks that the configuration is there.
func Ready(st api.Status) error {
	for _, s := range st.Shards {
		if s.State != "ready" || s.Phase != "assigned" || s.Checkpoint == 0 {
			return fmt.Errorf("shard %d on %q: %s/%s, checkpoint %d", s.Shard, s.Node, s.State, s.Phase, s.Checkpoint)
		}
	}
	return nil
}

// Spread reports why st's shards are not spread over as many nodes as names, each
// named node holding within ±1 as many as every other, or nil.
func Spread(st api.Status, names []string) error {
	per := map[string]int{}
	for _, s := range st.Shards {
		per[s.Node]++
	}
	if len(names) == 0 {
		if len(per) != 0 {
			return fmt.Errorf("shards per node %v, on no node named", per)
		}
		return nil
	}
	counts := make([]int, len(names))
	for i, name := range names {
		counts[i] = per[name]
	}
	if len(per) != len(names) || slices.Max(counts)-slices.Min(counts) > 1 {
		return fmt.Errorf("shards per node %v", per)
	}
	return nil
}

// ReadyAndSpread reports why st is not yet every shard ready, assigned and
// checkpointed, spread ±1 over the nodes named: the rule the benchmark and the
// end-to-end tests wait for.
func ReadyAndSpread(st api.Status, names []string) error {
	if err := Ready(st); err != nil {
		return err
	}
	return Spread(st, names)
}
