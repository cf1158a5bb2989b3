// Package natstest runs a real nats-server with JetStream for tests: on 127.0.0.1,
// on a port the OS said was free, storing its streams in the test's temporary
// directory only, and stopped when the test ends. Without nats-server on the PATH a
// test skips, unless DISCLUSTER_REQUIRE_NATS is set (as .ci/run sets it, having
// installed it), when it fails: CI never skips.
package natstest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/discluster/discluster/internal/proccluster"
)

// RequireEnv, when set, turns a missing nats-server into a failure.
const RequireEnv = "DISCLUSTER_REQUIRE_NATS"

// debianPath is where Debian's package installs the server.
const debianPath = "/usr/sbin/nats-server"

// Server is one nats-server child.
type Server struct {
	t     testing.TB
	bin   string
	port  int
	args  []string
	child *proccluster.Child
}

// Start starts nats-server with JetStream, its store in a directory of the test's,
// so that Kill and Restart keep the streams. extra are further nats-server
// arguments: --user U --pass P, or --auth TOKEN.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		bin, err = exec.LookPath(debianPath) // sbin may be off a user's PATH
	}
	if err != nil {
		if os.Getenv(RequireEnv) != "" {
			t.Fatalf("nats-server not found, and %s is set: install it (apt-get install nats-server)", RequireEnv)
		}
		t.Skip("nats-server not installed (apt-get install nats-server); .ci/run installs it")
	}
	ports, err := proccluster.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, bin: bin, port: ports[0]}
	s.args = append([]string{"--addr", proccluster.Host, "--port", strconv.Itoa(s.port),
		"--jetstream", "--store_dir", t.TempDir(), "--server_name", "natstest"}, extra...)
	t.Cleanup(func() {
		if s.child != nil {
			if err := s.child.Stop(); err != nil {
				t.Error(err)
			}
		}
	})
	s.Restart()
	return s
}

// Addr is host:port.
func (s *Server) Addr() string { return proccluster.Loopback(s.port) }

// URL is nats://host:port.
func (s *Server) URL() string { return "nats://" + s.Addr() }

// Pause stops the process (SIGSTOP) and waits until it is stopped: connections
// stay open, nothing answers. (A server in the middle of an fsync stops only once
// the fsync returns, which on a busy disk is a while.)
func (s *Server) Pause() {
	s.t.Helper()
	if err := s.child.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatal(err)
	}
	stat := fmt.Sprintf("/proc/%d/stat", s.child.PID())
	err := proccluster.Poll(context.Background(), 10*time.Second, 5*time.Millisecond, func() error {
		b, err := os.ReadFile(stat)
		if err != nil {
			return err
		}
		// pid (comm) state ...: the state follows the last parenthesis.
		if f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:])); len(f) == 0 || f[0] != "T" {
			return fmt.Errorf("state %v", f[:min(len(f), 1)])
		}
		return nil
	})
	if err != nil {
		s.t.Fatalf("nats-server not stopped after SIGSTOP: %v", err)
	}
}

// Continue resumes a paused server (SIGCONT).
func (s *Server) Continue() {
	s.t.Helper()
	if err := s.child.Signal(syscall.SIGCONT); err != nil {
		s.t.Fatal(err)
	}
}

// Kill kills the process (SIGKILL) and waits until it is gone.
func (s *Server) Kill() {
	s.t.Helper()
	if err := s.child.Stop(); err != nil {
		s.t.Fatal(err)
	}
}

// Restart starts the server (again, after Kill) on the same port and store, and
// waits until it greets a client with JetStream enabled.
func (s *Server) Restart() {
	s.t.Helper()
	c, err := proccluster.Start(proccluster.Spec{Name: "nats-server", Path: s.bin, Args: s.args})
	if err != nil {
		s.t.Fatal(err)
	}
	s.child = c
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = proccluster.Poll(ctx, 15*time.Second, 20*time.Millisecond, func() error {
		if !c.Running() {
			return fmt.Errorf("%w: %v", proccluster.ErrExited, c.Err())
		}
		return s.greets()
	})
	if err != nil {
		s.t.Fatalf("nats-server on %s not answering: %v\n%s", s.Addr(), err, c.Tail(2000))
	}
}

// greets reads the INFO line a server sends every client first and wants
// JetStream in it.
func (s *Server) greets() error {
	conn, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "INFO ") || !strings.Contains(line, `"jetstream":true`) {
		return errors.New("greeted with " + strings.TrimSpace(line))
	}
	return nil
}
