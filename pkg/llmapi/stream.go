package llmapi

import (
	"bytes"
	"encoding/json"
)

// IsTerminalFrame reports whether frame is the last frame of a stream of
// op. Chunk and response events travel on different event names, so a
// reader may see the response before the last chunks; a worker therefore
// ends every stream it starts with a terminal frame, and a reader is done
// when it has every seq up to the terminal one:
//
//   - any operation: an error frame {"error": {...}};
//   - chat.completions and completions: the frame whose choice has a
//     non-null finish_reason, or — when the request asked for
//     stream_options.include_usage — the usage frame that follows it
//     (choices empty, usage set);
//   - responses: a frame of type response.completed, response.failed,
//     response.incomplete or error.
func IsTerminalFrame(op Operation, frame json.RawMessage, includeUsage bool) bool {
	var f struct {
		Type    string          `json:"type"`
		Error   json.RawMessage `json:"error"`
		Usage   json.RawMessage `json:"usage"`
		Choices []struct {
			FinishReason *string `json:"finish_reason"`
		} `json:"choices"`
	}
	if json.Unmarshal(frame, &f) != nil {
		return false
	}
	if present(f.Error) {
		return true
	}
	if op == OpResponses {
		switch f.Type {
		case "response.completed", "response.failed", "response.incomplete", "error":
			return true
		}
		return false
	}
	if includeUsage {
		return len(f.Choices) == 0 && present(f.Usage)
	}
	for _, c := range f.Choices {
		if c.FinishReason != nil {
			return true
		}
	}
	return false
}

func present(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && !bytes.Equal(t, []byte("null"))
}

// IncludeUsage reports whether an OpenAI request body asks for a usage
// frame at the end of its stream (stream_options.include_usage).
func IncludeUsage(body json.RawMessage) bool {
	var b struct {
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	return json.Unmarshal(body, &b) == nil && b.StreamOptions != nil && b.StreamOptions.IncludeUsage
}
