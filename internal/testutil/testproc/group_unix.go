//go:build unix

package testproc

import (
	"os/exec"
	"syscall"
	"time"
)

// Proc is a command running alone in its own process group, so that it and
// whatever it starts can be signalled and killed together.
type Proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's result, set before done is closed
}

// Start starts cmd in a new process group (it sets Setpgid in
// cmd.SysProcAttr, keeping whatever else the caller set there, such as
// Pdeathsig or Credential) and waits for it in the background.
func Start(cmd *exec.Cmd) (*Proc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id, also the id of its process group.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the command has exited (and Wait returned).
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether Done is closed.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the command's Wait error once it has exited; nil before.
func (p *Proc) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// Signal sends sig to the whole process group.
func (p *Proc) Signal(sig syscall.Signal) error { return syscall.Kill(-p.Pid(), sig) }

// Kill kills the process group and waits for the command to exit.
func (p *Proc) Kill() {
	_ = p.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends sig to the process group, kills the group when the command
// has not exited after grace, waits for it, and then kills whatever of the
// group outlived it, so nothing of it is left.
func (p *Proc) Stop(sig syscall.Signal, grace time.Duration) {
	_ = p.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Kill()
	}
	_ = p.Signal(syscall.SIGKILL)
}
