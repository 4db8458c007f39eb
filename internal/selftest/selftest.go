// Package selftest is bus-integration-codex --self-test: it starts an
// in-process Events API and a worker on the static provider, sends every
// operation through the real loopback HTTP path, streaming and not, checks
// each answer, and prints a short report.
package selftest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/busdk/bus-integration-codex/internal/contract"
	"github.com/busdk/bus-integration-codex/internal/correlator"
	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/localbus"
	"github.com/busdk/bus-integration-codex/internal/provider/static"
	"github.com/busdk/bus-integration-codex/internal/worker"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Case is one round trip of the self-test.
type Case struct {
	Op     llmapi.Operation
	Stream bool
	Body   string
	// Want is the answer text the static provider must give.
	Want string
}

// Cases returns the round trips: every operation, plain and streaming.
func Cases() []Case {
	var out []Case
	for _, stream := range []bool{false, true} {
		s := fmt.Sprint(stream)
		out = append(out,
			Case{llmapi.OpChatCompletions, stream, `{"model":"codex-chatgpt","stream":` + s + `,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Reply OK"}]}`, "Echo: Reply OK"},
			Case{llmapi.OpResponses, stream, `{"model":"codex-chatgpt","stream":` + s + `,"instructions":"Be brief.","input":"Reply OK"}`, "Echo: Reply OK"},
			Case{llmapi.OpCompletions, stream, `{"model":"codex-chatgpt","stream":` + s + `,"prompt":"Reply OK"}`, "Echo: Reply OK"},
		)
	}
	return out
}

// Run runs the self-test and writes the report to out. It returns an error
// when any case failed.
func Run(ctx context.Context, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	start := time.Now()
	bus, err := localbus.Start(localbus.Options{})
	if err != nil {
		return err
	}
	defer bus.Close()
	fmt.Fprintf(out, "self-test: Events API (memory backend) at %s\n", bus.URL)

	workerClient, err := bus.Client("self-test-worker", []string{llmapi.Scope})
	if err != nil {
		return err
	}
	svc := contract.Worker("self-test", "self-test")
	ready := make(chan struct{})
	w, err := worker.New(worker.Config{
		Client: workerClient, Executor: &executor.Executor{Provider: static.New()},
		RequestNames: svc.Names(contract.Receive, events.Unicast), CancelNames: svc.Names(contract.Receive, events.Broadcast),
		Group: "self-test", Consumer: "self-test", Concurrency: 4, Timeout: 10 * time.Second, ConnectTimeout: 5 * time.Second,
		Logger: slog.New(slog.DiscardHandler), OnReady: func() { close(ready) },
	})
	if err != nil {
		return err
	}
	wctx, stopWorker := context.WithCancel(ctx)
	werr := make(chan error, 1)
	go func() { werr <- w.Run(wctx) }()
	defer func() { stopWorker(); <-werr }()

	callerClient, err := bus.Client("self-test-caller", []string{llmapi.Scope})
	if err != nil {
		return err
	}
	req := correlator.StartRequester(callerClient, correlator.Options{})
	defer req.Close()
	if err := req.WaitReady(ctx); err != nil {
		return err
	}
	select {
	case <-ready:
	case err := <-werr:
		return fmt.Errorf("worker stopped: %w", err)
	case <-ctx.Done():
		return errors.New("worker did not connect to the Events API")
	}
	fmt.Fprintf(out, "self-test: worker ready on the static provider\n")

	failed := 0
	for _, c := range Cases() {
		t0 := time.Now()
		detail, err := runCase(ctx, req, c)
		mode := "plain"
		if c.Stream {
			mode = "stream"
		}
		if err != nil {
			failed++
			fmt.Fprintf(out, "FAIL %-17s %-6s %v\n", c.Op, mode, err)
			continue
		}
		fmt.Fprintf(out, "ok   %-17s %-6s %6.1fms  %s\n", c.Op, mode, float64(time.Since(t0).Microseconds())/1000, detail)
	}
	total := len(Cases())
	fmt.Fprintf(out, "self-test: %d passed, %d failed (%s)\n", total-failed, failed, time.Since(start).Round(time.Millisecond))
	if failed > 0 {
		return fmt.Errorf("%d of %d self-test cases failed", failed, total)
	}
	return nil
}

