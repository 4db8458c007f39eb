// Package cliutil holds what every command of this repository shares: flag
// parsing with environment-variable defaults, one-line usage errors with exit
// code 2, and the signal-aware main wrapper.
//
// It imports only internal/busconfig.
package cliutil

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// IO bundles what a command reads and writes.
type IO struct {
	Env    busconfig.Env
	Stdout io.Writer
	Stderr io.Writer
}

// Main runs a command's Run function with a context cancelled by SIGINT or
// SIGTERM and exits with its code. It is all a cmd/ main needs to do.
func Main(run func(ctx context.Context, args []string, io IO) int) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], IO{Env: busconfig.OSEnv(), Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	os.Exit(code)
}

// UsageError is a command-line mistake: reported in one line, exit code 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a *UsageError.
func Usagef(format string, args ...any) error { return &UsageError{Msg: fmt.Sprintf(format, args...)} }

// Report prints err as one line prefixed with the command name and returns
// the exit code: 2 for usage errors, 1 otherwise, 0 for nil.
func Report(stderr io.Writer, cmd string, err error) int {
	if err == nil {
		return ExitOK
	}
	msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", " ")
	fmt.Fprintf(stderr, "%s: %s\n", cmd, msg)
	var ue *UsageError
	if errors.As(err, &ue) {
		return ExitUsage
	}
	return ExitFailure
}

// ErrHelp is returned by Parse when -h or --help was given (usage printed).
var ErrHelp = flag.ErrHelp

// Parse parses args with fs. Parse errors become *UsageError (one line);
// -h prints the usage to out and returns ErrHelp.
func Parse(fs *flag.FlagSet, args []string, out io.Writer) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		PrintUsage(fs, out)
		return ErrHelp
	}
	if err != nil {
		return &UsageError{Msg: err.Error() + " (see -h)"}
	}
	return nil
}

// PrintUsage writes fs's flag defaults to out.
func PrintUsage(fs *flag.FlagSet, out io.Writer) {
	fs.SetOutput(out)
	fmt.Fprintf(out, "Usage of %s:\n", fs.Name())
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// String returns env[key] when set and non-empty, else def.
func String(env busconfig.Env, key, def string) string {
	if v := env.Getenv(key); v != "" {
		return v
	}
	return def
}

// Duration parses env[key] as a duration, else def.
func Duration(env busconfig.Env, key string, def time.Duration) (time.Duration, error) {
	v := env.Getenv(key)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, Usagef("%s=%q is not a duration (e.g. 60s)", key, v)
	}
	return d, nil
}

// Int parses env[key] as an integer, else def.
func Int(env busconfig.Env, key string, def int) (int, error) {
	v := env.Getenv(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, Usagef("%s=%q is not a number", key, v)
	}
	return n, nil
}

// Bool parses env[key] as a boolean, else def.
func Bool(env busconfig.Env, key string, def bool) (bool, error) {
	v := env.Getenv(key)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, Usagef("%s=%q is not true or false", key, v)
	}
	return b, nil
}

// Logger returns a text logger on w at the level named by lvl
// (debug|info|warn|error).
func Logger(w io.Writer, lvl string) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(lvl)); err != nil {
		return nil, Usagef("invalid log level %q (debug, info, warn, error)", lvl)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), nil
}

// Run is the life of a command: parse args into options (-h prints the
// usage and exits 0; a mistake is one line and exit code 2), run with
// them, and report the outcome as one line and an exit code.
func Run[O any](ctx context.Context, args []string, io IO, name string,
	parse func(args []string, io IO) (O, error), run func(ctx context.Context, o O, io IO) error) int {
	o, err := parse(args, io)
	if errors.Is(err, ErrHelp) {
		return ExitOK
	}
	if err != nil {
		return Report(io.Stderr, name, err)
	}
	return Report(io.Stderr, name, run(ctx, o, io))
}

// ParseFlags parses args with fs like Parse and refuses positional
// arguments.
func ParseFlags(fs *flag.FlagSet, args []string, out io.Writer) error {
	if err := Parse(fs, args, out); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return Usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
