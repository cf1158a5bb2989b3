package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/discluster/discluster/internal/proccluster"
	"github.com/discluster/discluster/internal/testlock"
)

// A README command block, with how the test runs it: the comment
// `<!-- readme-test: KIND [expect="..."]... -->` right above it.
//
//   - ci: the test command; it must be the one .ci/run runs.
//   - serve: one command that runs until interrupted (the demo, the fake): it must
//     print every expect, then exit 0 on Ctrl-C.
//   - script: the whole block in bash, which must exit 0 and print every expect;
//     what it starts in the background is killed afterwards.
//   - check: every command runs with --check (flags and configuration checked,
//     nothing started); a go test command has its tests, benchmarks and flags looked up.
//   - gotest: go test commands, looked up the same way (they take minutes to run).
//
// Commands are run with this package's binary as ./discluster (and a script's
// `go build -o NAME ./examples/DIR` copies that example, built by the test), in a
// fresh directory that stands for /tmp/dc and /etc/discluster, with every loopback
// port moved to one the OS says is free.
type readmeBlock struct {
	line   int
	kind   string
	expect []string
	text   string
}

var readmeComment = regexp.MustCompile(`^<!-- readme-test: (\w+)((?: expect="[^"]*")*) -->$`)

func readmeBlocks(t *testing.T) []readmeBlock {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []readmeBlock
	var pending *readmeBlock
	var cur *readmeBlock
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur != nil && line == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		case line == "```sh":
			if pending == nil {
				t.Errorf("README.md:%d: a sh block without a readme-test comment above it: say how the test runs it", n)
				pending = &readmeBlock{kind: "none"}
			}
			cur, pending = pending, nil
			cur.line = n
		case readmeComment.MatchString(line):
			m := readmeComment.FindStringSubmatch(line)
			pending = &readmeBlock{kind: m[1]}
			for _, e := range regexp.MustCompile(`expect="([^"]*)"`).FindAllStringSubmatch(m[2], -1) {
				pending.expect = append(pending.expect, e[1])
			}
		case strings.HasPrefix(line, "<!-- readme-test"):
			t.Errorf("README.md:%d: malformed readme-test comment: %s", n, line)
		case strings.TrimSpace(line) != "" && pending != nil:
			t.Errorf("README.md:%d: text between a readme-test comment and its block", n)
			pending = nil
		}
	}
	return blocks
}

// commands are the block's commands: comments dropped, continuation lines joined.
func commands(text string) []string {
	var out []string
	var cur string
	for _, l := range strings.Split(text, "\n") {
		if i := strings.Index(l, "  #"); i >= 0 {
			l = l[:i]
		}
		if strings.HasPrefix(strings.TrimSpace(l), "#") || strings.TrimSpace(l) == "" {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\")
			continue
		}
		out = append(out, strings.Join(strings.Fields(cur+l), " "))
		cur = ""
	}
	return out
}

// portRemap moves the block's loopback ports to free ones: "127.0.0.1:NNNNN", and
// the "1794$i" form of a loop, whose base then serves for 17941-17943 alike.
type portRemap struct{ pairs []string }

func newPortRemap(t *testing.T, text string) *portRemap {
	t.Helper()
	r := &portRemap{}
	done := map[string]bool{}
	for _, m := range regexp.MustCompile(`127\.0\.0\.1:(\d{3,4})\$i`).FindAllStringSubmatch(text, -1) {
		if done[m[1]] {
			continue
		}
		done[m[1]] = true
		base := freeBase(t)
		r.pairs = append(r.pairs, "127.0.0.1:"+m[1]+"$i", "127.0.0.1:"+base+"$i")
		for i := 1; i <= 9; i++ {
			r.pairs = append(r.pairs, fmt.Sprintf("127.0.0.1:%s%d", m[1], i), fmt.Sprintf("127.0.0.1:%s%d", base, i))
		}
	}
	for _, m := range regexp.MustCompile(`127\.0\.0\.1:(\d{2,5})\b`).FindAllStringSubmatch(text, -1) {
		if done[m[0]] || r.mapped(m[0]) {
			continue
		}
		done[m[0]] = true
		p, err := proccluster.FreePorts(1)
		if err != nil {
			t.Fatal(err)
		}
		r.pairs = append(r.pairs, m[0], proccluster.Loopback(p[0]))
	}
	return r
}

