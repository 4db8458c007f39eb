//go:build unix

package testproc_test

import (
	"bufio"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
)

// startShell starts script with sh in its own group and returns it with the
// pid of the background sleep it printed.
func startShell(t *testing.T, script string) (*testproc.Proc, int) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p, err := testproc.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	if pgid, err := syscall.Getpgid(p.Pid()); err != nil || pgid != p.Pid() {
		t.Fatalf("process group %d, %v; want its own (%d)", pgid, err, p.Pid())
	}
	return p, child
}

func gone(pid int) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

func TestStopEndsTheGroup(t *testing.T) {
	p, child := startShell(t, `sleep 60 & echo $!; wait`)
	if p.Exited() || p.Err() != nil {
		t.Fatal("exited at once")
	}
	p.Stop(syscall.SIGTERM, 5*time.Second)
	if !p.Exited() || p.Err() == nil {
		t.Fatalf("exited %v, err %v; want a signalled exit", p.Exited(), p.Err())
	}
	if !gone(child) {
		t.Errorf("the group's sleep (pid %d) survived Stop", child)
	}
}

func TestStopKillsAfterGrace(t *testing.T) {
	p, child := startShell(t, `trap '' TERM; sleep 60 & echo $!; while :; do wait; done`)
	start := time.Now()
	p.Stop(syscall.SIGTERM, 200*time.Millisecond)
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("stopped after %s, before the grace period", d)
	}
	select {
	case <-p.Done():
	default:
		t.Fatal("Done is not closed after Stop")
	}
	if !gone(child) {
		t.Errorf("the group's sleep (pid %d) survived Stop", child)
	}
}
