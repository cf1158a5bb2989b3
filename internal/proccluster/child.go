package proccluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/discluster/discluster/node/api"
)

// Spec is a child to start.
type Spec struct {
	// Name names the child in errors and logs.
	Name string
	// Path is the binary: the discluster binary, for an agent or the fake.
	Path string
	// Args are its arguments, the subcommand first. Those of "agent" must give
	// --api-base, --gossip-addr, --cluster-addr and --http-addr, and those of
	// "fake-discord" --addr, all on 127.0.0.1; any --join, --gateway-url and
	// --advertise must be on 127.0.0.1 too.
	Args []string
	// Env is added to this process's environment (less the variables that could
	// point an agent elsewhere than loopback: DISCLUSTER_API_BASE,
	// DISCLUSTER_GATEWAY_URL, DISCLUSTER_ADVERTISE).
	Env []string
	// LogFile, when set, is created (truncated) and gets the child's output.
	LogFile string
	// Output, when LogFile is empty, gets the child's output too; the child keeps
	// its last outputTail bytes for Output and errors. When both are empty the
	// child keeps all its output in memory.
	Output io.Writer
}

// outputTail is how much output a child with a Spec.Output keeps.
const outputTail = 64 << 10

// tryLimit bounds one try of a wait for an answer: a stopped child accepts
// connections and never answers.
const tryLimit = 10 * time.Second

// stopWait bounds the wait for a child that was sent SIGKILL.
const stopWait = 10 * time.Second

// ErrExited is in the error of a wait that ended because the child exited.
var ErrExited = errors.New("exited")

// Child is a process started by Start. Its standard input is a pipe only this
// process holds: it closes when this process dies, however it dies, which
// `agent --exit-with-parent` watches for; on Linux the kernel also kills the child
// then, and the child is in its own process group, so that Ctrl-C in a terminal
// reaches only the parent.
type Child struct {
	spec  Spec
	cmd   *exec.Cmd
	stdin io.Closer
	out   *capture // nil with a LogFile
	done  chan struct{}
	err   error // the exit status, once done is closed
}

// Start starts spec's binary with its arguments.
func Start(spec Spec) (*Child, error) {
	if spec.Name == "" {
		spec.Name = spec.Path
	}
	if err := checkArgs(spec.Args); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	env, err := childEnv(spec.Env)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	c := &Child{spec: spec, done: make(chan struct{})}
	c.cmd = exec.Command(spec.Path, spec.Args...)
	c.cmd.Env = env
	c.cmd.SysProcAttr = SysProcAttr()
	var f *os.File
	switch {
	case spec.LogFile != "":
		if f, err = os.Create(spec.LogFile); err != nil {
			return nil, fmt.Errorf("start %s: %w", spec.Name, err)
		}
		c.cmd.Stdout, c.cmd.Stderr = f, f
	case spec.Output != nil:
		c.out = &capture{limit: outputTail, w: spec.Output}
		c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	default:
		c.out = &capture{}
		c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	}
	closeLog := func() {
		if f != nil {
			f.Close()
		}
	}
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		closeLog()
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	if err := c.cmd.Start(); err != nil {
		closeLog()
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		closeLog()
		close(c.done)
	}()
	return c, nil
}

// Name is Spec.Name.
func (c *Child) Name() string { return c.spec.Name }

// Args are the arguments it was started with.
func (c *Child) Args() []string { return slices.Clone(c.spec.Args) }

// LogFile is Spec.LogFile: where its output is, or "".
func (c *Child) LogFile() string { return c.spec.LogFile }

// PID is its process ID.
func (c *Child) PID() int { return c.cmd.Process.Pid }

// Done is closed once it has exited and its output is written.
func (c *Child) Done() <-chan struct{} { return c.done }

// Running reports whether it has not exited yet.
func (c *Child) Running() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// Err is how it exited (nil for exit status 0, an *exec.ExitError otherwise); nil
// while it runs.
func (c *Child) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Wait waits at most d for it to exit and reports whether it did; Err tells how.
func (c *Child) Wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.done:
		return true
	case <-t.C:
		return false
	}
}

// Signal sends it sig: syscall.SIGSTOP, SIGCONT, SIGTERM, SIGKILL…
func (c *Child) Signal(sig os.Signal) error {
	if err := c.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s (pid %d): %w", c.spec.Name, c.PID(), err)
	}
	return nil
}

// Stop kills it (continuing it first, should it be stopped) and waits for it to be
// gone; a child that already exited is left as it is. It fails only if the child
// still runs a while after SIGKILL.
func (c *Child) Stop() error {
	if !c.Running() {
		return nil
	}
	c.cmd.Process.Signal(syscall.SIGCONT)
	c.cmd.Process.Kill()
	if !c.Wait(stopWait) {
		return fmt.Errorf("%s (pid %d) still runs %v after SIGKILL", c.spec.Name, c.PID(), stopWait)
	}
	return nil
}

// Output is what it has written so far: everything, read back from its LogFile or
// kept in memory, or the last 64 KiB when it writes to a Spec.Output.
func (c *Child) Output() string {
	if c.out != nil {
		return c.out.String()
	}
	b, _ := os.ReadFile(c.spec.LogFile)
	return string(b)
}

