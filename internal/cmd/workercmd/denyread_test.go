package workercmd

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
)

func TestSecretPaths(t *testing.T) {
	cwd, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"defaults", map[string]string{"HOME": "/home/u"},
			[]string{"/home/u/.config/bus/auth", "/home/u/.codex/auth.json"}},
		{"all set", map[string]string{"HOME": "/home/u", "BUS_CONFIG_DIR": "/etc/bus", "BUS_API_TOKEN_FILE": "/run/secrets/bus-token", "CODEX_HOME": "/var/lib/codex"},
			[]string{"/etc/bus/auth", "/run/secrets/bus-token", "/var/lib/codex/auth.json"}},
		{"relative", map[string]string{"HOME": "/home/u", "BUS_API_TOKEN_FILE": "token", "CODEX_HOME": "codex"},
			[]string{"/home/u/.config/bus/auth", filepath.Join(cwd, "token"), filepath.Join(cwd, "codex", "auth.json")}},
	} {
		if got := secretPaths(busconfig.MapEnv(tc.env)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
