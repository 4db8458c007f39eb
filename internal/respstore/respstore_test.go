package respstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/respstore"
	"github.com/busdk/bus-integration-codex/internal/testutil/pgtest"
	"github.com/busdk/bus-integration-codex/internal/testutil/redistest"
	"github.com/busdk/bus-integration-codex/internal/turn"
)

// jsonValue is v as a generic JSON value.
func jsonValue(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// storeSuite is the behaviour every Store shares.
func storeSuite(t *testing.T, open func(t *testing.T) respstore.Store) {
	ctx := context.Background()
	rec := func(identity, id string) respstore.Record {
		return respstore.Record{
			ID: id, Identity: identity, CreatedAt: time.Now().UTC().Truncate(time.Second),
			// Items keep their ids and every field of the agent item types
			// (item references and input item listing rely on them).
			Items: []turn.Item{
				{Type: turn.ItemMessage, ID: "msg_u", Role: turn.RoleUser, Content: []turn.Part{{Type: turn.PartText, Text: "hi " + id}}},
				{Type: turn.ItemWebSearchCall, ID: "ws_1", Action: json.RawMessage(`{"type":"search","query":"q"}`)},
				{Type: turn.ItemMessage, ID: "msg_a", Role: turn.RoleAssistant, Content: []turn.Part{{Type: turn.PartText, Text: "a",
					Annotations: []json.RawMessage{json.RawMessage(`{"type":"url_citation","url":"https://a.example"}`)}}}},
				{Type: turn.ItemFunctionCall, ID: "fc_1", CallID: "call_1", Name: "f", Namespace: "ns", Arguments: `{"a":1}`},
				{Type: turn.ItemFunctionCallOutput, ID: "fco_1", CallID: "call_1", Output: "42"},
				{Type: turn.ItemCustomToolCall, ID: "ctc_1", CallID: "call_2", Name: "c", Input: "free text"},
				{Type: turn.ItemCustomToolCallOutput, ID: "ctco_1", CallID: "call_2", Output: "ok"},
			},
			Response: []byte(`{"id":"` + id + `","object":"response"}`),
		}
	}
	t.Run("PutGetRoundTrip", func(t *testing.T) {
		s := open(t)
		want := rec("alice", "resp_1")
		if err := s.Put(ctx, want, time.Hour); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, "alice", "resp_1")
		if err != nil {
			t.Fatal(err)
		}
		// Compared as JSON values: PostgreSQL's jsonb re-spaces and
		// reorders the keys of nested raw JSON (actions, annotations).
		if !reflect.DeepEqual(jsonValue(t, got.Items), jsonValue(t, want.Items)) || string(got.Response) != string(want.Response) || !got.CreatedAt.Equal(want.CreatedAt) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})
	t.Run("OtherIdentityFindsNothing", func(t *testing.T) {
		s := open(t)
		if err := s.Put(ctx, rec("alice", "resp_2"), time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, "mallory", "resp_2"); !errors.Is(err, respstore.ErrNotFound) {
			t.Fatalf("other identity: %v", err)
		}
		if err := s.Delete(ctx, "mallory", "resp_2"); !errors.Is(err, respstore.ErrNotFound) {
			t.Fatalf("other identity delete: %v", err)
		}
		if _, err := s.Get(ctx, "alice", "resp_2"); err != nil {
			t.Fatalf("owner after a foreign delete: %v", err)
		}
	})
	t.Run("UnknownAndExpired", func(t *testing.T) {
		s := open(t)
		if _, err := s.Get(ctx, "alice", "resp_unknown"); !errors.Is(err, respstore.ErrNotFound) {
			t.Fatalf("unknown: %v", err)
		}
		if err := s.Put(ctx, rec("alice", "resp_short"), 1100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, "alice", "resp_short"); err != nil {
			t.Fatalf("before expiry: %v", err)
		}
		time.Sleep(2200 * time.Millisecond)
		if _, err := s.Get(ctx, "alice", "resp_short"); !errors.Is(err, respstore.ErrNotFound) {
			t.Fatalf("after expiry: %v", err)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		s := open(t)
		if err := s.Put(ctx, rec("alice", "resp_3"), time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, "alice", "resp_3"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, "alice", "resp_3"); !errors.Is(err, respstore.ErrNotFound) {
			t.Fatalf("after delete: %v", err)
		}
		if err := s.Delete(ctx, "alice", "resp_3"); !errors.Is(err, respstore.ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}
	})
}

func TestMemory(t *testing.T) {
	storeSuite(t, func(*testing.T) respstore.Store { return respstore.NewMemory() })
}

func TestRedis(t *testing.T) {
	addr := redistest.Start(t)
	n := 0
	storeSuite(t, func(t *testing.T) respstore.Store {
		n++
		s, err := respstore.OpenRedis(context.Background(), respstore.RedisConfig{Addr: addr, Prefix: fmt.Sprintf("t%d:", n)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestPostgres(t *testing.T) {
	dsn := pgtest.Start(t)
	storeSuite(t, func(t *testing.T) respstore.Store {
		s, err := respstore.OpenPostgres(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
	// A record survives a new connection (a worker restart).
	ctx := context.Background()
	a, err := respstore.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Put(ctx, respstore.Record{ID: "resp_keep", Identity: "u", Response: []byte(`{}`)}, time.Hour); err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
	b, err := respstore.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Get(ctx, "u", "resp_keep"); err != nil {
		t.Fatalf("after reopening: %v", err)
	}
}

func TestPostgresBadDSNHidesPassword(t *testing.T) {
	_, err := respstore.OpenPostgres(context.Background(), "postgres://u:s3cret@[bad")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("got %v", err)
	}
}