// Tail is the last n bytes of its output.
func (c *Child) Tail(n int) string {
	if c.out != nil {
		return tail(c.out.String(), n)
	}
	f, err := os.Open(c.spec.LogFile)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(0, fi.Size()-int64(n))
	b := make([]byte, fi.Size()-off)
	k, _ := f.ReadAt(b, off)
	return string(b[:k])
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// WaitHTTP waits at most d for url, served by this child, to answer a GET with any
// status. It stops as soon as the child exits, with an error that wraps ErrExited
// and ends with the tail of the child's output.
func (c *Child) WaitHTTP(ctx context.Context, url string, d time.Duration) error {
	return c.waitAnswer(ctx, url, d, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
}

// WaitAPI waits at most d for the agent API at addr (its --http-addr), served by
// this child, to answer GET /v1/status, and returns that first status. It stops as
// soon as the child exits, as WaitHTTP does.
func (c *Child) WaitAPI(ctx context.Context, addr string, d time.Duration) (api.Status, error) {
	var st api.Status
	err := c.waitAnswer(ctx, "the API at "+addr, d, func(ctx context.Context) error {
		var err error
		st, err = api.NewClient(addr).Status(ctx)
		return err
	})
	return st, err
}

// waitAnswer tries try until it succeeds, for at most d, each try bounded by what
// is left; it stops when the child exits or ctx ends.
func (c *Child) waitAnswer(ctx context.Context, what string, d time.Duration, try func(context.Context) error) error {
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		tctx, cancel := context.WithTimeout(ctx, min(max(left, pollEvery), tryLimit))
		go func() {
			// A try the child cannot answer any more ends with the child.
			select {
			case <-c.done:
				cancel()
			case <-tctx.Done():
			}
		}()
		err := try(tctx)
		cancel()
		if err == nil {
			return nil
		}
		if !c.Running() {
			return c.exitedBefore(what)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if left = time.Until(deadline); left <= 0 {
			return fmt.Errorf("%s: %s did not answer within %v: %w", c.spec.Name, what, d, err)
		}
		t := time.NewTimer(min(pollEvery, left))
		select {
		case <-c.done:
			t.Stop()
			return c.exitedBefore(what)
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (c *Child) exitedBefore(what string) error {
	how := "exit status 0"
	if c.err != nil {
		how = c.err.Error()
	}
	return fmt.Errorf("%s %w (%s) before %s answered; its output ends:\n%s", c.spec.Name, ErrExited, how, what, c.Tail(2000))
}

// capture keeps a child's output, all of it or its last limit bytes, and copies it
// to w when set.
type capture struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	limit int
	w     io.Writer
}

func (c *capture) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.w != nil {
		c.w.Write(b) // a failing writer must not stop the child's output
	}
	c.buf.Write(b)
	if c.limit > 0 && c.buf.Len() > 2*c.limit {
		kept := slices.Clone(c.buf.Bytes()[c.buf.Len()-c.limit:])
		c.buf.Reset()
		c.buf.Write(kept)
	}
	return len(b), nil
}

func (c *capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.buf.String()
	if c.limit > 0 {
		s = tail(s, c.limit)
	}
	return s
}

// Group is children stopped together. The zero Group is ready to use.
type Group struct {
	mu       sync.Mutex
	children []*Child
}

// Start starts a child of the group.
func (g *Group) Start(spec Spec) (*Child, error) {
	c, err := Start(spec)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.children = append(g.children, c)
	g.mu.Unlock()
	return c, nil
}

// Children are every child the group started, in order, exited ones too.
func (g *Group) Children() []*Child {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.children)
}

// Stop stops every child of the group.
func (g *Group) Stop() error {
	var errs []error
	for _, c := range g.Children() {
		errs = append(errs, c.Stop())
	}
	return errors.Join(errs...)
}

// The flags, per subcommand, that name an address a child binds or calls: those
// that must be given, and those that may be.
var (
	requiredLoopback = map[string][]string{
		"agent":        {"api-base", "gossip-addr", "cluster-addr", "http-addr"},
		"fake-discord": {"addr"},
	}
	optionalLoopback = map[string][]string{
		"agent": {"join", "gateway-url", "advertise"},
	}
	// envLoopback are variables the agent reads for flags not given.
	envLoopback = []string{"DISCLUSTER_API_BASE", "DISCLUSTER_GATEWAY_URL", "DISCLUSTER_ADVERTISE"}
)

// checkArgs refuses the arguments of an agent or a fake that would reach, or bind,
// anything but loopback.
func checkArgs(args []string) error {
	if len(args) == 0 {
		return nil
	}
	sub := args[0]
	given := map[string][]string{}
	for i := 1; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, val, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !slices.Contains(requiredLoopback[sub], name) && !slices.Contains(optionalLoopback[sub], name) {
			continue // not an address: --name=n1, --http-insecure-loopback=false
		}
		if !ok {
			if i+1 >= len(args) {
				return fmt.Errorf("--%s without a value", name)
			}
			i++
			val = args[i]
		}
		given[name] = append(given[name], val)
	}
	for _, name := range requiredLoopback[sub] {
		if len(given[name]) == 0 {
			return fmt.Errorf("%s without --%s: give it one on %s", sub, name, Host)
		}
	}
	for name, vals := range given {
		for _, v := range vals {
			if !onLoopback(v) {
				return fmt.Errorf("%s --%s %q: only %s", sub, name, v, Host)
			}
		}
	}
	return nil
}

// onLoopback reports whether v, a URL, host:port or host, names 127.0.0.1.
func onLoopback(v string) bool {
	if strings.Contains(v, "://") {
		u, err := url.Parse(v)
		return err == nil && u.Hostname() == Host
	}
	if h, _, err := net.SplitHostPort(v); err == nil {
		return h == Host
	}
	return v == Host
}

// childEnv is this process's environment less envLoopback, plus extra.
func childEnv(extra []string) ([]string, error) {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return slices.Contains(envLoopback, k)
	})
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		if slices.Contains(envLoopback, k) && !onLoopback(v) {
			return nil, fmt.Errorf("%s=%q: only %s", k, v, Host)
		}
	}
	return append(env, extra...), nil
}
