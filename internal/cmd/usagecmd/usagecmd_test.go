package usagecmd_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/cmd/usagecmd"
	"github.com/busdk/bus-integration-codex/internal/stack"
	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
	"github.com/busdk/bus-integration-codex/internal/usage"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

const waitLimit = 30 * time.Second

// frontDoor runs a stack whose front door's ledger holds three requests
// of the last minutes, after the returned time: two of alice, one of bob.
func frontDoor(t *testing.T) (*stack.Stack, time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	m := usage.NewMemory(usage.MemoryOptions{})
	day := time.Now().UTC().Add(-10 * time.Minute).Truncate(time.Second)
	recs := []usage.Record{
		{RequestID: "req_a1", Time: day.Add(time.Minute), Identity: "alice", Model: "codex-chatgpt", Operation: "chat.completions", Status: 200, DurationMS: 40,
			Tokens: usage.Tokens{Input: 321, Cached: 100, Output: 12, Reasoning: 5, Total: 333}},
		{RequestID: "req_b1", Time: day.Add(2 * time.Minute), Identity: "bob", Model: "codex-agent", Operation: "responses", Status: 200, DurationMS: 900,
			Tokens: usage.Tokens{Input: 1000, Output: 20, Total: 1020}},
		{RequestID: "req_a2", Time: day.Add(3 * time.Minute), Identity: "alice", Model: "codex-chatgpt", Operation: "completions", Status: 429, DurationMS: 1},
	}
	if err := m.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	w := usage.NewWriter(m, usage.WriterOptions{})
	t.Cleanup(func() { _ = w.Close(context.Background()) })
	st, err := stack.Start(ctx, stack.Config{Usage: w})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st, day
}

func run(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr testproc.SyncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	code := usagecmd.Run(ctx, args, cliutil.IO{Env: busconfig.MapEnv(env), Stdout: &stdout, Stderr: &stderr})
	return code, stdout.String(), stderr.String()
}

func tokenEnv(t *testing.T, st *stack.Stack, subject string, scopes ...string) map[string]string {
	t.Helper()
	tok, err := st.IssueToken(subject, scopes...)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{"BUS_API_TOKEN": tok, "BUS_CONFIG_DIR": t.TempDir(), "BUS_LLM_URL": st.BaseURL}
}

func TestAdminTable(t *testing.T) {
	st, day := frontDoor(t)
	code, out, errOut := run(t, tokenEnv(t, st, "ops", auth.ScopeLLMAdmin), "--start", day.Format(time.RFC3339))
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	fields := func(i int) []string { return strings.Fields(lines[i]) }
	if !strings.HasPrefix(lines[0], "Usage of all identities from "+day.Format(time.RFC3339)+" to ") || lines[1] != "" {
		t.Fatalf("heading: %q", out)
	}
	for i, want := range [][]string{
		{"IDENTITY", "REQUESTS", "INPUT", "CACHED", "OUTPUT", "REASONING", "TOTAL"},
		{"alice", "2", "321", "100", "12", "5", "333"},
		{"bob", "1", "1000", "0", "20", "0", "1020"},
		{"TOTAL", "3", "1321", "100", "32", "5", "1353"},
	} {
		if got := fields(i + 2); !reflect.DeepEqual(got, want) {
			t.Errorf("line %d: %q, want %q (all: %s)", i+2, got, want, out)
		}
	}
	if len(lines) != 6 {
		t.Fatalf("%d lines: %s", len(lines), out)
	}
}

func TestRequestsCSVAndJSON(t *testing.T) {
	st, day := frontDoor(t)
	env := tokenEnv(t, st, "ops", auth.ScopeLLMAdmin)
	code, out, errOut := run(t, env, "--start", day.Format(time.RFC3339), "--group-by", "request", "--format", "csv")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"time", "request_id", "identity", "model", "operation", "status", "duration_ms", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens"},
		{day.Add(time.Minute).Format(time.RFC3339Nano), "req_a1", "alice", "codex-chatgpt", "chat.completions", "200", "40", "321", "100", "12", "5", "333"},
		{day.Add(2 * time.Minute).Format(time.RFC3339Nano), "req_b1", "bob", "codex-agent", "responses", "200", "900", "1000", "0", "20", "0", "1020"},
		{day.Add(3 * time.Minute).Format(time.RFC3339Nano), "req_a2", "alice", "codex-chatgpt", "completions", "429", "1", "0", "0", "0", "0", "0"},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Fatalf("csv %q\nwant %q", rows, want)
	}
	code, out, _ = run(t, env, "--start", day.Format(time.RFC3339), "--group-by", "model", "--format", "json")
	var doc usage.Document
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || len(doc.Data) != 2 || doc.Data[0].Model != "codex-agent" || doc.Data[1].Requests != 2 {
		t.Fatalf("json: exit %d %s", code, out)
	}
}

