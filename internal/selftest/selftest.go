// Package selftest is bus-integration-codex --self-test: it starts the
// whole path in this process (package stack: an Events API on the memory
// backend, a worker on the static provider, the REST front door), sends
// every operation through the front door over loopback HTTP — chat
// completions, Responses and completions, plain and streaming, then
// retrieve and delete of a stored response — checks each answer, and prints
// one line per check.
//
// It imports internal/stack, internal/executor, internal/provider/static, internal/respstore and pkg/llmapi.
package selftest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/provider/static"
	"github.com/busdk/bus-integration-codex/internal/respstore"
	"github.com/busdk/bus-integration-codex/internal/stack"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Case is one round trip of an execution operation.
type Case struct {
	Op     llmapi.Operation
	Stream bool
	Body   string
	// Want is the answer text the static provider must give.
	Want string
}

// Cases returns the execution round trips: every operation, plain and
// streaming.
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
// when any check failed.
func Run(ctx context.Context, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	start := time.Now()
	x := &executor.Executor{Provider: static.New(), Store: respstore.NewMemory()}
	st, err := stack.Start(ctx, stack.Config{
		Timeout: 10 * time.Second,
		Worker: &stack.WorkerConfig{
			Executor: x, Release: x.Provider.Close,
			Group: "self-test", Consumer: "self-test", Concurrency: 4,
		},
	})
	if err != nil {
		return fmt.Errorf("start the in-process stack: %w", err)
	}
	defer st.Close()
	fmt.Fprintf(out, "self-test: front door %s -> Events API %s (memory) -> worker (static provider)\n", st.URL, st.Bus.URL)

	transport := http.DefaultTransport.(*http.Transport).Clone()
	defer transport.CloseIdleConnections()
	c := &client{http: &http.Client{Transport: transport}, url: st.URL, token: st.Token}

	var (
		failed, total int
		storedID      string
	)
	check := func(op llmapi.Operation, mode string, fn func() (string, error)) {
		total++
		t0 := time.Now()
		detail, err := fn()
		if err != nil {
			failed++
			fmt.Fprintf(out, "FAIL %-18s %-6s %v\n", op, mode, err)
			return
		}
		fmt.Fprintf(out, "ok   %-18s %-6s %6.1fms  %s\n", op, mode, float64(time.Since(t0).Microseconds())/1000, detail)
	}
	for _, cs := range Cases() {
		mode := "plain"
		if cs.Stream {
			mode = "stream"
		}
		check(cs.Op, mode, func() (string, error) {
			detail, id, err := c.execute(ctx, cs)
			if cs.Op == llmapi.OpResponses && !cs.Stream {
				storedID = id
			}
			return detail, err
		})
	}
	check(llmapi.OpResponsesRetrieve, "plain", func() (string, error) { return c.retrieve(ctx, storedID) })
	check(llmapi.OpResponsesDelete, "plain", func() (string, error) { return c.delete(ctx, storedID) })
	fmt.Fprintf(out, "self-test: %d passed, %d failed (%s)\n", total-failed, failed, time.Since(start).Round(time.Millisecond))
	if failed > 0 {
		return fmt.Errorf("%d of %d self-test checks failed", failed, total)
	}
	return nil
}

// client calls the front door.
type client struct {
	http  *http.Client
	url   string
	token string
}

func (c *client) do(ctx context.Context, method, path, body string) (*http.Response, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.http.Do(req)
}

