package balancer

import (
	"fmt"
	"testing"
)

func nodeID(i int) string { return fmt.Sprintf("node-%02d", i) }

// benchInput builds members of weight 1 and gives each shard to assign(shard), or
// leaves it unassigned when that is "".
func benchInput(members, shards, maxMoves int, assign func(shard int) string) Input {
	in := Input{TotalShards: shards, MaxMoves: maxMoves}
	for i := range members {
		in.Members = append(in.Members, Member{ID: nodeID(i), Weight: 1})
	}
	for s := range shards {
		if n := assign(s); n != "" {
			in.Assignments = append(in.Assignments, Assignment{Shard: s, Node: n, Epoch: uint64(s + 1)})
		}
	}
	return in
}

// BenchmarkCompute20kShards50Members is one balancer call for 20,000 shards over 50
// members: a fresh cluster (every shard placed); a join (a balanced cluster of 49
// plus one empty member) with the default-sized MaxMoves of 16 and with no effective
// limit (400 moves); and a failover (one of 50 balanced members failed: 400
// evacuations).
func BenchmarkCompute20kShards50Members(b *testing.B) {
	const shards, members = 20000, 50
	failed := benchInput(members, shards, 16, func(s int) string { return nodeID(s % members) })
	failed.Members[7].State = Failed
	cases := []struct {
		name string
		in   Input
	}{
		{"fresh", benchInput(members, shards, 16, func(int) string { return "" })},
		{"join", benchInput(members, shards, 16, func(s int) string { return nodeID(s % (members - 1)) })},
		{"join-unbounded", benchInput(members, shards, shards, func(s int) string { return nodeID(s % (members - 1)) })},
		{"failover", failed},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Compute(c.in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
