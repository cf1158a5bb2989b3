package bench

import (
	"os"
	"os/exec"
	"testing"
)

// BenchmarkPeers runs ./peers: the same pre-rendered stream read by discluster's
// shard client and by discordgo, disgo and arikawa, each in its own process, 100,000
// MESSAGE_CREATEs a run, medians of 3 runs, printed as CPU-s per million events and
// as ratios. About 2 minutes on a 2-core machine, plus the peers' first download.
func BenchmarkPeers(b *testing.B) {
	for range b.N {
		cmd := exec.Command("go", "run", ".", "-n", "100000", "-runs", "3")
		cmd.Dir = "peers"
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			b.Fatalf("bench/peers: %v", err)
		}
	}
}