// execute runs one case; id is the answer object's id.
func (c *client) execute(ctx context.Context, cs Case) (detail, id string, err error) {
	resp, err := c.do(ctx, http.MethodPost, strings.TrimPrefix(cs.Op.RESTPath(), "/v1"), cs.Body)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return "", "", fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	if !cs.Stream {
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", "", err
		}
		text, err := AnswerText(cs.Op, body)
		if err != nil {
			return "", "", err
		}
		if text != cs.Want {
			return "", "", fmt.Errorf("answer %q, want %q", text, cs.Want)
		}
		var obj struct {
			ID    string          `json:"id"`
			Usage json.RawMessage `json:"usage"`
		}
		_ = json.Unmarshal(body, &obj)
		if len(obj.Usage) == 0 || string(obj.Usage) == "null" {
			return "", "", errors.New("the answer has no usage")
		}
		return fmt.Sprintf("%q, id %s", text, obj.ID), obj.ID, nil
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return "", "", fmt.Errorf("Content-Type %q, want text/event-stream", ct)
	}
	frames, done, err := readSSE(resp.Body)
	if err != nil {
		return "", "", err
	}
	if cs.Op != llmapi.OpResponses && !done {
		return "", "", errors.New("the stream did not end with data: [DONE]")
	}
	text, err := framesText(cs.Op, frames)
	if err != nil {
		return "", "", err
	}
	if text != cs.Want {
		return "", "", fmt.Errorf("streamed %q, want %q", text, cs.Want)
	}
	return fmt.Sprintf("%q in %d frames", text, len(frames)), "", nil
}

func (c *client) retrieve(ctx context.Context, id string) (string, error) {
	if id == "" {
		return "", errors.New("no stored response to retrieve (the plain Responses check failed)")
	}
	resp, err := c.do(ctx, http.MethodGet, "/responses/"+id, "")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	text, err := AnswerText(llmapi.OpResponses, body)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s: %q", id, text), nil
}

func (c *client) delete(ctx context.Context, id string) (string, error) {
	if id == "" {
		return "", errors.New("no stored response to delete (the plain Responses check failed)")
	}
	resp, err := c.do(ctx, http.MethodDelete, "/responses/"+id, "")
	if err != nil {
		return "", err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var del struct {
		Deleted bool `json:"deleted"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &del) != nil || !del.Deleted {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	resp, err = c.do(ctx, http.MethodGet, "/responses/"+id, "")
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		return "", fmt.Errorf("after delete, GET answered %d, want 404", resp.StatusCode)
	}
	return fmt.Sprintf("%s deleted, then 404", id), nil
}

// readSSE reads "data:" frames until the stream ends; done reports a
// closing "data: [DONE]".
func readSSE(r io.Reader) (frames []json.RawMessage, done bool, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			return frames, true, nil
		}
		if !json.Valid([]byte(data)) {
			return nil, false, fmt.Errorf("frame %d is not JSON: %s", len(frames), data)
		}
		frames = append(frames, json.RawMessage(data))
	}
	return frames, false, sc.Err()
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
	want := map[llmapi.Operation]string{
		llmapi.OpChatCompletions: "chat.completion", llmapi.OpResponses: "response", llmapi.OpCompletions: "text_completion",
	}[op]
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

// StreamedText checks that bus chunks are contiguous from seq 0 and end
// with a terminal frame, and returns the text their deltas spell.
func StreamedText(op llmapi.Operation, chunks []llmapi.ExecutionEventChunk) (string, error) {
	frames := make([]json.RawMessage, len(chunks))
	for i, ch := range chunks {
		if ch.Seq != int64(i) {
			return "", fmt.Errorf("chunk %d has seq %d", i, ch.Seq)
		}
		frames[i] = ch.Data
	}
	return framesText(op, frames)
}

// framesText returns the text the deltas of a stream's frames spell,
// checking that the last frame is terminal.
func framesText(op llmapi.Operation, frames []json.RawMessage) (string, error) {
	if len(frames) == 0 {
		return "", errors.New("no frames")
	}
	var sb strings.Builder
	for i, data := range frames {
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
		if err := json.Unmarshal(data, &f); err != nil {
			return "", fmt.Errorf("frame %d is not JSON: %w", i, err)
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
	if last := frames[len(frames)-1]; !llmapi.IsTerminalFrame(op, last, false) {
		return "", fmt.Errorf("last frame is not terminal: %s", last)
	}
	return sb.String(), nil
}
