package e2e_test

import (
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
)

// The official OpenAI Go SDK, pointed at the front door, runs every
// operation plain and streaming through the real worker.

func TestSDKStatic(t *testing.T) {
	e := startStatic(t)
	runSDK(t, e)
	t.Run("models", func(t *testing.T) {
		page, err := e.client.Models.List(reqCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, m := range page.Data {
			found = found || m.ID == model
		}
		if !found || page.Object != "list" {
			t.Fatalf("model list %s lacks %s", page.RawJSON(), model)
		}
		m, err := e.client.Models.Get(reqCtx(t), model)
		if err != nil || m.ID != model || m.Object != "model" {
			t.Fatalf("model %+v (%v)", m, err)
		}
		_, err = e.client.Models.Get(reqCtx(t), "no-such-model")
		if apiErr := apiError(t, err); apiErr.StatusCode != 404 {
			t.Fatalf("unknown model: %s", apiErr.RawJSON())
		}
	})
}

func TestSDKCodex(t *testing.T) { runSDK(t, startCodex(t)) }

func runSDK(t *testing.T, e *env) {
	t.Run("chat", func(t *testing.T) { sdkChat(t, e) })
	t.Run("chat/stream", func(t *testing.T) { sdkChatStream(t, e) })
	t.Run("responses", func(t *testing.T) { sdkResponses(t, e) })
	t.Run("responses/stream", func(t *testing.T) { sdkResponsesStream(t, e) })
	t.Run("completions", func(t *testing.T) { sdkCompletions(t, e) })
	t.Run("completions/stream", func(t *testing.T) { sdkCompletionsStream(t, e) })
}

func chatParams() openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
	}
}

func completionParams() openai.CompletionNewParams {
	return openai.CompletionNewParams{
		Model:  model,
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)},
	}
}

func responseParams() responses.ResponseNewParams {
	return responses.ResponseNewParams{
		Model: model,
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(prompt)},
	}
}

func checkCompletionUsage(t *testing.T, got openai.CompletionUsage, want usage) {
	t.Helper()
	if got.PromptTokens != want.prompt || got.CompletionTokens != want.completion || got.TotalTokens != want.total ||
		got.PromptTokensDetails.CachedTokens != want.cached || got.CompletionTokensDetails.ReasoningTokens != want.reasoning {
		t.Errorf("usage %s, want %+v", got.RawJSON(), want)
	}
}

func checkResponseUsage(t *testing.T, got responses.ResponseUsage, want usage) {
	t.Helper()
	if got.InputTokens != want.prompt || got.OutputTokens != want.completion || got.TotalTokens != want.total ||
		got.InputTokensDetails.CachedTokens != want.cached || got.OutputTokensDetails.ReasoningTokens != want.reasoning {
		t.Errorf("usage %s, want %+v", got.RawJSON(), want)
	}
}

func sdkChat(t *testing.T, e *env) {
	c, err := e.client.Chat.Completions.New(reqCtx(t), chatParams())
	if err != nil {
		t.Fatal(err)
	}
	if c.ID == "" || c.Object != "chat.completion" || c.Model != model || c.Created == 0 {
		t.Errorf("id %q object %q model %q created %d", c.ID, c.Object, c.Model, c.Created)
	}
	if len(c.Choices) != 1 {
		t.Fatalf("%d choices: %s", len(c.Choices), c.RawJSON())
	}
	ch := c.Choices[0]
	if ch.Message.Content != e.want || ch.Message.Role != "assistant" || ch.FinishReason != "stop" || ch.Index != 0 {
		t.Errorf("choice %s, want content %q, role assistant, finish_reason stop", ch.RawJSON(), e.want)
	}
	checkCompletionUsage(t, c.Usage, e.usage)
}

