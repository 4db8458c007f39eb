package e2e_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/busdk/bus-integration-codex/internal/auth"
)

// TestErrorMatrix: authentication, authorization, model, size and
// parameter errors reach the SDK as *openai.Error with the OpenAI status,
// code and param.
func TestErrorMatrix(t *testing.T) {
	e := startStatic(t)
	noScope, err := e.st.IssueToken("e2e-no-scope")
	if err != nil {
		t.Fatal(err)
	}
	otherScope, err := e.st.IssueToken("e2e-other-scope", auth.ScopeEventsSend)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := auth.Issue([]byte("some-other-secret"), auth.Claims{Subject: "e2e", Audience: []string{auth.Audience},
		Scopes: []string{auth.ScopeLLMProxy}, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}

	big := chatParams()
	big.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage(strings.Repeat("x", 2<<20))}
	twoChoices := chatParams()
	twoChoices.N = openai.Int(2)
	unknownModel := chatParams()
	unknownModel.Model = "no-such-model"

	cases := []struct {
		name   string
		token  string
		params openai.ChatCompletionNewParams
		status int
		code   string
		param  string
	}{
		{"no token", "", chatParams(), http.StatusUnauthorized, "missing_token", ""},
		{"malformed token", "not-a-jwt", chatParams(), http.StatusUnauthorized, "invalid_token", ""},
		{"token of another issuer", foreign, chatParams(), http.StatusUnauthorized, "invalid_token", ""},
		{"token without scopes", noScope, chatParams(), http.StatusForbidden, "insufficient_scope", ""},
		{"token without llm:proxy", otherScope, chatParams(), http.StatusForbidden, "insufficient_scope", ""},
		{"unknown model", e.st.Token, unknownModel, http.StatusNotFound, "model_not_found", "model"},
		{"body over 2 MiB", e.st.Token, big, http.StatusRequestEntityTooLarge, "request_body_too_large", ""},
		// Checked by the worker, answered through the bus.
		{"n=2", e.st.Token, twoChoices, http.StatusBadRequest, "", "n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			client := e.sdk(c.token)
			check := func(t *testing.T, err error) {
				t.Helper()
				if err == nil {
					t.Fatal("no error")
				}
				apiErr := apiError(t, err)
				if apiErr.StatusCode != c.status || apiErr.Param != c.param || (c.code != "" && apiErr.Code != c.code) ||
					apiErr.Message == "" || apiErr.Type == "" {
					t.Fatalf("status %d code %q param %q type %q message %q; want %d %q %q",
						apiErr.StatusCode, apiErr.Code, apiErr.Param, apiErr.Type, apiErr.Message, c.status, c.code, c.param)
				}
			}
			t.Run("plain", func(t *testing.T) {
				_, err := client.Chat.Completions.New(reqCtx(t), c.params)
				check(t, err)
			})
			t.Run("stream", func(t *testing.T) {
				stream := client.Chat.Completions.NewStreaming(reqCtx(t), c.params)
				defer stream.Close()
				if stream.Next() {
					t.Fatalf("a frame arrived: %s", stream.Current().RawJSON())
				}
				check(t, stream.Err())
			})
		})
	}

	t.Run("n=2 completions", func(t *testing.T) {
		p := completionParams()
		p.N = openai.Int(2)
		_, err := e.client.Completions.New(reqCtx(t), p)
		if apiErr := apiError(t, err); apiErr.StatusCode != http.StatusBadRequest || apiErr.Param != "n" {
			t.Fatalf("status %d param %q: %s", apiErr.StatusCode, apiErr.Param, apiErr.RawJSON())
		}
	})

	// The stack still answers after all of that.
	if _, err := e.client.Chat.Completions.New(reqCtx(t), chatParams()); err != nil {
		t.Fatalf("a valid request after the errors: %v", err)
	}
}
