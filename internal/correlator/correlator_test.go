package correlator

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

const op = llmapi.OpChatCompletions

func respEnv(id string, payload string) events.Envelope {
	return events.Envelope{ID: "evt", Name: op.ResponseEvent(), CorrelationID: id, IdentityType: events.IdentityService, Payload: json.RawMessage(payload)}
}

func chunkEnv(id string, seq int64, data string) events.Envelope {
	b, _ := json.Marshal(map[string]any{"requestId": id, "operation": op, "seq": seq, "data": json.RawMessage(data)})
	return events.Envelope{ID: "evt", Name: op.ChunkEvent(), CorrelationID: id, IdentityType: events.IdentityService, Payload: b}
}

const okResp = `{"requestId":"r1","operation":"chat.completions","statusCode":200,"body":{"ok":true}}`

func frame(finish bool) string {
	if finish {
		return `{"choices":[{"delta":{},"finish_reason":"stop"}]}`
	}
	return `{"choices":[{"delta":{"content":"x"},"finish_reason":null}]}`
}

func TestDeliverRules(t *testing.T) {
	cases := []struct {
		name      string
		stream    bool
		env       events.Envelope
		delivered bool   // a malformed event is delivered as the call's failure
		problem   string // substring; "" = none
		failed    string // the call's failure code, "" = none
	}{
		{"response", false, respEnv("r1", okResp), true, "", ""},
		{"unknown id dropped", false, respEnv("other", okResp), false, "", ""},
		{"other operation dropped", false, events.Envelope{Name: llmapi.OpResponses.ResponseEvent(), CorrelationID: "r1", IdentityType: events.IdentityService, Payload: json.RawMessage(okResp)}, false, "", ""},
		{"not a bus.llm event dropped", false, events.Envelope{Name: "x.y", CorrelationID: "r1", Payload: json.RawMessage(okResp)}, false, "", ""},
		{"payload not an object", false, respEnv("r1", `[1]`), true, "payload", "malformed_response"},
		{"status out of range", false, respEnv("r1", `{"statusCode":42,"body":{}}`), true, "statusCode", "malformed_response"},
		{"body any JSON value", false, respEnv("r1", `{"statusCode":200,"body":"x"}`), true, "", ""},
		{"requestId contradicts correlationId", false, respEnv("r1", `{"requestId":"r2","statusCode":200,"body":{}}`), true, "does not match", "malformed_response"},
		{"operation contradicts event", false, respEnv("r1", `{"operation":"responses","statusCode":200,"body":{}}`), true, "operation", "malformed_response"},
		{"id from payload without correlationId", false, events.Envelope{Name: op.ResponseEvent(), IdentityType: events.IdentityService, Payload: json.RawMessage(okResp)}, true, "", ""},
		{"chunk", true, chunkEnv("r1", 0, frame(false)), true, "", ""},
		{"chunk of a non-stream call dropped", false, chunkEnv("r1", 0, frame(false)), false, "", ""},
		{"negative seq", true, chunkEnv("r1", -1, frame(false)), true, "negative", "malformed_chunk"},
		{"data not an object", true, chunkEnv("r1", 0, `"text"`), true, "data", "malformed_chunk"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			corr := New(Options{})
			k, err := corr.Register("r1", op, c.stream, false)
			if err != nil {
				t.Fatal(err)
			}
			out := corr.Deliver(c.env)
			if out.Delivered != c.delivered || !strings.Contains(out.Problem, c.problem) || (c.problem == "") != (out.Problem == "") {
				t.Fatalf("outcome %+v, want delivered=%v problem~%q", out, c.delivered, c.problem)
			}
			_, _, failure := k.Take()
			switch {
			case c.failed == "" && failure != nil:
				t.Fatalf("call failed: %v", failure)
			case c.failed != "" && (failure == nil || failure.Code != c.failed || failure.Status != 502):
				t.Fatalf("failure %v, want 502 %s", failure, c.failed)
			}
		})
	}
}

// TestOnlyServicesAreTrusted: a response or chunk a caller published (or
// one without a stamp) is dropped, even a malformed one that would fail
// the call; with TrustUnstamped an unstamped one counts.
func TestOnlyServicesAreTrusted(t *testing.T) {
	as := func(env events.Envelope, typ string) events.Envelope { env.IdentityType = typ; return env }
	for _, c := range []struct {
		name      string
		opts      Options
		env       events.Envelope
		delivered bool
	}{
		{"user response", Options{}, as(respEnv("r1", okResp), events.IdentityUser), false},
		{"user chunk", Options{}, as(chunkEnv("r1", 0, frame(true)), events.IdentityUser), false},
		{"user malformed response", Options{}, as(respEnv("r1", `[1]`), events.IdentityUser), false},
		{"unstamped response", Options{}, as(respEnv("r1", okResp), ""), false},
		{"unstamped response trusted", Options{TrustUnstamped: true}, as(respEnv("r1", okResp), ""), true},
		{"user response with TrustUnstamped", Options{TrustUnstamped: true}, as(respEnv("r1", okResp), events.IdentityUser), false},
		{"service response", Options{}, respEnv("r1", okResp), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			corr := New(c.opts)
			k, _ := corr.Register("r1", op, true, false)
			out := corr.Deliver(c.env)
			if out.Delivered != c.delivered || out.Untrusted == c.delivered {
				t.Fatalf("outcome %+v, want delivered=%v", out, c.delivered)
			}
			frames, resp, failure := k.Take()
			if !c.delivered && (len(frames) != 0 || resp != nil || failure != nil) {
				t.Fatalf("an untrusted event reached the call: %d frames, %v, %v", len(frames), resp, failure)
			}
			if want := int64(0); !c.delivered {
				if want = 1; corr.Untrusted() != want || corr.Dropped() != want {
					t.Fatalf("untrusted %d dropped %d, want %d", corr.Untrusted(), corr.Dropped(), want)
				}
			}
		})
	}
}

