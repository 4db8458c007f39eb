//go:build !unix

package buscmd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
)

// exeSuffix is the file name suffix of executables.
const exeSuffix = ".exe"

// executableMode reports whether mode may be executed; without execute bits
// every regular file with exeSuffix counts.
func executableMode(fs.FileMode) bool { return true }

// execute runs m as a child with the standard streams of bus and returns
// its exit status. Interrupts are ignored by bus while the child runs: the
// console delivers them to the child directly.
func execute(m Match) (int, error) {
	cmd := exec.Command(m.Path, m.Args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	defer signal.Stop(sig)
	err := cmd.Run()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return exitErr.ExitCode(), nil
	}
	if err != nil {
		return ExitError, fmt.Errorf("start: %w", err)
	}
	return ExitOK, nil
}
