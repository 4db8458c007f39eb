//go:build unix

package buscmd

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// exeSuffix is the file name suffix of executables.
const exeSuffix = ""

// executableMode reports whether mode has an execute bit.
func executableMode(mode fs.FileMode) bool { return mode&0o111 != 0 }

// execute replaces the current process with m (execve). The command thus
// inherits stdin, stdout, stderr, the process id and signal delivery
// directly, and its exit status becomes that of bus, with no forwarding
// code that could get it wrong. It returns only when execve fails.
func execute(m Match) (int, error) {
	argv := append([]string{m.Name}, m.Args...)
	if err := syscall.Exec(m.Path, argv, os.Environ()); err != nil {
		return ExitError, fmt.Errorf("exec: %w", err)
	}
	return ExitOK, nil // not reached
}
