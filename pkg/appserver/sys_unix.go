//go:build unix

package appserver

import (
	"os/exec"
	"syscall"
)

// setProcAttr puts the child in its own process group so the npm launcher
// and the native binary it spawns can be killed together. (No Pdeathsig: it
// fires when the forking OS thread exits, not the process. If the owner dies
// without Close, the app-server sees EOF on stdin and exits by itself.)
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// killGroup sends SIGKILL to the child's whole process group.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Process.Kill()
}
