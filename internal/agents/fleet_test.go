package agents_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/provider/codex"
	"github.com/busdk/bus-integration-codex/internal/stack"
	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Two workers of one group, each on its own Codex login (its own fake
// model). When the first login's usage limit is exhausted, that request
// gets the 429 and every later one is served by the second worker; once
// the limit has reset, the first worker takes requests again.
func TestExhaustedLoginMovesTrafficToAnotherWorker(t *testing.T) {
	cmd := fakemodel.CodexCommand(t)
	st, err := stack.Start(ctxT(t), stack.Config{Timeout: 60 * time.Second, ConnectTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	type login struct {
		fake   *fakemodel.Server
		worker *stack.Worker
	}
	start := func(name string) login {
		fake := fakemodel.New(t)
		fake.SetReply(fakemodel.Reply{Text: "from " + name})
		p, err := codex.New(context.Background(), codex.Config{Command: cmd, Workdir: t.TempDir(),
			Env: []string{"CODEX_HOME=" + fake.WriteCodexHome(t)}, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		w, err := st.AddWorker(ctxT(t), stack.WorkerConfig{Executor: &executor.Executor{Provider: p, Catalog: catalog.Default()},
			Release: p.Close, Consumer: name, Concurrency: 4})
		if err != nil {
			t.Fatal(err)
		}
		return login{fake, w}
	}
	first, second := start("first"), start("second")

	tok, err := st.IssueToken("team", llmapi.Scope)
	if err != nil {
		t.Fatal(err)
	}
	client := openai.NewClient(option.WithBaseURL(st.URL), option.WithAPIKey(tok), option.WithMaxRetries(0),
		option.WithHTTPClient(&http.Client{Timeout: 90 * time.Second}))
	ask := func(i int) (string, error) {
		c, err := client.Chat.Completions.New(ctxT(t), openai.ChatCompletionNewParams{Model: model,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(fmt.Sprint("question ", i))}})
		if err != nil {
			return "", err
		}
		return c.Choices[0].Message.Content, nil
	}

	// The first login answers until its usage limit is reached.
	reset := time.Now().Add(6 * time.Second)
	first.fake.SetReply(fakemodel.Reply{Status: 429, ErrorType: "usage_limit_reached", ErrorMessage: "The usage limit has been reached",
		ErrorFields: map[string]any{"resets_at": reset.Unix()},
		Headers:     map[string]string{"x-codex-primary-used-percent": "100", "x-codex-primary-window-minutes": "300", "x-codex-primary-reset-at": fmt.Sprint(reset.Unix())}})
	limited := -1
	for i := 0; i < 40 && limited < 0; i++ {
		if _, err := ask(i); err != nil {
			apiErr, ok := err.(*openai.Error)
			if !ok || apiErr.StatusCode != http.StatusTooManyRequests || apiErr.Code != "insufficient_quota" {
				t.Fatalf("request %d: %v", i, err)
			}
			if ra := apiErr.Response.Header.Get("retry-after"); ra == "" {
				t.Fatalf("429 without retry-after: %v", apiErr.Response.Header)
			}
			limited = i
		}
	}
	if limited < 0 {
		t.Fatal("no request reached the first login in 40 tries")
	}
	if ready, why := first.worker.Readiness(); ready || why != "usage_limit" {
		t.Fatalf("first worker readiness %v %q after its 429", ready, why)
	}
	// Every later request is served, by the second login.
	for i := range 10 {
		text, err := ask(100 + i)
		if err != nil || text != "from second" {
			t.Fatalf("request %d after the 429: %q, %v", i, text, err)
		}
	}
	// The limit resets: the first worker takes requests again.
	first.fake.SetReply(fakemodel.Reply{Text: "from first"})
	deadline := time.Now().Add(60 * time.Second)
	for ready, _ := first.worker.Readiness(); !ready; ready, _ = first.worker.Readiness() {
		if time.Now().After(deadline) {
			t.Fatal("the first worker did not resume after its reset")
		}
		time.Sleep(50 * time.Millisecond)
	}
	served := map[string]int{}
	for i := 0; i < 60 && served["from first"] == 0; i++ {
		text, err := ask(200 + i)
		if err != nil {
			t.Fatalf("after the reset: %v", err)
		}
		served[text]++
	}
	if served["from first"] == 0 {
		t.Fatalf("the first worker served none after its reset: %v", served)
	}
	if n := len(second.fake.Requests()); n < 10 {
		t.Fatalf("the second login's model saw %d requests, want at least the 10 after the 429", n)
	}
}