func (r *portRemap) mapped(addr string) bool {
	for i := 0; i < len(r.pairs); i += 2 {
		if r.pairs[i] == addr {
			return true
		}
	}
	return false
}

func (r *portRemap) apply(s string) string { return strings.NewReplacer(r.pairs...).Replace(s) }

// freeBase is a port prefix B (four digits) such that B1 to B9 are free now.
func freeBase(t *testing.T) string {
	t.Helper()
	for range 200 {
		p, err := proccluster.FreePorts(1)
		if err != nil {
			t.Fatal(err)
		}
		base := p[0] / 10
		if base < 1024 || base > 6552 {
			continue
		}
		ok := true
		for i := 1; i <= 9 && ok; i++ {
			l, err := net.Listen("tcp", proccluster.Loopback(base*10+i))
			if err != nil {
				ok = false
				continue
			}
			l.Close()
		}
		if ok {
			return strconv.Itoa(base)
		}
	}
	t.Fatal("no free run of nine loopback ports")
	return ""
}

// readmeShell runs script in bash in dir, in its own process group, which is
// killed when the test ends.
func readmeShell(t *testing.T, dir, script string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t.Cleanup(func() {
		if cmd.Process != nil {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	})
	return cmd
}

// syncBuf is a buffer the child writes while the test reads.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestREADMECommandBlocks(t *testing.T) {
	blocks := readmeBlocks(t)
	if len(blocks) < 5 {
		t.Fatalf("found %d sh blocks in README.md", len(blocks))
	}
	bin := binary(t)
	ci, err := os.ReadFile(filepath.Join("..", "..", ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		t.Run(fmt.Sprintf("line_%d_%s", b.line, b.kind), func(t *testing.T) {
			switch b.kind {
			case "ci":
				cmds := commands(b.text)
				if len(cmds) != 1 || !strings.Contains(string(ci), "\n"+cmds[0]+"\n") {
					t.Fatalf(".ci/run does not run the README's test command %q", cmds)
				}
			case "check", "gotest":
				for _, c := range commands(b.text) {
					if strings.HasPrefix(c, "go test ") {
						lookUpGoTest(t, c)
						continue
					}
					if b.kind == "gotest" {
						t.Fatalf("not a go test command: %s", c)
					}
					checkCommand(t, bin, c)
				}
			case "serve":
				testlock.Cluster(t)
				runServe(t, bin, b)
			case "script":
				testlock.Cluster(t)
				runScript(t, bin, b)
			default:
				t.Fatalf("unknown readme-test kind %q", b.kind)
			}
		})
	}
}

// toBinary has a command use ./discluster, this package's binary.
func toBinary(c string) string {
	c = strings.ReplaceAll(c, "go build -o discluster ./cmd/discluster", "cp \"$DISCLUSTER_TEST_BINARY\" ./discluster")
	c = strings.ReplaceAll(c, "go run ./cmd/discluster ", "./discluster ")
	return regexp.MustCompile(`(^|\s)discluster `).ReplaceAllString(c, "$1./discluster ")
}

func checkCommand(t *testing.T, bin, c string) {
	t.Helper()
	dir := t.TempDir()
	script := "cp \"$DISCLUSTER_TEST_BINARY\" ./discluster && " + strings.ReplaceAll(toBinary(c), "DISCORD_TOKEN=...", "DISCORD_TOKEN=readme-check") + " --check"
	cmd := readmeShell(t, dir, script, "DISCLUSTER_TEST_BINARY="+bin)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), " OK: ") {
		t.Errorf("%s\n  --check: %v\n%s", c, err, out)
	}
}

// lookUpGoTest finds the tests, benchmarks and test flags a go test command names.
func lookUpGoTest(t *testing.T, c string) {
	t.Helper()
	f := strings.Fields(c)
	var pkgs []string
	var run, bench string
	for i := 2; i < len(f); i++ {
		switch a := strings.Trim(f[i], "'"); {
		case a == "-run" && i+1 < len(f):
			run = strings.Trim(f[i+1], "'")
			i++
		case a == "-bench" && i+1 < len(f):
			bench = strings.Trim(f[i+1], "'")
			i++
		case strings.HasPrefix(a, "./"):
			pkgs = append(pkgs, a)
		case strings.HasPrefix(a, "-") && strings.Contains(a, "."): // a package's own flag
			if flag.Lookup(strings.TrimLeft(a, "-")) == nil {
				t.Errorf("%s: no test flag %s in this package", c, a)
			}
		}
	}
	var src strings.Builder
	for _, p := range pkgs {
		files, _ := filepath.Glob(filepath.Join("..", "..", p, "*_test.go"))
		if len(files) == 0 {
			t.Errorf("%s: no tests in %s", c, p)
		}
		for _, name := range files {
			b, _ := os.ReadFile(name)
			src.Write(b)
		}
	}
	if run != "" && run != "^$" && !strings.Contains(src.String(), "func "+run+"(") {
		t.Errorf("%s: no test %s", c, run)
	}
	if bench != "" && bench != "." && !strings.Contains(src.String(), "func Benchmark"+bench+"(") {
		t.Errorf("%s: no benchmark %s", c, bench)
	}
}

