package agents_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"

	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/internal/testutil/pgtest"
	"github.com/busdk/bus-integration-codex/internal/testutil/redistest"
)

func userItem(text string) responses.ResponseInputItemUnionParam {
	return responses.ResponseInputItemParamOfMessage(text, responses.EasyInputMessageRoleUser)
}

// The Vercel AI SDK's default provider (Responses, store: true) sends the
// earlier answer of a conversation as an item_reference on the second
// turn. On PostgreSQL, with a worker restart in between, the model gets
// the earlier answer back; another identity's reference is a 404.
func TestItemReferenceSecondTurn(t *testing.T) {
	b := newBridge(t, postgresStore(pgtest.Start(t)))
	stop := b.startWorker("w1")
	alice := b.client("alice")
	first := step(t, alice, b.fake, "", "My name is Ada.", "Nice to meet you, Ada.", "")
	answer := first.Output[len(first.Output)-1].ID
	stop()
	b.startWorker("w2")

	b.fake.Enqueue(fakemodel.Reply{Text: "Ada."})
	second, err := alice.Responses.New(ctxT(t), responses.ResponseNewParams{Model: model, Input: responses.ResponseNewParamsInputUnion{
		OfInputItemList: responses.ResponseInputParam{userItem("My name is Ada."), responses.ResponseInputItemParamOfItemReference(answer), userItem("What is my name?")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if second.OutputText() != "Ada." {
		t.Errorf("answer %q", second.OutputText())
	}
	want := []string{"user: My name is Ada.", "assistant: Nice to meet you, Ada.", "user: What is my name?"}
	if got := conversation(b.fake); !slices.Equal(got, want) {
		t.Fatalf("the second turn reached the model as\n%q\nwant\n%q", got, want)
	}

	requests := len(b.fake.Requests())
	mallory := b.client("mallory")
	_, err = mallory.Responses.New(ctxT(t), responses.ResponseNewParams{Model: model, Input: responses.ResponseNewParamsInputUnion{
		OfInputItemList: responses.ResponseInputParam{responses.ResponseInputItemParamOfItemReference(answer), userItem("What was that?")},
	}})
	var apiErr *openai.Error
	if status, _ := apiStatus(err); status != http.StatusNotFound || !errorsAs(err, &apiErr) || apiErr.Param != "input" || !strings.Contains(apiErr.Message, answer) {
		t.Fatalf("foreign reference: %v", err)
	}
	if len(b.fake.Requests()) != requests {
		t.Error("the model was called for a request with a foreign reference")
	}
}

// GET /v1/responses/{id}/input_items through openai-go's pager, on Redis:
// the items a continued response was generated from, in order.
func TestInputItemsPaging(t *testing.T) {
	b := newBridge(t, redisStore(redistest.Start(t)))
	b.startWorker("w1")
	alice := b.client("alice")
	r3 := threeSteps(t, b, alice, nil)
	var got []string
	pager := alice.Responses.InputItems.ListAutoPaging(ctxT(t), r3.ID, responses.InputItemListParams{Limit: openai.Int(2), Order: responses.InputItemListParamsOrderAsc})
	for pager.Next() {
		it := pager.Current()
		if it.ID == "" {
			t.Errorf("item without id: %s", it.RawJSON())
		}
		got = append(got, it.Role+": "+firstText(it))
	}
	if err := pager.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"user: My name is Ada.", "assistant: Nice to meet you, Ada.",
		"user: I live in Oslo.", "assistant: Oslo is lovely.",
		"user: Where do I live and what is my name?",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("input items\n%q\nwant\n%q", got, want)
	}
	bob := b.client("bob")
	if _, err := bob.Responses.InputItems.List(ctxT(t), r3.ID, responses.InputItemListParams{}); func() bool { s, _ := apiStatus(err); return s != http.StatusNotFound }() {
		t.Fatalf("foreign input_items: %v", err)
	}
}

// firstText is the text of an item's first content part.
func firstText(it responses.ResponseItemUnion) string {
	var m struct {
		Content []struct {
			Text string `json:"text"`
		} `json:"content"`
	}
	if json.Unmarshal([]byte(it.RawJSON()), &m) != nil || len(m.Content) == 0 {
		return ""
	}
	return m.Content[0].Text
}

func errorsAs(err error, target **openai.Error) bool { return errors.As(err, target) }
