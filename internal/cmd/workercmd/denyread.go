package workercmd

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
)

// secretPaths are what the commands Codex runs in agent mode must not
// read (codex.Config.DenyRead): the Bus auth directory (the generated
// HS256 secret, the default token file), the worker's token file
// (BUS_API_TOKEN_FILE) and its directory, and Codex's login
// ($CODEX_HOME/auth.json, ~/.codex/auth.json). A file rotated by renaming
// a new one over it escapes the deny of a command running at that moment
// (the kernel detaches the file's mount), and a Kubernetes secret is a
// symbolic link swapped on update, so the token file's directory is
// denied as well, unless it is the root, the home directory, or holds the
// workdir.
func secretPaths(env busconfig.Env, workdir string) []string {
	var paths []string
	add := func(p string) string {
		abs, err := filepath.Abs(p)
		if err == nil {
			paths = append(paths, abs)
		}
		return abs
	}
	if dir, err := busconfig.AuthDir(env); err == nil {
		add(dir)
	}
	home := env.Getenv("HOME")
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	if f := env.Getenv("BUS_API_TOKEN_FILE"); f != "" {
		dir := filepath.Dir(add(f))
		work, _ := filepath.Abs(workdir)
		if dir != "/" && dir != filepath.Clean(home) && work != dir && !strings.HasPrefix(work, dir+"/") {
			paths = append(paths, dir)
		}
	}
	// Codex's login in its home, and in the default home it may be
	// copied from (as the compose image does).
	if h := env.Getenv("CODEX_HOME"); h != "" {
		add(filepath.Join(h, "auth.json"))
	}
	if home != "" {
		add(filepath.Join(home, ".codex", "auth.json"))
	}
	return paths
}
