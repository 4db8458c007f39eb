//go:build !unix

package appserver

import "os/exec"

func setProcAttr(*exec.Cmd) {}

// killGroup kills the child (no process groups on this platform).
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = cmd.Process.Kill()
	}
}
