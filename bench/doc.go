// Package bench runs the side-by-side ingest harness of ./peers, a Go module of its
// own, so that the main module never depends on discordgo, disgo or arikawa:
//
//	go test -run '^$' -bench Peers -benchtime 1x ./bench/
//
// It holds no code; BenchmarkPeers builds and runs the harness, which prints its
// table. Being a benchmark, it never runs with the tests.
package bench
