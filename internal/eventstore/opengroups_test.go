package eventstore_test

import (
	"slices"
	"testing"

	"github.com/busdk/bus-integration-codex/internal/eventstore"
)

// A group is refreshed while a subscription of it is open, once more after
// its last one closed, and then no longer.
func TestOpenGroupsRefreshing(t *testing.T) {
	var g eventstore.OpenGroups[string]
	if got := g.Refreshing(); len(got) != 0 {
		t.Fatalf("zero value refreshes %v", got)
	}
	g.Track([]string{"a", "b"}, 1)
	g.Track([]string{"a"}, 1)
	g.Track([]string{"a", "b"}, -1)
	steps := []struct {
		name string
		want []string
	}{
		{"a still open, b just left", []string{"a", "b"}},
		{"b refreshed once after it left", []string{"a"}},
	}
	for _, s := range steps {
		got := g.Refreshing()
		slices.Sort(got)
		if !slices.Equal(got, s.want) {
			t.Fatalf("%s: got %v, want %v", s.name, got, s.want)
		}
	}
	g.Track([]string{"a"}, -1)
	g.Track([]string{"a"}, 1) // reopened before the refresh: counted once
	if got := g.Refreshing(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("reopened: got %v", got)
	}
}
