package appserver

// Tests against a scripted fake app-server: the test binary itself, re-run
// as `<test binary> app-server` with BUS_APPSERVER_FAKE set. They need no
// codex binary and cover protocol edges the real binary rarely shows.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
)

const (
	envFake      = "BUS_APPSERVER_FAKE"        // set: act as the fake server
	envFakeDieOn = "BUS_APPSERVER_FAKE_DIE_ON" // exit(3) on receiving this method
	envFakeSpawn = "BUS_APPSERVER_FAKE_SPAWN"  // "1": spawn a grandchild first
)

func TestMain(m *testing.M) {
	if os.Getenv(envFake) != "" {
		os.Exit(fakeServer())
	}
	os.Exit(m.Run())
}

// fakeServerRequests are the server requests the fake sends in every turn.
func fakeServerRequests() []string {
	return []string{
		MethodCommandApproval, MethodFileChangeApproval, MethodPermissionsApproval,
		MethodToolUserInput, MethodMCPElicitation, MethodDynamicToolCall,
		MethodAuthTokensRefresh, MethodAttestationGenerate,
		MethodLegacyApplyPatch, MethodLegacyExecCommand, "weird/unknownRequest",
	}
}

func fakeServer() int {
	fmt.Fprintln(os.Stderr, "fake app-server starting")
	if os.Getenv(envFakeSpawn) == "1" {
		c := exec.Command("sleep", "300")
		if err := c.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "spawn:", err)
			return 2
		}
	}
	in := bufio.NewReader(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	read := func() (map[string]json.RawMessage, bool) {
		for {
			line, err := in.ReadBytes('\n')
			if err != nil {
				return nil, false
			}
			var m map[string]json.RawMessage
			if json.Unmarshal(line, &m) == nil {
				return m, true
			}
		}
	}
	send := func(v any) { _ = out.Encode(v) }
	threads := 0
	for {
		m, ok := read()
		if !ok {
			return 0
		}
		var method string
		_ = json.Unmarshal(m["method"], &method)
		id := m["id"]
		if method != "" && method == os.Getenv(envFakeDieOn) {
			return 3
		}
		switch method {
		case "initialize":
			send(map[string]any{"id": id, "result": map[string]any{"userAgent": "fake/1", "codexHome": "/nowhere", "platformFamily": "unix", "platformOs": "linux"}})
		case "thread/start":
			threads++
			send(map[string]any{"id": id, "result": map[string]any{"thread": map[string]any{"id": "thr-" + strconv.Itoa(threads)}}})
		case "turn/start":
			var p struct {
				ThreadID string `json:"threadId"`
			}
			_ = json.Unmarshal(m["params"], &p)
			tid, turn := p.ThreadID, "turn-"+p.ThreadID
			send(map[string]any{"id": id, "result": map[string]any{"turn": map[string]any{"id": turn, "status": "inProgress", "items": []any{}}}})
			// Noise that must be ignored.
			_, _ = os.Stdout.WriteString("this is not json\n")
			send(map[string]any{"method": "totally/unknown", "params": map[string]any{"threadId": tid, "x": 1}})
			send(map[string]any{"method": "another/unknown"})
			send(map[string]any{"method": "item/agentMessage/delta", "params": map[string]any{"threadId": tid, "turnId": turn, "itemId": "m1", "delta": "answers:"}})
			if os.Getenv(envFakeDieOn) == "mid-turn" {
				return 3
			}
			// Every server request, with numeric and string ids.
			answers := map[string]json.RawMessage{}
			byID := map[string]string{}
			for i, meth := range fakeServerRequests() {
				var rid any = 1000 + i
				if i%2 == 1 {
					rid = "srv-" + strconv.Itoa(i)
				}
				b, _ := json.Marshal(rid)
				byID[string(b)] = meth
				send(map[string]any{"id": rid, "method": meth, "params": map[string]any{"threadId": tid, "turnId": turn, "itemId": "item-" + strconv.Itoa(i), "callId": "c", "tool": "t", "arguments": map[string]any{}}})
			}
			for len(answers) < len(fakeServerRequests()) {
				r, ok := read()
				if !ok {
					return 0
				}
				if meth, ok := byID[string(r["id"])]; ok {
					b, _ := json.Marshal(r)
					answers[meth] = b
				}
			}
			text, _ := json.Marshal(answers)
			send(map[string]any{"method": "item/completed", "params": map[string]any{"threadId": tid, "turnId": turn, "item": map[string]any{"type": "agentMessage", "id": "m1", "text": string(text)}}})
			send(map[string]any{"method": "thread/tokenUsage/updated", "params": map[string]any{"threadId": tid, "turnId": turn, "tokenUsage": map[string]any{
				"last":  map[string]any{"inputTokens": 3, "cachedInputTokens": 1, "outputTokens": 2, "reasoningOutputTokens": 0, "totalTokens": 5},
				"total": map[string]any{"inputTokens": 3, "cachedInputTokens": 1, "outputTokens": 2, "reasoningOutputTokens": 0, "totalTokens": 5},
			}}})
			send(map[string]any{"method": "turn/completed", "params": map[string]any{"threadId": tid, "turn": map[string]any{"id": turn, "status": "completed", "items": []any{}}}})
		default:
			if len(id) > 0 {
				send(map[string]any{"id": id, "result": map[string]any{}})
			}
		}
	}
}