func TestRegisterRejectsDuplicateID(t *testing.T) {
	corr := New(Options{})
	k, err := corr.Register("r1", op, false, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := corr.Register("r1", op, false, false); err != ErrDuplicateID {
		t.Fatalf("second Register: %v, want ErrDuplicateID", err)
	}
	corr.Forget(k)
	if corr.Len() != 0 {
		t.Fatalf("Len %d after Forget", corr.Len())
	}
	if out := corr.Deliver(respEnv("r1", okResp)); out.Delivered || corr.Dropped() != 1 {
		t.Fatalf("event for a forgotten call: %+v dropped=%d", out, corr.Dropped())
	}
}

func TestStreamInOrderDuplicatesAndCompletion(t *testing.T) {
	corr := New(Options{})
	k, _ := corr.Register("r1", op, true, false)
	corr.Deliver(chunkEnv("r1", 1, frame(true))) // out of order: held
	if frames, _, _ := k.Take(); len(frames) != 0 {
		t.Fatalf("took %d frames past a gap", len(frames))
	}
	corr.Deliver(respEnv("r1", okResp))
	if k.Complete() {
		t.Fatal("complete with seq 0 missing")
	}
	corr.Deliver(chunkEnv("r1", 0, frame(false)))
	if out := corr.Deliver(chunkEnv("r1", 0, frame(false))); out.Delivered {
		t.Fatal("duplicate chunk delivered")
	}
	frames, resp, failure := k.Take()
	if len(frames) != 2 || resp == nil || failure != nil {
		t.Fatalf("took %d frames, resp %v, failure %v", len(frames), resp, failure)
	}
	if !k.Complete() {
		t.Fatal("not complete after the terminal frame")
	}
	if out := corr.Deliver(chunkEnv("r1", 1, frame(true))); out.Delivered {
		t.Fatal("already taken seq delivered again")
	}
	corr.Deliver(respEnv("r1", okResp))
	if k.Duplicates() != 1 {
		t.Fatalf("duplicates %d, want 1", k.Duplicates())
	}
}

func TestErrorResponseWithoutChunksCompletes(t *testing.T) {
	corr := New(Options{})
	k, _ := corr.Register("r1", op, true, false)
	corr.Deliver(respEnv("r1", `{"statusCode":429,"body":{"error":{"message":"m","type":"t"}}}`))
	if !k.Complete() {
		t.Fatal("an error answer before any chunk is complete")
	}
}

func TestOutOfOrderCap(t *testing.T) {
	corr := New(Options{MaxOutOfOrder: 3})
	k, _ := corr.Register("r1", op, true, false)
	for seq := int64(1); seq <= 4; seq++ {
		corr.Deliver(chunkEnv("r1", seq, frame(false)))
	}
	_, _, failure := k.Take()
	if failure == nil || failure.Code != "malformed_chunk" {
		t.Fatalf("failure %v after 4 chunks past a gap with a cap of 3", failure)
	}
}

func TestBufferedBytesCapIsACleanError(t *testing.T) {
	data := frame(false)
	corr := New(Options{MaxBufferedBytes: int64(10 * len(data))})
	k, _ := corr.Register("r1", op, true, false)
	// A reader that takes as it goes never hits the cap.
	for seq := int64(0); seq < 30; seq++ {
		corr.Deliver(chunkEnv("r1", seq, data))
		if frames, _, failure := k.Take(); len(frames) != 1 || failure != nil {
			t.Fatalf("seq %d: %d frames, failure %v", seq, len(frames), failure)
		}
	}
	// A reader that stalls gets a clear error, not a malformed-chunk one.
	for seq := int64(30); seq < 45; seq++ {
		corr.Deliver(chunkEnv("r1", seq, data))
	}
	frames, _, failure := k.Take()
	if failure == nil || failure.Code != "stream_buffer_exceeded" {
		t.Fatalf("failure %v, want stream_buffer_exceeded", failure)
	}
	if len(frames) != 10 {
		t.Fatalf("%d frames buffered before the cap, want 10", len(frames))
	}
}

func TestIncludeUsageTerminalFrame(t *testing.T) {
	corr := New(Options{})
	k, _ := corr.Register("r1", op, true, true)
	corr.Deliver(respEnv("r1", okResp))
	corr.Deliver(chunkEnv("r1", 0, frame(true)))
	k.Take()
	if k.Complete() {
		t.Fatal("complete before the usage frame although include_usage was asked")
	}
	corr.Deliver(chunkEnv("r1", 1, `{"choices":[],"usage":{"total_tokens":3}}`))
	k.Take()
	if !k.Complete() {
		t.Fatal("not complete after the usage frame")
	}
}

func TestNotifyWakesOncePerBurst(t *testing.T) {
	corr := New(Options{})
	k, _ := corr.Register("r1", op, true, false)
	for seq := range 5 {
		corr.Deliver(chunkEnv("r1", int64(seq), frame(false)))
	}
	select {
	case <-k.Notify():
	default:
		t.Fatal("no wake-up")
	}
	select {
	case <-k.Notify():
		t.Fatal("a second wake-up was queued")
	default:
	}
	if frames, _, _ := k.Take(); len(frames) != 5 {
		t.Fatal(fmt.Sprint(len(frames), " frames"))
	}
}
