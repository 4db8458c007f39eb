package bench

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

	"github.com/busdk/bus-integration-codex/internal/stack"
)

// caller sends one chat completion to the front door, the way an OpenAI
// client does (a tight HTTP loop: no SDK overhead in the measurement).
type caller struct {
	client *http.Client
	url    string // the front door's /v1 base
	token  string
	body   []byte
	stream bool
}

func newCaller(client *http.Client, st *stack.Stack, content string, stream bool) *caller {
	streamField := ""
	if stream {
		streamField = `"stream":true,`
	}
	body := fmt.Sprintf(`{%s"model":"codex-chatgpt","messages":[{"role":"user","content":%q}]}`, streamField, content)
	return &caller{client: client, url: st.URL, token: st.Token, body: []byte(body), stream: stream}
}

// chatMessage is the answer of a (non-streaming) chat completion.
type chatMessage struct {
	Content   *string        `json:"content"`
	ToolCalls []chatToolCall `json:"tool_calls"`
}

// chatToolCall is one tool call of a chat completion answer.
type chatToolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// chat sends one non-streaming chat completion with body (any JSON value)
// and returns its answer and how long it took.
func chat(ctx context.Context, client *http.Client, st *stack.Stack, body any) (chatMessage, time.Duration, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return chatMessage{}, 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, st.URL+"/chat/completions", bytes.NewReader(b))
	if err != nil {
		return chatMessage{}, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+st.Token)
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return chatMessage{}, 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	d := time.Since(start)
	if err != nil {
		return chatMessage{}, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return chatMessage{}, 0, fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(data[:min(len(data), 4<<10)]))
	}
	var c struct {
		Choices []struct {
			Message chatMessage `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(data, &c); err != nil || len(c.Choices) != 1 {
		return chatMessage{}, 0, fmt.Errorf("unexpected answer: %s", data[:min(len(data), 1<<10)])
	}
	return c.Choices[0].Message, d, nil
}

// do sends the request and reads the whole answer. For a stream, first is
// the time until the first data chunk arrived.
func (c *caller) do(ctx context.Context) (sample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url+"/chat/completions", bytes.NewReader(c.body))
	if err != nil {
		return sample{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	start := time.Now()
	resp, err := c.client.Do(req)
	if err != nil {
		return sample{}, err
	}

	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return sample{}, fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	if !c.stream {
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return sample{}, err
		}
		return sample{total: time.Since(start)}, nil
	}
	var s sample
	r := bufio.NewReader(resp.Body)
	for {
		line, err := r.ReadString('\n')
		if data, ok := strings.CutPrefix(strings.TrimSpace(line), "data:"); ok {
			data = strings.TrimSpace(data)
			if data == "[DONE]" {
				s.total = time.Since(start)
				_, _ = io.Copy(io.Discard, resp.Body)
				return s, nil
			}
			if s.first == 0 {
				s.first = time.Since(start)
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return sample{}, errors.New("stream ended without [DONE]")
			}
			return sample{}, err
		}
	}
}
