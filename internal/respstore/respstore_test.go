package respstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/busdk/bus-integration-codex/internal/respstore"
	"github.com/busdk/bus-integration-codex/internal/testutil/pgtest"
	"github.com/busdk/bus-integration-codex/internal/testutil/redistest"
	"github.com/busdk/bus-integration-codex/internal/turn"
)

// clock is a settable clock the stores expire records by.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Now().UTC().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

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

// opener opens a fresh, empty store with opts.
type opener func(t *testing.T, opts ...respstore.Option) respstore.Store

func text(role turn.Role, s string) turn.Item {
	return turn.Item{Type: turn.ItemMessage, Role: role, Content: []turn.Part{{Type: turn.PartText, Text: s}}}
}

// storeSuite is the behaviour every Store shares.
func storeSuite(t *testing.T, open opener) {
	ctx := context.Background()
	rec := func(identity, id, previous string) respstore.Record {
		return respstore.Record{
			ID: id, Identity: identity, CreatedAt: time.Now().UTC().Truncate(time.Second), Previous: previous,
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
	put := func(t *testing.T, s respstore.Store, r respstore.Record, ttl time.Duration) {
		t.Helper()
		if err := s.Put(ctx, r, ttl); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(chain []respstore.Record) string {
		var out []string
		for _, r := range chain {
			out = append(out, r.ID)
		}
		return strings.Join(out, ",")
	}
	t.Run("PutGetRoundTrip", func(t *testing.T) {
		s := open(t)
		want := rec("alice", "resp_1", "")
		put(t, s, want, time.Hour)
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
		put(t, s, rec("alice", "resp_2", ""), time.Hour)
		if _, err := s.Get(ctx, "mallory", "resp_2"); !errors.Is(err, respstore.ErrNotFound) {
			t.Fatalf("other identity: %v", err)
		}
		if _, err := s.Chain(ctx, "mallory", "resp_2"); !errors.Is(err, respstore.ErrNotFound) {
			t.Fatalf("other identity chain: %v", err)
		}
		if err := s.Delete(ctx, "mallory", "resp_2"); !errors.Is(err, respstore.ErrNotFound) {
			t.Fatalf("other identity delete: %v", err)
		}
		if _, err := s.Get(ctx, "alice", "resp_2"); err != nil {
			t.Fatalf("owner after a foreign delete: %v", err)
		}
	})
	t.Run("UnknownAndExpired", func(t *testing.T) {
		c := newClock()
		s := open(t, respstore.WithClock(c.Now))
		if _, err := s.Get(ctx, "alice", "resp_unknown"); !errors.Is(err, respstore.ErrNotFound) {
			t.Fatalf("unknown: %v", err)
		}
		put(t, s, rec("alice", "resp_short", ""), time.Hour)
		c.advance(59 * time.Minute)
		if _, err := s.Get(ctx, "alice", "resp_short"); err != nil {
			t.Fatalf("before expiry: %v", err)
		}
		c.advance(2 * time.Minute)
		if _, err := s.Get(ctx, "alice", "resp_short"); !errors.Is(err, respstore.ErrNotFound) {
			t.Fatalf("after expiry: %v", err)
		}
		if _, err := s.Chain(ctx, "alice", "resp_short"); !errors.Is(err, respstore.ErrNotFound) {
			t.Fatalf("chain after expiry: %v", err)
		}
		if err := s.Delete(ctx, "alice", "resp_short"); !errors.Is(err, respstore.ErrNotFound) {
			t.Fatalf("delete after expiry: %v", err)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		s := open(t)
		put(t, s, rec("alice", "resp_3", ""), time.Hour)
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
	t.Run("Chain", func(t *testing.T) {
		s := open(t)
		put(t, s, rec("alice", "resp_a", ""), time.Hour)
		put(t, s, rec("alice", "resp_b", "resp_a"), time.Hour)
		put(t, s, rec("alice", "resp_c", "resp_b"), time.Hour)
		chain, err := s.Chain(ctx, "alice", "resp_c")
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(chain); got != "resp_c,resp_b,resp_a" {
			t.Fatalf("chain %s", got)
		}
		for _, r := range chain {
			if len(r.Items) != 7 || r.Response != nil || r.Identity != "alice" {
				t.Fatalf("chain record %+v: want its own 7 items, no response object", r)
			}
		}
		if h := respstore.History(chain); len(h) != 21 || h[0].Content[0].Text != "hi resp_a" || h[14].Content[0].Text != "hi resp_c" {
			t.Fatalf("history %+v", h)
		}
	})
	t.Run("ChainOwnerCheckedAtEveryStep", func(t *testing.T) {
		s := open(t)
		put(t, s, rec("alice", "resp_secret", ""), time.Hour)
		// mallory's record claims to continue alice's.
		put(t, s, rec("mallory", "resp_m", "resp_secret"), time.Hour)
		chain, err := s.Chain(ctx, "mallory", "resp_m")
		if !errors.Is(err, respstore.ErrNotFound) {
			t.Fatalf("chain through another identity's record: %v %+v", err, chain)
		}
	})
	t.Run("DeleteKeepsLaterChains", func(t *testing.T) {
		s := open(t)
		put(t, s, rec("alice", "resp_d1", ""), time.Hour)
		put(t, s, rec("alice", "resp_d2", "resp_d1"), time.Hour)
		if err := s.Delete(ctx, "alice", "resp_d1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Chain(ctx, "alice", "resp_d1"); !errors.Is(err, respstore.ErrNotFound) {
			t.Fatalf("a deleted response can be continued: %v", err)
		}
		chain, err := s.Chain(ctx, "alice", "resp_d2")
		if err != nil || ids(chain) != "resp_d2,resp_d1" {
			t.Fatalf("the later chain after a delete: %s %v", ids(chain), err)
		}
	})
	t.Run("ContinuationKeepsItsChain", func(t *testing.T) {
		c := newClock()
		s := open(t, respstore.WithClock(c.Now))
		put(t, s, rec("alice", "resp_old", ""), time.Hour)
		c.advance(50 * time.Minute)
		put(t, s, rec("alice", "resp_new", "resp_old"), time.Hour)
		c.advance(20 * time.Minute) // resp_old's own hour has passed
		chain, err := s.Chain(ctx, "alice", "resp_new")
		if err != nil || ids(chain) != "resp_new,resp_old" {
			t.Fatalf("chain after the first record's own expiry: %s %v", ids(chain), err)
		}
		c.advance(time.Hour)
		if _, err := s.Chain(ctx, "alice", "resp_new"); !errors.Is(err, respstore.ErrNotFound) {
			t.Fatalf("after the whole chain expired: %v", err)
		}
	})
	t.Run("BrokenChainIsNotFound", func(t *testing.T) {
		s := open(t)
		put(t, s, rec("alice", "resp_orphan", "resp_never_stored"), time.Hour)
		if _, err := s.Chain(ctx, "alice", "resp_orphan"); !errors.Is(err, respstore.ErrNotFound) {
			t.Fatalf("a chain with a missing link: %v", err)
		}
	})
	t.Run("ChainBounds", func(t *testing.T) {
		s := open(t, respstore.WithChainLimits(3, 0))
		prev := ""
		for i := range 4 {
			id := fmt.Sprintf("resp_n%d", i)
			put(t, s, rec("alice", id, prev), time.Hour)
			prev = id
		}
		if chain, err := s.Chain(ctx, "alice", "resp_n2"); err != nil || len(chain) != 3 {
			t.Fatalf("a chain at the depth bound: %d %v", len(chain), err)
		}
		if _, err := s.Chain(ctx, "alice", "resp_n3"); !errors.Is(err, respstore.ErrHistoryTooLong) {
			t.Fatalf("a chain past the depth bound: %v", err)
		}
		items, _ := json.Marshal(rec("alice", "x", "").Items)
		s = open(t, respstore.WithChainLimits(0, int64(len(items))*5/2)) // less than three records' items
		put(t, s, rec("alice", "resp_s0", ""), time.Hour)
		put(t, s, rec("alice", "resp_s1", "resp_s0"), time.Hour)
		put(t, s, rec("alice", "resp_s2", "resp_s1"), time.Hour)
		if _, err := s.Chain(ctx, "alice", "resp_s2"); !errors.Is(err, respstore.ErrHistoryTooLong) {
			t.Fatalf("a chain past the size bound: %v", err)
		}
	})
	t.Run("RecordSizeBound", func(t *testing.T) {
		s := open(t)
		big := rec("alice", "resp_big", "")
		big.Items = []turn.Item{text(turn.RoleUser, strings.Repeat("x", respstore.MaxRecordBytes))}
		if err := s.Put(ctx, big, time.Hour); !errors.Is(err, respstore.ErrTooLarge) {
			t.Fatalf("a record over the bound: %v", err)
		}
		if _, err := s.Get(ctx, "alice", "resp_big"); !errors.Is(err, respstore.ErrNotFound) {
			t.Fatalf("the refused record was stored: %v", err)
		}
	})
}

func TestMemory(t *testing.T) {
	storeSuite(t, func(_ *testing.T, opts ...respstore.Option) respstore.Store { return respstore.NewMemory(opts...) })
}

// TestMemoryByteBound: the memory store stays under its byte bound by
// dropping its oldest records.
func TestMemoryByteBound(t *testing.T) {
	ctx := context.Background()
	s := respstore.NewMemory(respstore.WithMaxBytes(64 << 10))
	for i := range 200 {
		r := respstore.Record{ID: fmt.Sprintf("resp_%d", i), Identity: "alice",
			Items: []turn.Item{text(turn.RoleUser, strings.Repeat("y", 1<<10))}}
		if err := s.Put(ctx, r, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Get(ctx, "alice", "resp_0"); !errors.Is(err, respstore.ErrNotFound) {
		t.Fatalf("the oldest record was kept past the bound: %v", err)
	}
	if _, err := s.Get(ctx, "alice", "resp_199"); err != nil {
		t.Fatalf("the newest record: %v", err)
	}
	kept := 0
	for i := range 200 {
		if _, err := s.Get(ctx, "alice", fmt.Sprintf("resp_%d", i)); err == nil {
			kept++
		}
	}
	if kept*(1<<10) > 64<<10 || kept < 10 {
		t.Fatalf("%d records of 1 KiB kept under a 64 KiB bound", kept)
	}
}

func TestRedis(t *testing.T) {
	addr := redistest.Start(t)
	n := 0
	storeSuite(t, func(t *testing.T, opts ...respstore.Option) respstore.Store {
		n++
		s, err := respstore.OpenRedis(context.Background(), respstore.RedisConfig{Addr: addr, Prefix: fmt.Sprintf("t%d:", n)}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
	// Redis itself drops expired records.
	ctx := context.Background()
	s, err := respstore.OpenRedis(ctx, respstore.RedisConfig{Addr: addr, Prefix: "ttl:"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Put(ctx, respstore.Record{ID: "resp_ttl", Identity: "u"}, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := s.Get(ctx, "u", "resp_ttl"); errors.Is(err, respstore.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the record never expired")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPostgres(t *testing.T) {
	dsn := pgtest.Start(t)
	storeSuite(t, func(t *testing.T, opts ...respstore.Option) respstore.Store {
		s, err := respstore.OpenPostgres(context.Background(), dsn, opts...) // the suite's ids are distinct
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
	t.Run("EarlierTable", func(t *testing.T) { postgresEarlierTable(t, dsn) })
}

// postgresEarlierTable: a table of the earlier version (records that hold
// their whole history) is upgraded in place and its records still serve as
// conversations of one.
func postgresEarlierTable(t *testing.T, adminDSN string) {
	ctx := context.Background()
	dsn, err := pgtest.CreateDatabase(ctx, adminDSN, "respstore_v1")
	if err != nil {
		t.Fatal(err)
	}
	old, err := respstore.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	_ = old.Close()
	// Put the table back the way the earlier version made it, with a row.
	conn, err := pgConn(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		`ALTER TABLE bus_llm_responses DROP COLUMN previous, DROP COLUMN deleted`,
		`INSERT INTO bus_llm_responses (identity, id, created_at, expires_at, record) VALUES ('u', 'resp_v1', now(), now() + interval '1 hour',
			'{"id":"resp_v1","identity":"u","createdAt":"2026-01-01T00:00:00Z","items":[{"type":"message","role":"user","content":[{"type":"text","text":"old"}]}],"response":"e30="}')`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	s, err := respstore.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	chain, err := s.Chain(ctx, "u", "resp_v1")
	if err != nil || len(chain) != 1 || len(chain[0].Items) != 1 {
		t.Fatalf("an earlier record as a chain: %+v %v", chain, err)
	}
	if r, err := s.Get(ctx, "u", "resp_v1"); err != nil || string(r.Response) != `{}` {
		t.Fatalf("an earlier record: %+v %v", r, err)
	}
}

func pgConn(ctx context.Context, dsn string) (*pgx.Conn, error) { return pgx.Connect(ctx, dsn) }

func TestPostgresBadDSNHidesPassword(t *testing.T) {
	_, err := respstore.OpenPostgres(context.Background(), "postgres://u:s3cret@[bad")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("got %v", err)
	}
}