func runServe(t *testing.T, bin string, b readmeBlock) {
	t.Helper()
	cmds := commands(b.text)
	if len(cmds) != 1 {
		t.Fatalf("a serve block holds one command, this one %d", len(cmds))
	}
	dir := t.TempDir()
	fake, err := proccluster.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	cmd := readmeShell(t, dir, "cp \"$DISCLUSTER_TEST_BINARY\" ./discluster && exec "+toBinary(cmds[0]),
		"DISCLUSTER_TEST_BINARY="+bin, "TMPDIR="+dir, "DISCLUSTER_FAKE_ADDR="+proccluster.Loopback(fake[0]))
	var out syncBuf
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = proccluster.Poll(ctx, 60*time.Second, 100*time.Millisecond, func() error {
		for _, e := range b.expect {
			if !strings.Contains(out.String(), e) {
				return fmt.Errorf("no %q yet", e)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmds[0], err, tailOf(out.String(), 2000))
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: exit %v after Ctrl-C\n%s", cmds[0], err, tailOf(out.String(), 2000))
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: still running 30s after Ctrl-C", cmds[0])
	}
}

// goBuildExample is a block's build of an example, `go build -o NAME ./examples/DIR`.
var goBuildExample = regexp.MustCompile(`go build -o (\S+) \./examples/([\w-]+)`)

// buildExamples builds the examples text builds into a directory of the test's, one
// binary per example, named as its directory: a block runs outside the module, where
// `go build ./examples/...` cannot, so it copies them from there as it copies
// ./discluster.
func buildExamples(t *testing.T, text string) string {
	t.Helper()
	dir := t.TempDir()
	for _, m := range goBuildExample.FindAllStringSubmatch(text, -1) {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, m[2]), "../../examples/"+m[2]).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", m[0], err, out)
		}
	}
	return dir
}

func runScript(t *testing.T, bin string, b readmeBlock) {
	t.Helper()
	dir := t.TempDir()
	remap := newPortRemap(t, b.text)
	text := goBuildExample.ReplaceAllString(toBinary(b.text), `cp "$$DISCLUSTER_EXAMPLES/$2" ./$1`)
	script := remap.apply(strings.NewReplacer("/tmp/dc", filepath.Join(dir, "dc"), "/etc/discluster", filepath.Join(dir, "etc")).Replace(text))
	// The fake listens where the block's --api-base says, on the address the fake
	// takes from the environment.
	env := []string{"DISCLUSTER_TEST_BINARY=" + bin, "DISCLUSTER_FAKE_ADDR=" + remap.apply("127.0.0.1:7080"),
		"DISCLUSTER_EXAMPLES=" + buildExamples(t, b.text)}
	cmd := readmeShell(t, dir, "set -e\ncp \"$DISCLUSTER_TEST_BINARY\" ./discluster\n"+script, env...)
	// A file, not a pipe: what the block starts in the background keeps its stdout,
	// and Wait would wait for it.
	outPath := filepath.Join(dir, "output")
	outFile, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer outFile.Close()
	cmd.Stdout, cmd.Stderr = outFile, outFile
	output := func() string { b, _ := os.ReadFile(outPath); return string(b) }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			logs, _ := filepath.Glob(filepath.Join(dir, "dc", "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("--- %s:\n%s", l, tailOf(string(b), 1500))
			}
			t.Fatalf("the block failed: %v\n%s", err, tailOf(output(), 3000))
		}
	case <-time.After(120 * time.Second):
		t.Fatalf("the block still runs after 2 minutes\n%s", tailOf(output(), 3000))
	}
	for _, e := range b.expect {
		if !strings.Contains(output(), e) {
			t.Errorf("the block's output lacks %q:\n%s", e, tailOf(output(), 3000))
		}
	}
}

func tailOf(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
