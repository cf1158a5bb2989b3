package balancer_test

import (
	"fmt"

	"github.com/discluster/discluster/balancer"
)

// A third member joins two that hold six shards each. MaxMoves bounds the handoffs a
// plan starts, so the join takes two calls.
func ExampleCompute() {
	in := balancer.Input{
		TotalShards: 12,
		Members:     []balancer.Member{{ID: "a", Weight: 1}, {ID: "b", Weight: 1}, {ID: "c", Weight: 1}},
		MaxMoves:    2,
	}
	for s := range 12 {
		in.Assignments = append(in.Assignments, balancer.Assignment{Shard: s, Node: []string{"a", "b"}[s/6], Epoch: 7})
	}
	plan, err := balancer.Compute(in)
	if err != nil {
		panic(err)
	}
	for _, m := range plan.Moves {
		fmt.Printf("%s shard %d: %s -> %s\n", m.Reason, m.Shard, m.From, m.To)
	}
	fmt.Println(plan.Reason)
	// Output:
	// rebalance shard 11: b -> c
	// rebalance shard 5: a -> c
	// MaxMoves 2 reached (0 revoking, 2 planned): 2 more rebalance moves to go
}
