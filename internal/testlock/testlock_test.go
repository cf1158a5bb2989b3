package testlock

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// A second holder, in another process as another package's test binary would be,
// waits for the first and gets the lock once it is released. (Cluster is this lock
// on the machine's one path.)
func TestClusterLockExcludesOtherProcesses(t *testing.T) {
	if path := os.Getenv("TESTLOCK_CHILD"); path != "" {
		release, err := lock(path)
		if err != nil {
			t.Fatal(err)
		}
		release()
		return
	}
	// A lock of its own: the machine's cluster lock may be held by another package.
	path := filepath.Join(t.TempDir(), "lock")
	release, err := lock(path)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestClusterLockExcludesOtherProcesses$")
	cmd.Env = append(os.Environ(), "TESTLOCK_CHILD="+path)
	if err := cmd.Start(); err != nil {
		release()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		release()
		t.Fatalf("the child got the lock while this test held it (exit: %v)", err)
	case <-time.After(200 * time.Millisecond): // a negative: nothing to wait for but time
	}
	release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("child: %v", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the child did not get the lock within 10s of its release")
	}
}
