// Package cmd_test checks the shipped commands as a whole.
package cmd_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The shipped binaries (everything under cmd/) never link test support:
// no internal/testutil package and no "testing" in their import graphs.
func TestShippedCommandsLinkNoTestSupport(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	cmds := strings.Fields(string(out))
	if len(cmds) < 6 {
		t.Fatalf("go list found %d commands: %v", len(cmds), cmds)
	}
	for _, c := range cmds {
		deps, err := exec.Command("go", "list", "-deps", c).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", c, err)
		}
		for _, d := range strings.Fields(string(deps)) {
			if strings.Contains(d, "/internal/testutil") || d == "testing" {
				t.Errorf("%s links %s", c, d)
			}
		}
	}
}
