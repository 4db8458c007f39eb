package workercmd

import (
	"os"
	"path/filepath"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
)

// secretPaths are what the commands Codex runs in agent mode must not
// read (codex.Config.DenyRead): the Bus auth directory (the generated
// HS256 secret, the default token file), the worker's token file
// (BUS_API_TOKEN_FILE), and Codex's own login ($CODEX_HOME/auth.json).
func secretPaths(env busconfig.Env) []string {
	var paths []string
	add := func(p string) {
		if abs, err := filepath.Abs(p); err == nil {
			paths = append(paths, abs)
		}
	}
	if dir, err := busconfig.AuthDir(env); err == nil {
		add(dir)
	}
	if f := env.Getenv("BUS_API_TOKEN_FILE"); f != "" {
		add(f)
	}
	home := env.Getenv("CODEX_HOME")
	if home == "" {
		if h := env.Getenv("HOME"); h != "" {
			home = filepath.Join(h, ".codex")
		} else if h, err := os.UserHomeDir(); err == nil {
			home = filepath.Join(h, ".codex")
		}
	}
	if home != "" {
		add(filepath.Join(home, "auth.json"))
	}
	return paths
}