func runCase(ctx context.Context, r *correlator.Requester, c Case) (string, error) {
	res, err := r.Do(ctx, llmapi.ExecutionEventRequest{
		Operation: c.Op, Model: "codex-chatgpt", Stream: c.Stream, IdentityID: "self-test", Body: json.RawMessage(c.Body),
	}, correlator.DoOptions{})
	if err != nil {
		return "", err
	}
	resp := res.Response
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, resp.Body)
	}
	text, err := AnswerText(c.Op, resp.Body)
	if err != nil {
		return "", err
	}
	if text != c.Want {
		return "", fmt.Errorf("answer %q, want %q", text, c.Want)
	}
	if resp.Usage == nil || resp.Usage.TotalTokens != resp.Usage.PromptTokens+resp.Usage.CompletionTokens || resp.Usage.CompletionTokens == 0 {
		return "", fmt.Errorf("usage %+v is not consistent", resp.Usage)
	}
	if !c.Stream {
		return fmt.Sprintf("%q, %d tokens", text, resp.Usage.TotalTokens), nil
	}
	streamed, err := StreamedText(c.Op, res.Chunks)
	if err != nil {
		return "", err
	}
	if streamed != c.Want {
		return "", fmt.Errorf("streamed %q, want %q", streamed, c.Want)
	}
	return fmt.Sprintf("%q in %d chunks", streamed, len(res.Chunks)), nil
}

// AnswerText extracts the answer text of a final OpenAI object of op.
func AnswerText(op llmapi.Operation, body json.RawMessage) (string, error) {
	var b struct {
		Object  string `json:"object"`
		Choices []struct {
			Text    string `json:"text"`
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
		Output []struct {
			Type    string `json:"type"`
			Content []struct {
				Text string `json:"text"`
			} `json:"content"`
		} `json:"output"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return "", fmt.Errorf("body is not JSON: %w", err)
	}
	want := map[llmapi.Operation]string{llmapi.OpChatCompletions: "chat.completion", llmapi.OpResponses: "response", llmapi.OpCompletions: "text_completion"}[op]
	if b.Object != want {
		return "", fmt.Errorf("object %q, want %q", b.Object, want)
	}
	switch op {
	case llmapi.OpResponses:
		var sb strings.Builder
		for _, o := range b.Output {
			for _, c := range o.Content {
				sb.WriteString(c.Text)
			}
		}
		return sb.String(), nil
	case llmapi.OpChatCompletions:
		if len(b.Choices) != 1 {
			return "", fmt.Errorf("%d choices, want 1", len(b.Choices))
		}
		return b.Choices[0].Message.Content, nil
	default:
		if len(b.Choices) != 1 {
			return "", fmt.Errorf("%d choices, want 1", len(b.Choices))
		}
		return b.Choices[0].Text, nil
	}
}

// StreamedText checks that chunks are contiguous from seq 0 and end with a
// terminal frame, and returns the text their deltas spell.
func StreamedText(op llmapi.Operation, chunks []llmapi.ExecutionEventChunk) (string, error) {
	if len(chunks) == 0 {
		return "", errors.New("no chunks")
	}
	var sb strings.Builder
	for i, ch := range chunks {
		if ch.Seq != int64(i) {
			return "", fmt.Errorf("chunk %d has seq %d", i, ch.Seq)
		}
		var f struct {
			Type    string `json:"type"`
			Delta   string `json:"delta"`
			Choices []struct {
				Text  string `json:"text"`
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(ch.Data, &f); err != nil {
			return "", fmt.Errorf("chunk %d is not JSON: %w", i, err)
		}
		switch op {
		case llmapi.OpResponses:
			if f.Type == "response.output_text.delta" {
				sb.WriteString(f.Delta)
			}
		default:
			for _, c := range f.Choices {
				sb.WriteString(c.Delta.Content + c.Text)
			}
		}
	}
	if last := chunks[len(chunks)-1]; !llmapi.IsTerminalFrame(op, last.Data, false) {
		return "", fmt.Errorf("last chunk is not terminal: %s", last.Data)
	}
	return sb.String(), nil
}
