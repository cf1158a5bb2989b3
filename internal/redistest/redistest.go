// Package redistest runs a real redis-server for tests: on 127.0.0.1, on a port the
// OS said was free, with nothing saved outside the test's temporary directory, and
// stopped when the test ends. Without redis-server on the PATH a test skips, unless
// DISCLUSTER_REQUIRE_REDIS is set (as .ci/run sets it, having installed it), when it
// fails: CI never skips.
package redistest

import (
	"bufio"
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

// RequireEnv, when set, turns a missing redis-server into a failure.
const RequireEnv = "DISCLUSTER_REQUIRE_REDIS"

// Server is one redis-server child.
type Server struct {
	t     testing.TB
	bin   string
	dir   string
	port  int
	args  []string
	child *proccluster.Child
}

// Start starts redis-server. With appendOnly, every write is fsynced to an
// append-only file in the test's directory, so that Kill and Restart keep the
// streams; without it, nothing is saved.
func Start(t testing.TB, appendOnly bool) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv(RequireEnv) != "" {
			t.Fatalf("redis-server not found, and %s is set: install it (apt-get install redis-server)", RequireEnv)
		}
		t.Skip("redis-server not installed (apt-get install redis-server); .ci/run installs it")
	}
	ports, err := proccluster.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), port: ports[0]}
	s.args = []string{"--port", strconv.Itoa(s.port), "--bind", proccluster.Host, "--dir", s.dir,
		"--save", "", "--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning"}
	if appendOnly {
		s.args = append(s.args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		s.args = append(s.args, "--appendonly", "no")
	}
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

// URL is redis://host:port/0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Pause stops the process (SIGSTOP): connections stay open, nothing answers.
func (s *Server) Pause() {
	s.t.Helper()
	if err := s.child.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatal(err)
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

// Restart starts the server (again, after Kill) on the same port and waits until it
// answers PING.
func (s *Server) Restart() {
	s.t.Helper()
	c, err := proccluster.Start(proccluster.Spec{Name: "redis-server", Path: s.bin, Args: s.args})
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
		return s.ping()
	})
	if err != nil {
		s.t.Fatalf("redis-server on %s not answering: %v\n%s", s.Addr(), err, c.Tail(2000))
	}
}

// ping sends PING in RESP and wants +PONG.
func (s *Server) ping() error {
	conn, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return errors.New("answered " + strings.TrimSpace(line))
	}
	return nil
}