func TestCallerSeesOwnUsageWithTheTokenFile(t *testing.T) {
	st, day := frontDoor(t)
	env := tokenEnv(t, st, "alice", llmapi.Scope)
	tokenFile, err := busconfig.TokenFile(busconfig.MapEnv(env))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(tokenFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte(env["BUS_API_TOKEN"]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	delete(env, "BUS_API_TOKEN") // the token file is used
	code, out, errOut := run(t, env, "--start", day.Format(time.RFC3339), "--group-by", "request", "--format", "csv")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if strings.Count(out, "\n") != 3 || strings.Contains(out, "bob") || !strings.Contains(out, "req_a1") || !strings.Contains(out, "req_a2") {
		t.Fatalf("alice's requests: %s", out)
	}
	code, out, _ = run(t, env, "--start", day.Format(time.RFC3339), "--group-by", "none")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || !strings.HasPrefix(out, "Usage of identity alice") || len(lines) != 4 ||
		!reflect.DeepEqual(strings.Fields(lines[3]), []string{"2", "321", "100", "12", "5", "333"}) {
		t.Fatalf("alice's total: %s", out)
	}
	// Another identity's usage needs the admin scope: the server's 403, one line.
	code, _, errOut = run(t, env, "--identity", "bob")
	if code != cliutil.ExitFailure || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "403 insufficient_scope") {
		t.Fatalf("exit %d: %q", code, errOut)
	}
}

func TestUsageErrors(t *testing.T) {
	st, _ := frontDoor(t)
	env := tokenEnv(t, st, "ops", auth.ScopeLLMAdmin)
	noToken := map[string]string{"BUS_CONFIG_DIR": t.TempDir(), "BUS_LLM_URL": st.BaseURL}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"format", env, []string{"--format", "xml"}, cliutil.ExitUsage, "--format must be table, csv or json"},
		{"group by", env, []string{"--group-by", "week"}, cliutil.ExitUsage, "--group-by"},
		{"start", env, []string{"--start", "yesterday"}, cliutil.ExitUsage, "--start"},
		{"limit", env, []string{"--limit", "-1"}, cliutil.ExitUsage, "--limit"},
		{"url", env, []string{"--url", "ftp://x"}, cliutil.ExitUsage, "--url"},
		{"argument", env, []string{"show"}, cliutil.ExitUsage, `unexpected argument "show"`},
		{"no token", noToken, nil, cliutil.ExitUsage, "no token: set BUS_API_TOKEN or write one to"},
		{"end before start", env, []string{"--start", "2024-02-01", "--end", "2024-01-01"}, cliutil.ExitFailure, "400 invalid_value: 'end' must be after 'start'"},
		{"bad token", map[string]string{"BUS_API_TOKEN": "nope", "BUS_LLM_URL": st.BaseURL}, nil, cliutil.ExitFailure, "401 invalid_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run(t, tc.env, tc.args...)
			if code != tc.code || out != "" || strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, usagecmd.Name+": ") || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
			}
			if tok := tc.env["BUS_API_TOKEN"]; tok != "" && strings.Contains(errOut, tok) {
				t.Fatal("the error shows the token")
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	addr, err := testproc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	code, _, errOut := run(t, map[string]string{"BUS_API_TOKEN": "x", "BUS_LLM_URL": "http://" + addr + "/v1"})
	if code != cliutil.ExitFailure || !strings.Contains(errOut, "GET http://"+addr+"/v1/usage") || bytes.Count([]byte(errOut), []byte("\n")) != 1 {
		t.Fatalf("exit %d: %q", code, errOut)
	}
}
