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
		name    string
		env     map[string]string
		workdir string
		want    []string
	}{
		{"defaults", map[string]string{"HOME": "/home/u"}, "/srv/work",
			[]string{"/home/u/.config/bus/auth", "/home/u/.codex/auth.json"}},
		{"all set", map[string]string{"HOME": "/home/u", "BUS_CONFIG_DIR": "/etc/bus", "BUS_API_TOKEN_FILE": "/run/secrets/bus-token", "CODEX_HOME": "/var/lib/codex"}, "/srv/work",
			[]string{"/etc/bus/auth", "/run/secrets/bus-token", "/run/secrets", "/var/lib/codex/auth.json", "/home/u/.codex/auth.json"}},
		{"token in home", map[string]string{"HOME": "/home/u", "BUS_API_TOKEN_FILE": "/home/u/token"}, "/srv/work",
			[]string{"/home/u/.config/bus/auth", "/home/u/token", "/home/u/.codex/auth.json"}},
		{"token above the workdir", map[string]string{"HOME": "/home/u", "BUS_API_TOKEN_FILE": "/srv/token"}, "/srv/work",
			[]string{"/home/u/.config/bus/auth", "/srv/token", "/home/u/.codex/auth.json"}},
		{"token beside the workdir", map[string]string{"HOME": "/home/u", "BUS_API_TOKEN_FILE": "/srv/work-token/t"}, "/srv/work",
			[]string{"/home/u/.config/bus/auth", "/srv/work-token/t", "/srv/work-token", "/home/u/.codex/auth.json"}},
		{"relative", map[string]string{"HOME": "/home/u", "BUS_API_TOKEN_FILE": "token", "CODEX_HOME": "codex"}, "/srv/work",
			[]string{"/home/u/.config/bus/auth", filepath.Join(cwd, "token"), cwd, filepath.Join(cwd, "codex", "auth.json"), "/home/u/.codex/auth.json"}},
	} {
		if got := secretPaths(busconfig.MapEnv(tc.env), tc.workdir); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
