package selftest_test

import (
	"context"
	"strings"
	"testing"

	"github.com/busdk/bus-integration-codex/internal/selftest"
)

// The self-test goes through the front door and prints one line per
// check: six execution round trips, then retrieve and delete.
func TestSelfTest(t *testing.T) {
	var out strings.Builder
	if err := selftest.Run(context.Background(), &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	report := out.String()
	if !strings.Contains(report, "8 passed, 0 failed") {
		t.Fatalf("report:\n%s", report)
	}
	for _, want := range []string{"front door http://127.0.0.1:", "ok   chat.completions   stream", "ok   responses.retrieve", "ok   responses.delete", "then 404"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if n := strings.Count(report, "\nok   "); n != 8 {
		t.Errorf("%d ok lines, want 8:\n%s", n, report)
	}
}
