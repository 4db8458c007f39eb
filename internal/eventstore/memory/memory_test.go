package memory_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/eventstore"
	"github.com/busdk/bus-integration-codex/internal/eventstore/conformance"
	"github.com/busdk/bus-integration-codex/internal/eventstore/memory"
	"github.com/busdk/bus-integration-codex/pkg/events"
)

func TestConformance(t *testing.T) {
	conformance.Run(t, conformance.Harness{
		Open: func(_ *testing.T, _ string, o conformance.Options) eventstore.Backend {
			return memory.New(memory.Options{GroupIdleTTL: o.GroupIdleTTL})
		},
	})
}

// replay returns the payload sizes of the retained events of names, in
// publish order.
func replay(t *testing.T, b *memory.Backend, names ...string) []int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub, err := b.Subscribe(ctx, eventstore.Subscription{Names: names, Delivery: events.Broadcast, Replay: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close() }()
	var got []int
	for {
		env, err := sub.Next(ctx)
		if errors.Is(err, eventstore.ErrEndOfSnapshot) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, len(env.Payload))
	}
}

func blob(n int) json.RawMessage { return json.RawMessage(`"` + strings.Repeat("x", n-2) + `"`) }

// TestRetentionByBytes: the oldest events of any name go once the retained
// bytes exceed RetentionBytes, however few events there are; the event
// just published stays even when it alone exceeds the budget.
func TestRetentionByBytes(t *testing.T) {
	const budget = 1 << 20
	b := memory.New(memory.Options{RetentionBytes: budget})
	defer func() { _ = b.Close() }()
	ctx := context.Background()
	names := []string{"test.bytes.a", "test.bytes.b"}
	const size, n = 100 << 10, 50 // 5 MB in all, 5 times the budget
	for i := range n {
		if _, _, err := b.Publish(ctx, events.Envelope{Name: names[i%2], Payload: blob(size + i)}); err != nil {
			t.Fatal(err)
		}
	}
	got := replay(t, b, names...)
	if total := len(got) * size; total > budget || len(got) < budget/size-2 {
		t.Fatalf("kept %d events of %d bytes (%d bytes), want about the last %d within the %d-byte budget", len(got), size, total, budget/size, budget)
	}
	for j, s := range got { // the newest, in order
		if want := size + n - len(got) + j; s != want {
			t.Fatalf("retained event %d has %d bytes, want %d (the newest events must be kept)", j, s, want)
		}
	}
	if _, _, err := b.Publish(ctx, events.Envelope{Name: "test.bytes.big", Payload: blob(2 * budget)}); err != nil {
		t.Fatal(err)
	}
	if got := replay(t, b, append(names, "test.bytes.big")...); len(got) != 1 || got[0] != 2*budget {
		t.Fatalf("after an event larger than the budget: kept %v, want only it", got)
	}
}

// TestRetentionByCountAcrossManyNames: many small events of many names stay
// within the byte budget too.
func TestRetentionByCountAcrossManyNames(t *testing.T) {
	b := memory.New(memory.Options{Retention: 3, RetentionBytes: 64 << 10})
	defer func() { _ = b.Close() }()
	ctx := context.Background()
	for i := range 5000 {
		name := fmt.Sprintf("test.many.n%d", i%500)
		if _, _, err := b.Publish(ctx, events.Envelope{Name: name, Payload: json.RawMessage(`1`)}); err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	for i := range 500 {
		got := len(replay(t, b, fmt.Sprintf("test.many.n%d", i)))
		if got > 3 {
			t.Fatalf("name %d keeps %d events, want at most Retention=3", i, got)
		}
		total += got
	}
	if total == 0 || total*200 > 64<<10 {
		t.Fatalf("%d events kept in all, want some, within 64 KiB at about 200 bytes each", total)
	}
}