func sdkChatStream(t *testing.T, e *env) {
	p := chatParams()
	p.StreamOptions.IncludeUsage = openai.Bool(true)
	stream := e.client.Chat.Completions.NewStreaming(reqCtx(t), p)
	defer stream.Close()
	var acc openai.ChatCompletionAccumulator
	var (
		chunks, usageChunks int
		role                string
		finished            bool
		content             strings.Builder
		id                  string
	)
	for stream.Next() {
		chunk := stream.Current()
		chunks++
		if !acc.AddChunk(chunk) {
			t.Fatalf("the accumulator refused chunk %d: %s", chunks, chunk.RawJSON())
		}
		if chunk.Object != "chat.completion.chunk" || chunk.Model != model || chunk.ID == "" {
			t.Errorf("chunk %d: object %q model %q id %q", chunks, chunk.Object, chunk.Model, chunk.ID)
		}
		if id == "" {
			id = chunk.ID
		} else if chunk.ID != id {
			t.Errorf("chunk %d: id %q, earlier chunks %q", chunks, chunk.ID, id)
		}
		if len(chunk.Choices) == 0 {
			usageChunks++
			checkCompletionUsage(t, chunk.Usage, e.usage)
			continue
		}
		if usageChunks > 0 {
			t.Errorf("chunk %d with choices after the usage chunk", chunks)
		}
		d := chunk.Choices[0]
		if chunks == 1 {
			role = d.Delta.Role
		}
		if finished {
			t.Errorf("chunk %d after the finish_reason chunk: %s", chunks, chunk.RawJSON())
		}
		content.WriteString(d.Delta.Content)
		if d.FinishReason != "" {
			finished = true
			if d.FinishReason != "stop" {
				t.Errorf("finish_reason %q", d.FinishReason)
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if role != "assistant" {
		t.Errorf("first delta role %q, want assistant", role)
	}
	if !finished || usageChunks != 1 {
		t.Errorf("finished %v, %d usage chunks (want one)", finished, usageChunks)
	}
	if content.String() != e.want {
		t.Errorf("streamed %q, want %q", content.String(), e.want)
	}
	if len(acc.Choices) != 1 || acc.Choices[0].Message.Content != e.want || acc.Choices[0].FinishReason != "stop" {
		t.Errorf("accumulated %+v", acc.Choices)
	}
	checkCompletionUsage(t, acc.Usage, e.usage)
}

func sdkResponses(t *testing.T, e *env) {
	r, err := e.client.Responses.New(reqCtx(t), responseParams())
	if err != nil {
		t.Fatal(err)
	}
	if r.ID == "" || r.Object != "response" || r.Model != model || r.Status != responses.ResponseStatusCompleted {
		t.Errorf("id %q object %q model %q status %q", r.ID, r.Object, r.Model, r.Status)
	}
	if got := r.OutputText(); got != e.want {
		t.Errorf("output text %q, want %q (%s)", got, e.want, r.RawJSON())
	}
	checkResponseUsage(t, r.Usage, e.usage)
}

func sdkResponsesStream(t *testing.T, e *env) {
	stream := e.client.Responses.NewStreaming(reqCtx(t), responseParams())
	defer stream.Close()
	var (
		types     []string
		text      strings.Builder
		lastSeq   int64 = -1
		completed *responses.Response
	)
	for stream.Next() {
		ev := stream.Current()
		if ev.SequenceNumber <= lastSeq {
			t.Errorf("%s: sequence_number %d after %d", ev.Type, ev.SequenceNumber, lastSeq)
		}
		lastSeq = ev.SequenceNumber
		if completed != nil {
			t.Errorf("event %s after response.completed", ev.Type)
		}
		if n := len(types); n == 0 || types[n-1] != ev.Type || ev.Type != "response.output_text.delta" {
			types = append(types, ev.Type)
		}
		switch ev.Type {
		case "response.output_text.delta":
			text.WriteString(ev.Delta)
		case "response.completed":
			r := ev.Response
			completed = &r
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	want := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"}
	if strings.Join(types, " ") != strings.Join(want, " ") {
		t.Errorf("event types (deltas collapsed)\n got %v\nwant %v", types, want)
	}
	if text.String() != e.want {
		t.Errorf("streamed %q, want %q", text.String(), e.want)
	}
	if completed == nil {
		t.Fatal("no response.completed event")
	}
	if completed.Status != responses.ResponseStatusCompleted || completed.Model != model || completed.Object != "response" || completed.OutputText() != e.want {
		t.Errorf("completed response: %s", completed.RawJSON())
	}
	checkResponseUsage(t, completed.Usage, e.usage)
}

func sdkCompletions(t *testing.T, e *env) {
	c, err := e.client.Completions.New(reqCtx(t), completionParams())
	if err != nil {
		t.Fatal(err)
	}
	if c.ID == "" || c.Object != "text_completion" || c.Model != model {
		t.Errorf("id %q object %q model %q", c.ID, c.Object, c.Model)
	}
	if len(c.Choices) != 1 || c.Choices[0].Text != e.want || c.Choices[0].FinishReason != "stop" {
		t.Fatalf("choices %s, want text %q, finish_reason stop", c.RawJSON(), e.want)
	}
	checkCompletionUsage(t, c.Usage, e.usage)
}

func sdkCompletionsStream(t *testing.T, e *env) {
	p := completionParams()
	p.StreamOptions.IncludeUsage = openai.Bool(true)
	stream := e.client.Completions.NewStreaming(reqCtx(t), p)
	defer stream.Close()
	var (
		text                strings.Builder
		finished            bool
		chunks, usageChunks int
	)
	for stream.Next() {
		c := stream.Current()
		chunks++
		if c.Object != "text_completion" || c.Model != model || c.ID == "" {
			t.Errorf("chunk %d: object %q model %q id %q", chunks, c.Object, c.Model, c.ID)
		}
		if len(c.Choices) == 0 {
			usageChunks++
			checkCompletionUsage(t, c.Usage, e.usage)
			continue
		}
		if finished || usageChunks > 0 {
			t.Errorf("chunk %d after the end: %s", chunks, c.RawJSON())
		}
		text.WriteString(c.Choices[0].Text)
		if fr := c.Choices[0].FinishReason; fr != "" {
			finished = true
			if fr != "stop" {
				t.Errorf("finish_reason %q", fr)
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if !finished || usageChunks != 1 {
		t.Errorf("finished %v, %d usage chunks (want one)", finished, usageChunks)
	}
	if text.String() != e.want {
		t.Errorf("streamed %q, want %q", text.String(), e.want)
	}
}