func startFake(t *testing.T, env ...string) *Process {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The process lives as long as Start's ctx: use the test's context.
	p, err := Start(t.Context(), Config{Command: exe, Env: append([]string{envFake + "=1"}, env...)})
	if err != nil {
		t.Fatalf("Start fake: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func fakeCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestFakeDenyAnswersEveryServerRequest(t *testing.T) {
	t.Parallel()
	p := startFake(t)
	if p.Info().UserAgent != "fake/1" {
		t.Fatalf("info = %+v", p.Info())
	}
	var other int
	res, err := p.Run(fakeCtx(t), RunRequest{
		Input: []UserInput{TextInput("go")},
		OnEvent: func(ev Event) {
			if ev.Kind == EventNotification {
				other++
			}
		},
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if other != 1 { // totally/unknown (with threadId) passes through; the rest is dropped
		t.Fatalf("unknown notifications passed through: %d", other)
	}
	var answers map[string]struct {
		Result json.RawMessage `json:"result"`
		Error  *RPCError       `json:"error"`
		ID     json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal([]byte(res.Text), &answers); err != nil {
		t.Fatalf("answers %q: %v", res.Text, err)
	}
	wantResult := map[string]string{
		MethodCommandApproval:     `{"decision":"decline"}`,
		MethodFileChangeApproval:  `{"decision":"decline"}`,
		MethodPermissionsApproval: `{"permissions":{},"scope":"turn"}`,
		MethodToolUserInput:       `{"answers":{}}`,
		MethodMCPElicitation:      `{"action":"decline"}`,
		MethodDynamicToolCall:     `{"success":false,"contentItems":[{"type":"inputText","text":"tool calls are not available in this session"}]}`,
		MethodLegacyApplyPatch:    `{"decision":"denied"}`,
		MethodLegacyExecCommand:   `{"decision":"denied"}`,
	}
	for meth, want := range wantResult {
		a := answers[meth]
		if a.Error != nil || string(a.Result) != want {
			t.Errorf("%s: result %s error %v, want %s", meth, a.Result, a.Error, want)
		}
	}
	wantErr := map[string]int{
		MethodAuthTokensRefresh:   CodeRequestDenied,
		MethodAttestationGenerate: CodeRequestDenied,
		"weird/unknownRequest":    CodeMethodNotFound,
	}
	for meth, code := range wantErr {
		if a := answers[meth]; a.Error == nil || a.Error.Code != code {
			t.Errorf("%s: error %+v, want code %d", meth, a.Error, code)
		}
	}
	if !res.HasUsage || res.Usage.Total.TotalTokens != 5 {
		t.Errorf("usage = %+v", res.Usage)
	}
}

func TestFakeCustomHandlerErrorsAndPanicsAreAnswered(t *testing.T) {
	t.Parallel()
	p := startFake(t)
	res, err := p.Run(fakeCtx(t), RunRequest{
		Handler: HandlerFunc(func(ctx context.Context, r *ServerRequest) (any, error) {
			switch r.Method {
			case MethodCommandApproval:
				panic("boom")
			case MethodFileChangeApproval:
				return nil, errors.New("plain failure")
			case MethodDynamicToolCall:
				c, err := r.ToolCall()
				if err != nil || c.Tool != "t" || r.ThreadID == "" || r.TurnID == "" || r.ItemID == "" {
					return nil, fmt.Errorf("bad request: %+v %v", r, err)
				}
				return TextToolResult(true, "ok"), nil
			}
			return Deny(ctx, r)
		}),
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var answers map[string]struct {
		Result json.RawMessage `json:"result"`
		Error  *RPCError       `json:"error"`
	}
	if err := json.Unmarshal([]byte(res.Text), &answers); err != nil {
		t.Fatal(err)
	}
	if a := answers[MethodCommandApproval]; a.Error == nil || a.Error.Code != CodeInternalError {
		t.Errorf("panic: %+v", a)
	}
	if a := answers[MethodFileChangeApproval]; a.Error == nil || a.Error.Message != "plain failure" {
		t.Errorf("error: %+v", a)
	}
	if a := answers[MethodDynamicToolCall]; string(a.Result) != `{"success":true,"contentItems":[{"type":"inputText","text":"ok"}]}` {
		t.Errorf("tool: %s %+v", a.Result, a.Error)
	}
}

func TestFakeProcessDeathFailsInFlightCalls(t *testing.T) {
	t.Parallel()
	for _, dieOn := range []string{"thread/start", "mid-turn"} {
		p := startFake(t, envFakeDieOn+"="+dieOn)
		_, err := p.Run(fakeCtx(t), RunRequest{Input: []UserInput{TextInput("go")}})
		if !errors.Is(err, ErrProcessExited) || errors.Is(err, ErrClosed) {
			t.Fatalf("%s: err = %v, want ErrProcessExited", dieOn, err)
		}
		<-p.Done()
		if _, err := p.Run(fakeCtx(t), RunRequest{}); !errors.Is(err, ErrProcessExited) {
			t.Fatalf("%s: run after death: %v", dieOn, err)
		}
		if err := p.Call(fakeCtx(t), "x/y", nil, nil); !errors.Is(err, ErrProcessExited) {
			t.Fatalf("%s: call after death: %v", dieOn, err)
		}
		if !strings.Contains(p.Stderr(), "fake app-server starting") {
			t.Fatalf("stderr not captured: %q", p.Stderr())
		}
	}
}

func TestFakeCloseKillsGrandchildren(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("process groups checked via /proc")
	}
	p := startFake(t, envFakeSpawn+"=1")
	pgid := p.PID()
	if n := len(testproc.GroupMembers(pgid)); n < 2 {
		t.Fatalf("expected the fake and its grandchild in group %d, found %d", pgid, n)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(testproc.GroupMembers(pgid)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("group %d survived Close: %v", pgid, testproc.GroupMembers(pgid))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFakeShutdownDrainsRuns(t *testing.T) {
	t.Parallel()
	p := startFake(t)
	if err := p.Shutdown(fakeCtx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Run(fakeCtx(t), RunRequest{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("run after shutdown: %v", err)
	}
}

func TestParseErrorInfo(t *testing.T) {
	cases := []struct {
		in     string
		kind   string
		status int
	}{
		{`"unauthorized"`, "unauthorized", 0},
		{`{"httpConnectionFailed":{"httpStatusCode":401}}`, "httpConnectionFailed", 401},
		{`{"responseTooManyFailedAttempts":{"httpStatusCode":null}}`, "responseTooManyFailedAttempts", 0},
		{`{"activeTurnNotSteerable":{"turnKind":"review"}}`, "activeTurnNotSteerable", 0},
		{`42`, "", 0},
	}
	for _, c := range cases {
		k, s := parseErrorInfo(json.RawMessage(c.in))
		if k != c.kind || s != c.status {
			t.Errorf("%s: %q %d", c.in, k, s)
		}
	}
	w := &wireTurnError{Message: "m", CodexErrorInfo: json.RawMessage(`null`)}
	if e := w.toError("t", "u"); e.Kind != "" || e.Info != nil || !strings.Contains(e.Error(), "m") {
		t.Errorf("null info: %+v", e)
	}
}

func TestRingBufferKeepsTail(t *testing.T) {
	r := newRingBuffer(8)
	_, _ = r.Write([]byte("abcdef"))
	_, _ = r.Write([]byte("ghij"))
	if got := r.String(); got != "cdefghij" {
		t.Fatalf("got %q", got)
	}
	_, _ = r.Write([]byte("0123456789"))
	if got := r.String(); got != "23456789" {
		t.Fatalf("got %q", got)
	}
}
