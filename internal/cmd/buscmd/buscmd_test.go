package buscmd_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/busdk/bus-integration-codex/internal/cmd/buscmd"
)

// touch creates file name in dir; executable when exe is true.
func touch(t *testing.T, dir, name string, exe bool) string {
	t.Helper()
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	p := filepath.Join(dir, name)
	mode := os.FileMode(0o644)
	if exe {
		mode = 0o755
	}
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCandidates(t *testing.T) {
	got := buscmd.Candidates([]string{"a", "b", "c"})
	want := []string{"bus-a-b-c", "bus-a-b", "bus-a"}
	if !slices.Equal(got, want) {
		t.Errorf("Candidates = %q, want %q", got, want)
	}
}

func TestCommandWords(t *testing.T) {
	for _, tc := range []struct{ args, want []string }{
		{[]string{"operator", "token", "issue", "--local", "x"}, []string{"operator", "token", "issue"}},
		{[]string{"a", "./file", "b"}, []string{"a"}},
		{[]string{"a", "", "b"}, []string{"a"}},
		{[]string{"-h"}, []string{}},
	} {
		if got := buscmd.CommandWords(tc.args); !slices.Equal(got, tc.want) {
			t.Errorf("CommandWords(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestResolveLongestMatch(t *testing.T) {
	self, p1, p2 := t.TempDir(), t.TempDir(), t.TempDir()
	touch(t, p1, "bus-operator", true)
	tok := touch(t, p2, "bus-operator-token", true)
	f := buscmd.Finder{SelfDir: self, Path: strings.Join([]string{p1, p2}, string(os.PathListSeparator))}

	m, err := f.Resolve([]string{"operator", "token", "issue", "--local", "--scope", "llm:proxy", "--format", "token"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "bus-operator-token" || m.Path != tok {
		t.Errorf("matched %s at %s, want bus-operator-token at %s", m.Name, m.Path, tok)
	}
	if want := []string{"issue", "--local", "--scope", "llm:proxy", "--format", "token"}; !slices.Equal(m.Args, want) {
		t.Errorf("args = %q, want %q", m.Args, want)
	}

	// A shorter name is used when no longer one exists.
	m, err = f.Resolve([]string{"operator", "list", "x"})
	if err != nil || m.Name != "bus-operator" || !slices.Equal(m.Args, []string{"list", "x"}) {
		t.Errorf("Resolve(operator list x) = %+v, %v", m, err)
	}
	// Hyphenated words name the same executable.
	if m, err := f.Resolve([]string{"operator-token"}); err != nil || m.Name != "bus-operator-token" || len(m.Args) != 0 {
		t.Errorf("Resolve(operator-token) = %+v, %v", m, err)
	}
}

func TestResolvePrefersSelfDirThenPathOrder(t *testing.T) {
	self, p1, p2 := t.TempDir(), t.TempDir(), t.TempDir()
	touch(t, p1, "bus-x", true)
	inP2 := touch(t, p2, "bus-x", true)
	path := p2 + string(os.PathListSeparator) + p1

	if m, err := (buscmd.Finder{SelfDir: self, Path: path}).Resolve([]string{"x"}); err != nil || m.Path != inP2 {
		t.Errorf("PATH order: got %+v, %v; want %s", m, err, inP2)
	}
	inSelf := touch(t, self, "bus-x", true)
	if m, err := (buscmd.Finder{SelfDir: self, Path: path}).Resolve([]string{"x"}); err != nil || m.Path != inSelf {
		t.Errorf("self dir: got %+v, %v; want %s", m, err, inSelf)
	}
}

func TestResolveSkipsNonExecutablesAndRelativePath(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no execute bits on Windows")
	}
	dir := t.TempDir()
	touch(t, dir, "bus-y-z", false)
	touch(t, dir, "bus-y", true)
	if err := os.Mkdir(filepath.Join(dir, "bus-d"), 0o755); err != nil {
		t.Fatal(err)
	}
	f := buscmd.Finder{Path: dir}
	if m, err := f.Resolve([]string{"y", "z"}); err != nil || m.Name != "bus-y" || !slices.Equal(m.Args, []string{"z"}) {
		t.Errorf("non-executable bus-y-z was not skipped: %+v, %v", m, err)
	}
	if _, err := f.Resolve([]string{"d"}); !errors.Is(err, buscmd.ErrUnknownCommand) {
		t.Errorf("directory bus-d resolved: %v", err)
	}

	t.Chdir(dir)
	if _, err := (buscmd.Finder{Path: "."}).Resolve([]string{"y"}); !errors.Is(err, buscmd.ErrUnknownCommand) {
		t.Errorf("relative PATH entry was searched: %v", err)
	}
}

func TestResolveUnknown(t *testing.T) {
	f := buscmd.Finder{SelfDir: t.TempDir(), Path: t.TempDir()}
	_, err := f.Resolve([]string{"a", "b", "c", "--flag", "d"})
	if !errors.Is(err, buscmd.ErrUnknownCommand) {
		t.Fatalf("err = %v, want ErrUnknownCommand", err)
	}
	if want := `unknown command "a b c" (no bus-a-b-c, bus-a-b or bus-a on PATH)`; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
	_, err = f.Resolve([]string{"a"})
	if want := `unknown command "a" (no bus-a on PATH)`; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %q", err, want)
	}
}

func TestRunUsageAndErrors(t *testing.T) {
	self, p := t.TempDir(), t.TempDir()
	touch(t, self, "bus-operator-token", true)
	touch(t, p, "bus-integration-codex", true)
	touch(t, p, "bus-operator-token", true) // listed once
	touch(t, p, "other", true)
	f := buscmd.Finder{SelfDir: self, Path: p}

	if got := f.Commands(); !slices.Equal(got, []string{"bus-integration-codex", "bus-operator-token"}) {
		t.Errorf("Commands = %q", got)
	}

	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}} {
		var out, errOut bytes.Buffer
		if code := buscmd.Run(f, args, &out, &errOut); code != 0 || errOut.Len() != 0 {
			t.Errorf("%q: exit %d, stderr %q", args, code, errOut.String())
		}
		if !strings.Contains(out.String(), "Usage: bus") || !strings.Contains(out.String(), "  bus operator token\n") ||
			!strings.Contains(out.String(), "  bus integration codex\n") || strings.Contains(out.String(), "other") {
			t.Errorf("%q: usage does not list the commands: %q", args, out.String())
		}
	}

	var out, errOut bytes.Buffer
	if code := buscmd.Run(f, nil, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "Usage: bus") || out.Len() != 0 {
		t.Errorf("no args: exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"a", "b", "c"}, `bus: unknown command "a b c" (no bus-a-b-c, bus-a-b or bus-a on PATH)` + "\n"},
		{[]string{"--version"}, `bus: unknown flag "--version" (see bus --help)` + "\n"},
	} {
		out.Reset()
		errOut.Reset()
		if code := buscmd.Run(f, tc.args, &out, &errOut); code != 2 || errOut.String() != tc.want || out.Len() != 0 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and %q", tc.args, code, out.String(), errOut.String(), tc.want)
		}
	}
}

func TestUsageWithoutCommands(t *testing.T) {
	var out bytes.Buffer
	if err := (buscmd.Finder{Path: t.TempDir()}).WriteUsage(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "No bus-* commands found") {
		t.Errorf("usage = %q", out.String())
	}
}
