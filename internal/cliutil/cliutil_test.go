package cliutil_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
)

func TestReport(t *testing.T) {
	tests := []struct {
		err  error
		code int
		out  string
	}{
		{nil, cliutil.ExitOK, ""},
		{errors.New("boom"), cliutil.ExitFailure, "cmd: boom\n"},
		{cliutil.Usagef("bad --x %d", 3), cliutil.ExitUsage, "cmd: bad --x 3\n"},
		{fmt.Errorf("wrapped: %w", cliutil.Usagef("inner")), cliutil.ExitUsage, "cmd: wrapped: inner\n"},
		{errors.New("  line one\nline two\n"), cliutil.ExitFailure, "cmd: line one line two\n"},
		{errors.Join(errors.New("a"), errors.New("b")), cliutil.ExitFailure, "cmd: a b\n"},
	}
	for _, tc := range tests {
		var b bytes.Buffer
		if code := cliutil.Report(&b, "cmd", tc.err); code != tc.code || b.String() != tc.out {
			t.Errorf("Report(%v) = %d %q, want %d %q", tc.err, code, b.String(), tc.code, tc.out)
		}
	}
}

func TestParse(t *testing.T) {
	newFS := func() (*flag.FlagSet, *string) {
		fs := flag.NewFlagSet("cmd", flag.ContinueOnError)
		return fs, fs.String("name", "def", "the name")
	}
	tests := []struct {
		args    []string
		want    string
		usage   bool
		help    bool
		outWant string
	}{
		{args: nil, want: "def"},
		{args: []string{"--name", "x"}, want: "x"},
		{args: []string{"-name=y"}, want: "y"},
		{args: []string{"--nope"}, usage: true},
		{args: []string{"--name"}, usage: true},
		{args: []string{"-h"}, help: true, outWant: "Usage of cmd:"},
		{args: []string{"--help"}, help: true, outWant: "-name string"},
	}
	for _, tc := range tests {
		fs, name := newFS()
		var out bytes.Buffer
		err := cliutil.Parse(fs, tc.args, &out)
		var ue *cliutil.UsageError
		switch {
		case tc.help:
			if !errors.Is(err, cliutil.ErrHelp) || !strings.Contains(out.String(), tc.outWant) {
				t.Errorf("%v: err %v out %q", tc.args, err, out.String())
			}
		case tc.usage:
			if !errors.As(err, &ue) || !strings.HasSuffix(ue.Msg, "(see -h)") || strings.Contains(ue.Msg, "\n") || out.Len() != 0 {
				t.Errorf("%v: err %v out %q", tc.args, err, out.String())
			}
		default:
			if err != nil || *name != tc.want || out.Len() != 0 {
				t.Errorf("%v: err %v name %q", tc.args, err, *name)
			}
		}
	}
}

func TestEnvDefaults(t *testing.T) {
	env := busconfig.MapEnv(map[string]string{
		"S": "v", "EMPTY": "", "D": "250ms", "BADD": "soon", "I": "42", "BADI": "x", "B": "false", "BADB": "maybe",
	})
	if got := cliutil.String(env, "S", "def"); got != "v" {
		t.Errorf("String = %q", got)
	}
	if got := cliutil.String(env, "EMPTY", "def"); got != "def" {
		t.Errorf("String of empty = %q", got)
	}
	if got := cliutil.String(env, "UNSET", "def"); got != "def" {
		t.Errorf("String of unset = %q", got)
	}
	if got := cliutil.String(nil, "S", "def"); got != "def" {
		t.Errorf("String of nil env = %q", got)
	}
	tests := []struct {
		name string
		f    func() (any, error)
		want any
		bad  string
	}{
		{"duration", func() (any, error) { return cliutil.Duration(env, "D", time.Second) }, 250 * time.Millisecond, ""},
		{"duration default", func() (any, error) { return cliutil.Duration(env, "UNSET", time.Second) }, time.Second, ""},
		{"bad duration", func() (any, error) { return cliutil.Duration(env, "BADD", time.Second) }, nil, "BADD"},
		{"int", func() (any, error) { return cliutil.Int(env, "I", 1) }, 42, ""},
		{"int default", func() (any, error) { return cliutil.Int(env, "EMPTY", 7) }, 7, ""},
		{"bad int", func() (any, error) { return cliutil.Int(env, "BADI", 1) }, nil, "BADI"},
		{"bool", func() (any, error) { return cliutil.Bool(env, "B", true) }, false, ""},
		{"bool default", func() (any, error) { return cliutil.Bool(env, "UNSET", true) }, true, ""},
		{"bad bool", func() (any, error) { return cliutil.Bool(env, "BADB", true) }, nil, "BADB"},
	}
	for _, tc := range tests {
		got, err := tc.f()
		if tc.bad != "" {
			var ue *cliutil.UsageError
			if !errors.As(err, &ue) || !strings.Contains(ue.Msg, tc.bad) {
				t.Errorf("%s: err %v, want a usage error naming %s", tc.name, err, tc.bad)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
}

func TestLogger(t *testing.T) {
	for _, lvl := range []string{"debug", "info", "warn", "error", "INFO"} {
		if _, err := cliutil.Logger(io.Discard, lvl); err != nil {
			t.Errorf("Logger(%q): %v", lvl, err)
		}
	}
	var ue *cliutil.UsageError
	if _, err := cliutil.Logger(io.Discard, "loud"); !errors.As(err, &ue) {
		t.Errorf("Logger(loud): %v", err)
	}
	var b bytes.Buffer
	log, _ := cliutil.Logger(&b, "warn")
	log.Info("hidden")
	log.Warn("shown")
	if strings.Contains(b.String(), "hidden") || !strings.Contains(b.String(), "shown") {
		t.Errorf("log %q", b.String())
	}
}
