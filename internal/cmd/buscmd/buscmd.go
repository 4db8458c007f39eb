// Package buscmd implements the bus command: "bus a b c ARGS..." runs the
// longest-matching executable among bus-a-b-c, bus-a-b and bus-a with the
// remaining arguments.
//
// Executables are looked up first in the directory of the running bus
// executable, then in the absolute directories of PATH (relative PATH
// entries are ignored, as os/exec refuses them too). The longest name wins
// wherever it is found; for one name the bus directory wins over PATH, and
// PATH is searched in order.
//
// On Unix the matched command replaces the bus process (execve), so it
// inherits stdin, stdout, stderr, the process id and every signal, and its
// exit status is the status of bus; elsewhere bus runs it as a child and
// returns its exit status.
//
// It imports only the standard library. Only cmd/bus imports it.
package buscmd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Prefix is the prefix of every dispatched executable name.
const Prefix = "bus-"

// Exit codes returned by Run when it does not hand over to a command.
const (
	ExitOK    = 0
	ExitError = 1 // the command was found but could not be started
	ExitUsage = 2 // no command, unknown command or bad flag
)

// ErrUnknownCommand is returned (wrapped) by Finder.Resolve when no
// candidate executable exists.
var ErrUnknownCommand = errors.New("unknown command")

// Finder locates bus-* executables.
type Finder struct {
	// SelfDir is the directory of the bus executable, searched first; empty
	// to skip it.
	SelfDir string
	// Path is a PATH-style list of directories searched after SelfDir.
	Path string
}

// Match is a resolved command line.
type Match struct {
	Name string   // executable name, e.g. "bus-operator-token"
	Path string   // absolute path of the executable
	Args []string // remaining arguments passed to it
}

// dirs returns the directories to search, in order, without duplicates.
func (f Finder) dirs() []string {
	var out []string
	add := func(d string) {
		if d == "" || !filepath.IsAbs(d) {
			return
		}
		d = filepath.Clean(d)
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	add(f.SelfDir)
	for _, d := range filepath.SplitList(f.Path) {
		add(d)
	}
	return out
}

// lookup returns the path of executable name in the search directories.
func (f Finder) lookup(name string) (string, bool) {
	for _, d := range f.dirs() {
		p := filepath.Join(d, name+exeSuffix)
		if isExecutable(p) {
			return p, true
		}
	}
	return "", false
}

// CommandWords returns the leading arguments that can form a command name:
// those before the first flag ("-...") that are non-empty and contain no
// path separator.
func CommandWords(args []string) []string {
	n := 0
	for _, a := range args {
		if a == "" || strings.HasPrefix(a, "-") || strings.ContainsAny(a, `/\`) {
			break
		}
		n++
	}
	return args[:n]
}

// Candidates returns the executable names tried for words, longest first:
// bus-a-b-c, bus-a-b, bus-a for words a b c.
func Candidates(words []string) []string {
	out := make([]string, 0, len(words))
	for i := len(words); i >= 1; i-- {
		out = append(out, Prefix+strings.Join(words[:i], "-"))
	}
	return out
}

// Resolve finds the command for args (without the program name). Its error
// wraps ErrUnknownCommand and reads like
// `unknown command "a b" (no bus-a-b or bus-a on PATH)`.
func (f Finder) Resolve(args []string) (Match, error) {
	words := CommandWords(args)
	if len(words) == 0 {
		if len(args) == 0 {
			return Match{}, fmt.Errorf("%w: no command given", ErrUnknownCommand)
		}
		return Match{}, fmt.Errorf("%w: %q is not a command name", ErrUnknownCommand, args[0])
	}
	cands := Candidates(words)
	for i, name := range cands {
		if p, ok := f.lookup(name); ok {
			return Match{Name: name, Path: p, Args: args[len(words)-i:]}, nil
		}
	}
	return Match{}, fmt.Errorf("%w %q (no %s on PATH)", ErrUnknownCommand, strings.Join(words, " "), orList(cands))
}

// orList formats names as "a", "a or b", "a, b or c".
func orList(names []string) string {
	if len(names) == 1 {
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// Commands returns the names of the bus-* executables found in the search
// directories, sorted and without duplicates.
func (f Finder) Commands() []string {
	var out []string
	for _, d := range f.dirs() {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue // a missing or unreadable PATH entry is not an error
		}
		for _, e := range entries {
			name, ok := strings.CutSuffix(e.Name(), exeSuffix)
			if !ok || !strings.HasPrefix(name, Prefix) || len(name) == len(Prefix) {
				continue
			}
			if !slices.Contains(out, name) && isExecutable(filepath.Join(d, e.Name())) {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// isExecutable reports whether path is a regular file (following symlinks)
// that may be executed.
func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	return executableMode(fi.Mode())
}

// WriteUsage writes the usage text, listing the commands f finds, to w.
func (f Finder) WriteUsage(w io.Writer) error {
	var b strings.Builder
	b.WriteString(`Usage: bus COMMAND [ARGS...]

"bus a b c ARGS..." runs the longest existing executable among bus-a-b-c,
bus-a-b and bus-a with the remaining arguments, e.g.
"bus operator token issue --local" runs "bus-operator-token issue --local".
Executables are looked up next to bus first, then on PATH.

`)
	cmds := f.Commands()
	if len(cmds) == 0 {
		b.WriteString("No bus-* commands found next to bus or on PATH.\n")
	} else {
		b.WriteString("Commands:\n")
		for _, c := range cmds {
			fmt.Fprintf(&b, "  bus %s\n", strings.ReplaceAll(strings.TrimPrefix(c, Prefix), "-", " "))
		}
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("dispatch: write usage: %w", err)
	}
	return nil
}

// SelfFinder returns a Finder for the running executable and the PATH
// value path.
func SelfFinder(path string) Finder {
	f := Finder{Path: path}
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		f.SelfDir = filepath.Dir(exe)
	}
	return f
}

// Run dispatches args (without the program name) using f. On Unix a
// successful dispatch replaces the process and Run does not return;
// otherwise it returns the command's exit status, or ExitUsage/ExitError
// after printing usage or a one-line message.
func Run(f Finder, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		_ = f.WriteUsage(stderr)
		return ExitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if err := f.WriteUsage(stdout); err != nil {
			fmt.Fprintf(stderr, "bus: %v\n", err)
			return ExitError
		}
		return ExitOK
	}
	if strings.HasPrefix(args[0], "-") {
		fmt.Fprintf(stderr, "bus: unknown flag %q (see bus --help)\n", args[0])
		return ExitUsage
	}
	m, err := f.Resolve(args)
	if err != nil {
		fmt.Fprintf(stderr, "bus: %v\n", err)
		return ExitUsage
	}
	code, err := execute(m)
	if err != nil {
		fmt.Fprintf(stderr, "bus: run %s: %v\n", m.Path, err)
		return ExitError
	}
	return code
}
