package appserver_test

// Tests against the real codex binary (located by fakemodel.CodexCommand;
// skipped when absent) talking to the fake Responses API on loopback.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
	"github.com/busdk/bus-integration-codex/pkg/appserver"
)

// testTimeout bounds every test's context so a bug fails instead of hanging.
const testTimeout = 60 * time.Second

type env struct {
	fm  *fakemodel.Server
	cfg appserver.Config
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cmd := fakemodel.CodexCommand(t)
	fm := fakemodel.New(t)
	home := fm.WriteCodexHome(t)
	return &env{fm: fm, cfg: appserver.Config{
		Command: cmd,
		Env:     []string{"CODEX_HOME=" + home},
		Logger:  testLogger(t),
	}}
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("BUS_TEST_DEBUG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) start(t *testing.T) *appserver.Process {
	t.Helper()
	p, err := appserver.Start(context.Background(), e.cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func TestPlainReplyStreamsDeltasAndUsage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	usage := fakemodel.Usage{InputTokens: 1234, CachedTokens: 200, OutputTokens: 56, ReasoningTokens: 7, TotalTokens: 1290}
	deltas := []string{"Hel", "lo, ", "wor", "ld!"}
	e.fm.SetReply(fakemodel.Reply{Deltas: deltas, Usage: usage})
	p := e.start(t)

	var (
		gotDeltas []string
		kinds     []appserver.EventKind
		usageEvs  int
	)
	res, err := p.Run(testCtx(t), appserver.RunRequest{
		Cwd:   t.TempDir(),
		Input: []appserver.UserInput{appserver.TextInput("say hello")},
		OnEvent: func(ev appserver.Event) {
			kinds = append(kinds, ev.Kind)
			switch ev.Kind {
			case appserver.EventAgentMessageDelta:
				gotDeltas = append(gotDeltas, ev.Delta)
			case appserver.EventTokenUsage:
				usageEvs++
			}
		},
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Status != appserver.StatusCompleted {
		t.Fatalf("status = %q", res.Status)
	}
	if strings.Join(gotDeltas, "|") != strings.Join(deltas, "|") {
		t.Fatalf("deltas = %q, want %q", gotDeltas, deltas)
	}
	if res.Text != "Hello, world!" {
		t.Fatalf("text = %q", res.Text)
	}
	if res.ThreadID == "" || res.TurnID == "" {
		t.Fatalf("missing ids: %+v", res)
	}
	// Order: deltas, then the completed agent message, then turn/completed last.
	lastDelta, completedMsg := -1, -1
	for i, k := range kinds {
		if k == appserver.EventAgentMessageDelta {
			lastDelta = i
		}
		if k == appserver.EventItemCompleted && completedMsg < 0 && i > lastDelta && lastDelta >= 0 {
			completedMsg = i
		}
	}
	if completedMsg < 0 || kinds[len(kinds)-1] != appserver.EventTurnCompleted {
		t.Fatalf("event order wrong: %v", kinds)
	}
	if !res.HasUsage || usageEvs == 0 {
		t.Fatalf("no usage reported")
	}
	want := appserver.TokenUsageBreakdown{InputTokens: 1234, CachedInputTokens: 200, OutputTokens: 56, ReasoningOutputTokens: 7, TotalTokens: 1290}
	if res.Usage.Last != want || res.Usage.Total != want {
		t.Fatalf("usage = %+v, want last=total=%+v", res.Usage, want)
	}
}

func TestInstructionsHistoryAndImagesReachModel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.fm.SetReply(fakemodel.Reply{Text: "answer two"})
	p := e.start(t)
	const dataURL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="

	res, err := p.Run(testCtx(t), appserver.RunRequest{
		Cwd:                   t.TempDir(),
		DeveloperInstructions: "DEV-MARKER follow the house style",
		History: []any{
			appserver.MessageItem("user", "question one"),
			appserver.MessageItem("assistant", "answer one"),
			appserver.FunctionCallItem("call_a", "lookup", `{"q":"x"}`),
			appserver.FunctionCallOutputItem("call_a", "lookup result"),
		},
		Input: []appserver.UserInput{appserver.TextInput("question two"), appserver.ImageInput(dataURL)},
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Text != "answer two" {
		t.Fatalf("text = %q", res.Text)
	}
	reqs := e.fm.Requests()
	if len(reqs) != 1 {
		t.Fatalf("model requests = %d", len(reqs))
	}
	msgs := reqs[0].Messages()
	idx := func(role, substr string) int {
		for i, m := range msgs {
			if m.Role == role && strings.Contains(m.Text, substr) {
				return i
			}
		}
		return -1
	}
	dev, q1, a1, q2 := idx("developer", "DEV-MARKER"), idx("user", "question one"), idx("assistant", "answer one"), idx("user", "question two")
	if dev < 0 || q1 < 0 || a1 < 0 || q2 < 0 || !(dev < q1 && q1 < a1 && a1 < q2) {
		t.Fatalf("messages out of order (dev=%d q1=%d a1=%d q2=%d): %+v", dev, q1, a1, q2, msgs)
	}
	if m := msgs[q1]; m.Text != "question one" {
		t.Fatalf("history flattened: %q", m.Text)
	}
	calls, outs := reqs[0].ItemsOfType("function_call"), reqs[0].ItemsOfType("function_call_output")
	if len(calls) != 1 || calls[0]["name"] != "lookup" || len(outs) != 1 || outs[0]["call_id"] != "call_a" {
		t.Fatalf("function call history = %v / %v", calls, outs)
	}
	if !strings.Contains(string(reqs[0].Body), dataURL) {
		t.Fatalf("image data URL did not reach the model")
	}
}

func TestEmptyInputAfterHistoryAnswersLastMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.fm.SetHandler(func(r fakemodel.Request) fakemodel.Reply {
		return fakemodel.Reply{Text: "echo: " + r.LastUserText()}
	})
	p := e.start(t)
	res, err := p.Run(testCtx(t), appserver.RunRequest{
		History: []any{
			appserver.MessageItem("user", "first"),
			appserver.MessageItem("assistant", "ok"),
			appserver.MessageItem("user", "second"),
		},
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Text != "echo: second" {
		t.Fatalf("text = %q", res.Text)
	}
}

func TestOutputSchemaReachesModel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.fm.SetReply(fakemodel.Reply{Text: `{"answer":"42"}`})
	p := e.start(t)
	schema := json.RawMessage(`{"type":"object","properties":{"answer":{"type":"string"}},"required":["answer"],"additionalProperties":false}`)
	res, err := p.Run(testCtx(t), appserver.RunRequest{
		Input:        []appserver.UserInput{appserver.TextInput("answer")},
		OutputSchema: schema,
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Text != `{"answer":"42"}` {
		t.Fatalf("text = %q", res.Text)
	}
	f := e.fm.Requests()[0].TextFormat()
	if f == nil || f["type"] != "json_schema" {
		t.Fatalf("text.format = %v", f)
	}
	got, _ := json.Marshal(f["schema"])
	var gotV, wantV any
	_ = json.Unmarshal(got, &gotV)
	_ = json.Unmarshal(schema, &wantV)
	if fmt.Sprint(gotV) != fmt.Sprint(wantV) {
		t.Fatalf("schema = %s, want %s", got, schema)
	}
}

func TestModelErrorsFailTurnWithErrorInfo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.start(t)
	// What codex-cli 0.169.0 reports for a custom (non-OpenAI-auth)
	// responses provider with retries disabled.
	cases := []struct {
		name   string
		reply  fakemodel.Reply
		kind   string
		status int
	}{
		{"401", fakemodel.Reply{Status: 401}, appserver.KindHTTPConnectionFailed, 401},
		{"429", fakemodel.Reply{Status: 429}, appserver.KindResponseTooManyFailedAttempts, 429},
		{"429 quota", fakemodel.Reply{Status: 429, ErrorType: "insufficient_quota", ErrorCode: "insufficient_quota"}, appserver.KindUsageLimitExceeded, 0},
		{"500", fakemodel.Reply{Status: 500}, appserver.KindInternalServerError, 0},
		{"400", fakemodel.Reply{Status: 400, ErrorMessage: "bad thing"}, appserver.KindOther, 0},
	}
	for _, c := range cases {
		e.fm.SetReply(c.reply)
		var errEvents int
		res, err := p.Run(testCtx(t), appserver.RunRequest{
			Input: []appserver.UserInput{appserver.TextInput("hi")},
			OnEvent: func(ev appserver.Event) {
				if ev.Kind == appserver.EventError {
					errEvents++
				}
			},
		})
		var te *appserver.TurnError
		if !errors.As(err, &te) {
			t.Fatalf("%s: err = %v, want *TurnError", c.name, err)
		}
		if res == nil || res.Status != appserver.StatusFailed || res.Error == nil {
			t.Fatalf("%s: result = %+v", c.name, res)
		}
		if te.Kind != c.kind || te.HTTPStatus != c.status {
			t.Fatalf("%s: kind=%q http=%d (%s), want %q %d", c.name, te.Kind, te.HTTPStatus, te.Info, c.kind, c.status)
		}
		if te.Message == "" || te.TurnID != res.TurnID {
			t.Fatalf("%s: turn error = %+v", c.name, te)
		}
		t.Logf("%s: %v (error events: %d)", c.name, te, errEvents)
	}
	if !p.Alive() {
		t.Fatalf("process died on model errors")
	}
}

func TestTimeoutInterruptsTurn(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	hold := make(chan struct{})
	defer close(hold)
	e.fm.SetReply(fakemodel.Reply{Text: "this reply never finishes", Hold: hold})
	p := e.start(t)

	// Cancel as soon as streaming has visibly started.
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	res, err := p.Run(ctx, appserver.RunRequest{
		Input: []appserver.UserInput{appserver.TextInput("hi")},
		OnEvent: func(ev appserver.Event) {
			if ev.Kind == appserver.EventAgentMessageDelta {
				cancel()
			}
		},
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if res == nil || res.Status != appserver.StatusInterrupted {
		t.Fatalf("turn not interrupted: %+v", res)
	}

	// A real deadline: the held stream never completes.
	dctx, dcancel := context.WithTimeout(testCtx(t), 1500*time.Millisecond)
	defer dcancel()
	res, err = p.Run(dctx, appserver.RunRequest{Input: []appserver.UserInput{appserver.TextInput("hi")}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if res == nil || res.Status != appserver.StatusInterrupted {
		t.Fatalf("turn not interrupted: %+v", res)
	}
	// The process still serves.
	e.fm.SetReply(fakemodel.Reply{Text: "fine"})
	res, err = p.Run(testCtx(t), appserver.RunRequest{Input: []appserver.UserInput{appserver.TextInput("hi")}})
	if err != nil || res.Text != "fine" {
		t.Fatalf("after interrupt: %v %+v", err, res)
	}
}

func TestShellCommandIsDeclinedAndNotRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	target := filepath.Join(dir, "created-by-model")
	e.fm.Enqueue(fakemodel.Reply{ShellCommand: "touch " + target}, fakemodel.Reply{Text: "could not run it"})
	p := e.start(t)

	var mu sync.Mutex
	var methods []string
	res, err := p.Run(testCtx(t), appserver.RunRequest{
		Cwd:            dir,
		ApprovalPolicy: appserver.ApprovalUntrusted,
		Sandbox:        appserver.SandboxWorkspaceWrite, // even a writable sandbox must not help
		Handler: appserver.HandlerFunc(func(ctx context.Context, r *appserver.ServerRequest) (any, error) {
			mu.Lock()
			methods = append(methods, r.Method)
			mu.Unlock()
			return appserver.Deny(ctx, r)
		}),
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("command ran: stat err = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(methods) != 1 || methods[0] != appserver.MethodCommandApproval {
		t.Fatalf("server requests = %v", methods)
	}
	var declined bool
	for _, it := range res.Items {
		if it.Type == "commandExecution" && strings.Contains(string(it.Raw), `"status":"declined"`) {
			declined = true
		}
	}
	if !declined {
		t.Fatalf("no declined commandExecution item in %d items", len(res.Items))
	}
	reqs := e.fm.Requests()
	outs := reqs[len(reqs)-1].ItemsOfType("function_call_output")
	if len(outs) != 1 || !strings.Contains(fmt.Sprint(outs[0]["output"]), "rejected") {
		t.Fatalf("model was not told the command was rejected: %v", outs)
	}
	if res.Text != "could not run it" {
		t.Fatalf("text = %q", res.Text)
	}
}

func TestDefaultHandlerDeclinesShellCommand(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	target := filepath.Join(dir, "nope")
	e.fm.Enqueue(fakemodel.Reply{ShellCommand: "touch " + target}, fakemodel.Reply{Text: "ok"})
	p := e.start(t)
	if _, err := p.Run(testCtx(t), appserver.RunRequest{Cwd: dir}); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("command ran: stat err = %v", err)
	}
}

func TestDynamicToolCallReachesHandler(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.fm.Enqueue(
		fakemodel.Reply{FunctionCalls: []fakemodel.FunctionCall{
			{Name: "get_weather", CallID: "call_w1", Arguments: `{"city":"Oulu"}`},
			{Name: "get_weather", CallID: "call_w2", Arguments: `{"city":"Turku"}`},
		}},
		fakemodel.Reply{Text: "both sunny"},
	)
	p := e.start(t)

	var mu sync.Mutex
	got := map[string]string{}
	res, err := p.Run(testCtx(t), appserver.RunRequest{
		Input: []appserver.UserInput{appserver.TextInput("weather?")},
		DynamicTools: []appserver.DynamicTool{{
			Name:        "get_weather",
			Description: "Current weather for a city",
			InputSchema: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`),
		}},
		Handler: appserver.ToolHandler(func(ctx context.Context, c *appserver.ToolCall) (appserver.ToolResult, error) {
			var args struct{ City string }
			if err := json.Unmarshal(c.Arguments, &args); err != nil {
				return appserver.ToolResult{}, err
			}
			mu.Lock()
			got[c.CallID] = c.Tool + ":" + args.City
			mu.Unlock()
			return appserver.TextToolResult(true, "sunny in "+args.City), nil
		}),
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got["call_w1"] != "get_weather:Oulu" || got["call_w2"] != "get_weather:Turku" {
		t.Fatalf("tool calls = %v", got)
	}
	reqs := e.fm.Requests()
	if tool := reqs[0].Tool("get_weather"); tool == nil {
		t.Fatalf("dynamic tool not offered: %v", reqs[0].ToolNames())
	}
	outs := reqs[len(reqs)-1].ItemsOfType("function_call_output")
	var texts []string
	for _, o := range outs {
		texts = append(texts, fmt.Sprint(o["output"]))
	}
	if joined := strings.Join(texts, ","); !strings.Contains(joined, "sunny in Oulu") || !strings.Contains(joined, "sunny in Turku") {
		t.Fatalf("tool outputs = %v", texts)
	}
	if res.Text != "both sunny" {
		t.Fatalf("text = %q", res.Text)
	}
}

func TestKilledProcessFailsRunAndPoolRecovers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	hold := make(chan struct{})
	defer close(hold)
	e.fm.SetReply(fakemodel.Reply{Text: "never finishes", Hold: hold})
	pool, err := appserver.NewPool(context.Background(), appserver.PoolConfig{Process: e.cfg, Size: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	var pgid int
	_, err = pool.Run(testCtx(t), appserver.RunRequest{
		Input: []appserver.UserInput{appserver.TextInput("hi")},
		OnEvent: func(ev appserver.Event) {
			if ev.Kind == appserver.EventAgentMessageDelta && pgid == 0 {
				procs := pool.Processes()
				pgid = procs[0].PID()
				// Crash the process: SIGKILL the command we started.
				if pr, err := os.FindProcess(pgid); err == nil {
					_ = pr.Kill()
				}
			}
		},
	})
	if !errors.Is(err, appserver.ErrProcessExited) {
		t.Fatalf("err = %v, want ErrProcessExited", err)
	}
	if errors.Is(err, appserver.ErrClosed) {
		t.Fatalf("crash reported as Close: %v", err)
	}
	assertGroupGone(t, pgid)

	e.fm.SetReply(fakemodel.Reply{Text: "fresh process"})
	res, err := pool.Run(testCtx(t), appserver.RunRequest{Input: []appserver.UserInput{appserver.TextInput("hi")}})
	if err != nil || res.Text != "fresh process" {
		t.Fatalf("after restart: %v %+v", err, res)
	}
	if st := pool.Stats(); st.Restarts != 1 || st.Starts != 2 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestPoolConcurrentRuns(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.fm.SetHandler(func(r fakemodel.Request) fakemodel.Reply {
		return fakemodel.Reply{Text: "echo " + r.LastUserText(), DelayBetween: 20 * time.Millisecond}
	})
	pool, err := appserver.NewPool(context.Background(), appserver.PoolConfig{Process: e.cfg, Size: 2, Eager: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if n := len(pool.Processes()); n != 2 {
		t.Fatalf("eager pool has %d live processes", n)
	}
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	texts := make([]string, n)
	for i := range n {
		wg.Go(func() {
			res, err := pool.Run(testCtx(t), appserver.RunRequest{Input: []appserver.UserInput{appserver.TextInput("msg-" + strconv.Itoa(i))}})
			errs[i] = err
			if res != nil {
				texts[i] = res.Text
			}
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || texts[i] != "echo msg-"+strconv.Itoa(i) {
			t.Fatalf("run %d: %v %q", i, errs[i], texts[i])
		}
	}
	if st := pool.Stats(); st.Starts != 2 {
		t.Fatalf("stats = %+v", st)
	}
	if err := pool.Shutdown(testCtx(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := pool.Run(testCtx(t), appserver.RunRequest{}); !errors.Is(err, appserver.ErrClosed) {
		t.Fatalf("run after shutdown: %v", err)
	}
}

func TestPoolRetiresProcessAfterMaxRuns(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pool, err := appserver.NewPool(context.Background(), appserver.PoolConfig{Process: e.cfg, Size: 1, MaxRunsPerProcess: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for i := range 3 {
		if _, err := pool.Run(testCtx(t), appserver.RunRequest{Input: []appserver.UserInput{appserver.TextInput("hi")}}); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	if st := pool.Stats(); st.Starts != 2 || st.Retired != 1 || st.Restarts != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestCloseAndCancelKillProcessGroup(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.start(t)
	pgid := p.PID()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(p.Err(), appserver.ErrClosed) {
		t.Fatalf("Err after Close = %v", p.Err())
	}
	assertGroupGone(t, pgid)
	if _, err := p.Run(testCtx(t), appserver.RunRequest{}); !errors.Is(err, appserver.ErrClosed) {
		t.Fatalf("run after close: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	p2, err := appserver.Start(ctx, e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	cancel()
	select {
	case <-p2.Done():
	case <-testCtx(t).Done():
		t.Fatal("process survived its ctx")
	}
	if !errors.Is(p2.Err(), appserver.ErrProcessExited) {
		t.Fatalf("Err = %v", p2.Err())
	}
	assertGroupGone(t, p2.PID())
}

func TestAccountWithFakeProvider(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.start(t)
	acc, err := p.Account(testCtx(t))
	if err != nil {
		t.Fatalf("Account: %v", err)
	}
	if acc.LoggedIn() || acc.RequiresOpenAIAuth || !acc.Ready() {
		t.Fatalf("account = %+v", acc)
	}
	if p.Info().CodexHome == "" || p.Info().UserAgent == "" {
		t.Fatalf("info = %+v", p.Info())
	}
}

func TestNotInstalled(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"bus-no-such-codex-command", filepath.Join(t.TempDir(), "codex")} {
		_, err := appserver.Start(context.Background(), appserver.Config{Command: cmd})
		if !errors.Is(err, appserver.ErrNotInstalled) {
			t.Fatalf("%s: err = %v, want ErrNotInstalled", cmd, err)
		}
		if !strings.Contains(err.Error(), cmd) {
			t.Fatalf("error does not name the command: %v", err)
		}
		pool, err := appserver.NewPool(context.Background(), appserver.PoolConfig{Process: appserver.Config{Command: cmd}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Run(context.Background(), appserver.RunRequest{}); !errors.Is(err, appserver.ErrNotInstalled) {
			t.Fatalf("pool: err = %v", err)
		}
		_ = pool.Close()
	}
}

// assertGroupGone checks (Linux) that no process of group pgid is left,
// waiting a little for the kernel to reap what was killed.
func assertGroupGone(t *testing.T, pgid int) {
	t.Helper()
	if runtime.GOOS != "linux" || pgid <= 0 {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := testproc.GroupMembers(pgid)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes of group %d still alive: %v", pgid, left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A finished run's thread is unloaded at once: nothing stays loaded for
// Codex's default 60 s.
func TestFinishedThreadsAreUnloaded(t *testing.T) {
	e := newEnv(t)
	p := e.start(t)
	for range 3 {
		if _, err := p.Run(testCtx(t), appserver.RunRequest{Input: []appserver.UserInput{appserver.TextInput("hi")}}); err != nil {
			t.Fatal(err)
		}
	}
	loaded := func() []string {
		var res struct {
			Data []string `json:"data"`
		}
		if err := p.Call(testCtx(t), "thread/loaded/list", map[string]any{}, &res); err != nil {
			t.Fatal(err)
		}
		return res.Data
	}
	// Codex's default keeps them 60 s; half of that is a generous bound
	// for "at once" that still tells the two apart.
	deadline := time.Now().Add(30 * time.Second)
	for l := loaded(); len(l) > 0; l = loaded() {
		if time.Now().After(deadline) {
			t.Fatalf("threads still loaded: %v", l)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
