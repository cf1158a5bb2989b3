// Package testlock lets the tests that start whole clusters (real Raft, gossip and
// leases, with timers of a second or less) run one at a time across packages, while
// every other test runs in parallel: two such clusters side by side on a loaded
// 2-core CI machine starve each other's heartbeats and turn a scheduler stall into
// a failover. It replaces `go test -p 1`, which serialised every package for the
// sake of these few.
//
// Only tests import it; production code never does.
package testlock

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Cluster blocks until no other test on this machine holds the cluster lock, then
// holds it until t ends. The lock is a flock on a file in the temp dir, so it is
// released even when the test process dies.
func Cluster(t testing.TB) {
	t.Helper()
	start := time.Now()
	release, err := lock(filepath.Join(os.TempDir(), "discluster-cluster-tests.lock"))
	if err != nil {
		t.Fatalf("cluster test lock: %v", err)
	}
	if waited := time.Since(start); waited > time.Second {
		t.Logf("waited %v for another package's cluster test", waited.Round(time.Millisecond))
	}
	t.Cleanup(release)
}

func lock(path string) (release func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
