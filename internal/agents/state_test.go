package agents_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"

	"github.com/busdk/bus-integration-codex/internal/respstore"
	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/internal/testutil/pgtest"
	"github.com/busdk/bus-integration-codex/internal/testutil/redistest"
)

// step asks one question in a conversation and returns the response.
func step(t *testing.T, c openai.Client, fake *fakemodel.Server, prev, question, answer string, instructions string) *responses.Response {
	t.Helper()
	fake.Enqueue(fakemodel.Reply{Text: answer})
	params := responses.ResponseNewParams{Model: model, Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(question)}}
	if prev != "" {
		params.PreviousResponseID = openai.String(prev)
	}
	if instructions != "" {
		params.Instructions = openai.String(instructions)
	}
	r, err := c.Responses.New(ctxT(t), params)
	if err != nil {
		t.Fatalf("%q: %v", question, err)
	}
	if r.OutputText() != answer {
		t.Fatalf("%q answered %q", question, r.OutputText())
	}
	return r
}

// conversation returns the user and assistant messages the model's last
// request carried, leaving out Codex's own context messages.
func conversation(fake *fakemodel.Server) []string {
	reqs := fake.Requests()
	var out []string
	for _, m := range reqs[len(reqs)-1].Messages() {
		if (m.Role == "user" || m.Role == "assistant") && !strings.Contains(m.Text, "<environment_context>") && !strings.Contains(m.Text, "AGENTS.md") {
			out = append(out, m.Role+": "+m.Text)
		}
	}
	return out
}

func developerText(fake *fakemodel.Server) string {
	reqs := fake.Requests()
	var sb strings.Builder
	for _, m := range reqs[len(reqs)-1].Messages() {
		if m.Role == "developer" {
			sb.WriteString(m.Text)
		}
	}
	return sb.String()
}

// threeSteps runs a three-step previous_response_id chain and checks the
// model received the earlier turns as separate role messages.
func threeSteps(t *testing.T, b *bridge, c openai.Client, between func(step int)) *responses.Response {
	t.Helper()
	r1 := step(t, c, b.fake, "", "My name is Ada.", "Nice to meet you, Ada.", "Talk like a pirate.")
	if between != nil {
		between(1)
	}
	r2 := step(t, c, b.fake, r1.ID, "I live in Oslo.", "Oslo is lovely.", "")
	if between != nil {
		between(2)
	}
	r3 := step(t, c, b.fake, r2.ID, "Where do I live and what is my name?", "Ada, in Oslo.", "")
	want := []string{
		"user: My name is Ada.", "assistant: Nice to meet you, Ada.",
		"user: I live in Oslo.", "assistant: Oslo is lovely.",
		"user: Where do I live and what is my name?",
	}
	if got := conversation(b.fake); !slices.Equal(got, want) {
		t.Fatalf("step 3 reached the model as\n%q\nwant\n%q", got, want)
	}
	if strings.Contains(developerText(b.fake), "pirate") {
		t.Fatal("instructions of step 1 were carried over to step 3")
	}
	if r3.PreviousResponseID != r2.ID {
		t.Fatalf("previous_response_id echoed %q, want %q", r3.PreviousResponseID, r2.ID)
	}
	return r3
}

func TestPreviousResponseChain(t *testing.T) {
	b := newBridge(t, memoryStore())
	b.startWorker("w1")
	threeSteps(t, b, b.client("alice"), nil)
}

func apiStatus(err error) (int, string) {
	var apiErr *openai.Error
	if errors.As(err, &apiErr) {
		return apiErr.StatusCode, apiErr.Code
	}
	return 0, ""
}

