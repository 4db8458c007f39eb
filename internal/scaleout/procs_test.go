package scaleout_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
)

// commands are the programs the test builds from this module.
var commands = []string{"bus-api-provider-events", "bus-integration-codex", "bus-api-provider-llm", "bus-operator-token"}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries builds the commands once per test binary (without -race, whatever
// the test runs with) and returns the directory holding them.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() { binDir, buildErr = build() })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func build() (string, error) {
	dir, err := os.MkdirTemp("", "bus-scaleout-bin-")
	if err != nil {
		return "", err
	}
	if err := testproc.BuildCommands(context.Background(), dir, false, commands...); err != nil {
		_ = os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// proc is one started process, alone in its process group (Signal reaches
// the whole group), with stdout and stderr in a log file.
type proc struct {
	*testproc.Proc
	name string
	log  string
}

// kill kills the process group and waits for the process.
func (p *proc) kill() error {
	_ = p.Signal(syscall.SIGKILL)
	select {
	case <-p.Done():
		return nil
	case <-time.After(15 * time.Second):
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.Pid())
	}
}

// output returns what the process wrote so far.
func (p *proc) output() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// cluster starts processes for one test and stops them all when it ends.
type cluster struct {
	t   *testing.T
	bin string
	dir string
	env []string // every process's environment (nothing is inherited)

	mu    sync.Mutex
	procs []*proc
	seq   int
}

// newCluster returns a cluster whose processes share one fresh HS256 secret
// and configuration directory. Its cleanup kills every process group, then,
// when the test failed, prints every process's output.
func newCluster(t *testing.T, bin string) *cluster {
	t.Helper()
	dir := t.TempDir()
	var secret [32]byte
	_, _ = rand.Read(secret[:])
	for _, d := range []string{"home", "config"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	c := &cluster{t: t, bin: bin, dir: dir, env: []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + filepath.Join(dir, "home"),
		"BUS_CONFIG_DIR=" + filepath.Join(dir, "config"),
		"BUS_AUTH_HS256_SECRET=" + hex.EncodeToString(secret[:]),
	}}
	t.Cleanup(c.stop)
	return c
}

func (c *cluster) stop() {
	c.mu.Lock()
	procs := c.procs
	c.mu.Unlock()
	// Clients first, then the servers they use.
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		if err := p.kill(); err != nil {
			c.t.Error(err)
		}
	}
	if !c.t.Failed() {
		return
	}
	for _, p := range procs {
		c.t.Logf("==== %s (pid %d, exit: %v) ====\n%s", p.name, p.Pid(), p.Err(), testproc.Tail(p.output(), 150))
	}
}

// start starts program with args and the cluster environment plus env.
func (c *cluster) start(name, program string, env []string, args ...string) *proc {
	c.t.Helper()
	c.mu.Lock()
	c.seq++
	logPath := filepath.Join(c.dir, fmt.Sprintf("%02d-%s.log", c.seq, name))
	c.mu.Unlock()
	f, err := os.Create(logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	defer func() { _ = f.Close() }() // the child has its own descriptor
	cmd := exec.Command(filepath.Join(c.bin, program), args...)
	cmd.Env = append(append([]string(nil), c.env...), env...)
	cmd.Dir = c.dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started, err := testproc.Start(cmd)
	if err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{Proc: started, name: name, log: logPath}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p
}

// run runs program to completion and returns its standard output.
func (c *cluster) run(program string, args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, program), args...)
	cmd.Env = c.env
	cmd.Dir = c.dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		c.t.Fatalf("%s %s: %v\n%s", program, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// token issues a one-hour token for subject with scope (space-separated
// scopes) with bus-operator-token.
func (c *cluster) token(subject, scope string) string {
	c.t.Helper()
	out := c.run("bus-operator-token", "--format", "token", "issue", "--local", "--subject", subject, "--scope", scope, "--ttl", "1h")
	tok := strings.TrimSpace(out)
	if tok == "" || strings.ContainsAny(tok, " \n") {
		c.t.Fatalf("bus-operator-token printed %q, want one token", out)
	}
	return tok
}

// startHTTP starts a server program on a free loopback port (args get
// "--addr 127.0.0.1:PORT" appended) and waits until GET /readyz answers
// 200. A port taken between picking and listening is retried.
func (c *cluster) startHTTP(name, program string, env []string, args ...string) (*proc, string) {
	c.t.Helper()
	var last string
	for range 3 {
		addr, err := testproc.FreeAddr()
		if err != nil {
			c.t.Fatal(err)
		}
		p := c.start(name, program, env, append(args, "--addr", addr)...)
		base := "http://" + addr
		err = waitReady(p, base+"/readyz", 60*time.Second)
		if err == nil {
			return p, base
		}
		last = fmt.Sprintf("%v\n%s", err, testproc.Tail(p.output(), 40))
		_ = p.kill()
		if !strings.Contains(p.output(), "address already in use") {
			break
		}
	}
	c.t.Fatalf("%s did not become ready: %s", name, last)
	return nil, ""
}

func waitReady(p *proc, url string, limit time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		if p.Exited() {
			return fmt.Errorf("%s exited: %v", p.name, p.Err())
		}
		resp, err := client.Get(url)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready within %s: %v", limit, last)
}

// waitLog waits until the process's output contains text.
func waitLog(t *testing.T, p *proc, text string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if strings.Contains(p.output(), text) {
			return
		}
		if p.Exited() {
			t.Fatalf("%s exited before logging %q: %v\n%s", p.name, text, p.Err(), testproc.Tail(p.output(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not log %q within %s\n%s", p.name, text, limit, testproc.Tail(p.output(), 40))
}

// logRecords returns the slog text records of output whose msg is msg, as
// key/value maps.
func logRecords(output, msg string) []map[string]string {
	var out []map[string]string
	sc := bufio.NewScanner(strings.NewReader(output))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		rec := parseLogfmt(sc.Text())
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// parseLogfmt parses one line of slog's text handler: key=value pairs,
// values optionally quoted.
func parseLogfmt(line string) map[string]string {
	rec := map[string]string{}
	for line != "" {
		line = strings.TrimLeft(line, " ")
		eq := strings.IndexByte(line, '=')
		if eq <= 0 {
			break
		}
		key := line[:eq]
		line = line[eq+1:]
		var val string
		if strings.HasPrefix(line, `"`) {
			if q, err := strconv.QuotedPrefix(line); err == nil {
				val, _ = strconv.Unquote(q)
				line = line[len(q):]
			} else {
				val, line = line, ""
			}
		} else {
			sp := strings.IndexByte(line, ' ')
			if sp < 0 {
				sp = len(line)
			}
			val, line = line[:sp], line[sp:]
		}
		rec[key] = val
	}
	return rec
}