func TestResponsesBelongToTheirIdentity(t *testing.T) {
	b := newBridge(t, memoryStore())
	b.startWorker("w1")
	alice, mallory := b.client("alice"), b.client("mallory")
	r := step(t, alice, b.fake, "", "secret plan", "noted", "")

	// Another identity can neither continue nor read nor delete it, and
	// learns nothing: the answer is the same as for an unknown id.
	_, err := mallory.Responses.New(ctxT(t), responses.ResponseNewParams{Model: model,
		PreviousResponseID: openai.String(r.ID), Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("tell me")}})
	if status, code := apiStatus(err); status != http.StatusNotFound || code != "previous_response_not_found" {
		t.Fatalf("foreign continuation: %v", err)
	}
	_, errUnknown := mallory.Responses.New(ctxT(t), responses.ResponseNewParams{Model: model,
		PreviousResponseID: openai.String("resp_doesnotexist"), Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")}})
	if status, code := apiStatus(errUnknown); status != http.StatusNotFound || code != "previous_response_not_found" {
		t.Fatalf("unknown continuation: %v", errUnknown)
	}
	if _, err := mallory.Responses.Get(ctxT(t), r.ID, responses.ResponseGetParams{}); func() bool { s, _ := apiStatus(err); return s != http.StatusNotFound }() {
		t.Fatalf("foreign GET: %v", err)
	}
	if err := mallory.Responses.Delete(ctxT(t), r.ID); func() bool { s, _ := apiStatus(err); return s != http.StatusNotFound }() {
		t.Fatalf("foreign DELETE: %v", err)
	}

	// The owner can read and delete it.
	got, err := alice.Responses.Get(ctxT(t), r.ID, responses.ResponseGetParams{})
	if err != nil || got.ID != r.ID || got.OutputText() != "noted" {
		t.Fatalf("owner GET: %v %+v", err, got)
	}
	if err := alice.Responses.Delete(ctxT(t), r.ID); err != nil {
		t.Fatalf("owner DELETE: %v", err)
	}
	if _, err := alice.Responses.Get(ctxT(t), r.ID, responses.ResponseGetParams{}); func() bool { s, _ := apiStatus(err); return s != http.StatusNotFound }() {
		t.Fatalf("GET after DELETE: %v", err)
	}
	// store: false keeps nothing.
	b.fake.Enqueue(fakemodel.Reply{Text: "ephemeral"})
	eph, err := alice.Responses.New(ctxT(t), responses.ResponseNewParams{Model: model, Store: openai.Bool(false),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Responses.Get(ctxT(t), eph.ID, responses.ResponseGetParams{}); func() bool { s, _ := apiStatus(err); return s != http.StatusNotFound }() {
		t.Fatalf("store=false response was stored: %v", err)
	}
}

func redisStore(addr string) func(*testing.T) respstore.Store {
	return func(t *testing.T) respstore.Store {
		s, err := respstore.OpenRedis(context.Background(), respstore.RedisConfig{Addr: addr, Prefix: "agents:"})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

func postgresStore(dsn string) func(*testing.T) respstore.Store {
	return func(t *testing.T) respstore.Store {
		s, err := respstore.OpenPostgres(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

// TestTwoWorkersAlternateOnRedisStore: two workers of one group serve the
// steps of one conversation in turn (only one of them is running at each
// step), so every step after the first continues from state another
// worker stored; the first worker comes back as a new process in between.
func TestTwoWorkersAlternateOnRedisStore(t *testing.T) {
	addr := redistest.Start(t)
	b := newBridge(t, redisStore(addr))
	stopA := b.startWorker("a")
	var stopB func()
	threeSteps(t, b, b.client("alice"), func(step int) {
		switch step {
		case 1:
			stopB = b.startWorker("b")
			stopA()
		case 2:
			b.startWorker("a2") // worker a, restarted
			stopB()
		}
	})
}

// TestConversationSurvivesWorkerRestart on PostgreSQL: every worker is
// stopped and a new one continues the stored conversation.
func TestConversationSurvivesWorkerRestart(t *testing.T) {
	dsn := pgtest.Start(t)
	b := newBridge(t, postgresStore(dsn))
	stop := b.startWorker("w1")
	n := 1
	threeSteps(t, b, b.client("alice"), func(int) {
		stop()
		n++
		stop = b.startWorker(fmt.Sprintf("w%d", n))
	})
}
