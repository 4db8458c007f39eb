package busconfig_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
)

func TestDir(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"BUS_CONFIG_DIR": "/b", "XDG_CONFIG_HOME": "/x", "HOME": "/h"}, "/b"},
		{map[string]string{"BUS_CONFIG_DIR": "", "XDG_CONFIG_HOME": "/x", "HOME": "/h"}, "/x/bus"},
		{map[string]string{"XDG_CONFIG_HOME": "/x", "HOME": "/h"}, "/x/bus"},
		{map[string]string{"HOME": "/h"}, "/h/.config/bus"},
		{map[string]string{"XDG_CONFIG_HOME": "", "HOME": "/h"}, "/h/.config/bus"},
	}
	for _, tc := range tests {
		env := busconfig.MapEnv(tc.env)
		got, err := busconfig.Dir(env)
		if err != nil || got != tc.want {
			t.Errorf("Dir(%v) = %q, %v; want %q", tc.env, got, err, tc.want)
		}
		auth, _ := busconfig.AuthDir(env)
		tok, _ := busconfig.TokenFile(env)
		if auth != filepath.Join(tc.want, "auth") || tok != filepath.Join(tc.want, "auth", "api-token") {
			t.Errorf("AuthDir %q TokenFile %q", auth, tok)
		}
	}
}

func TestEnv(t *testing.T) {
	var nilEnv busconfig.Env
	if nilEnv.Getenv("X") != "" {
		t.Error("nil env")
	}
	env := busconfig.MapEnv(map[string]string{"A": "1"})
	if env.Getenv("A") != "1" || env.Getenv("B") != "" {
		t.Error("MapEnv")
	}
	if _, ok := env("B"); ok {
		t.Error("MapEnv reports an unset key as set")
	}
}

func TestLocalSecret(t *testing.T) {
	dir := t.TempDir()
	env := busconfig.MapEnv(map[string]string{"BUS_CONFIG_DIR": dir})
	s1, err := busconfig.LocalSecret(env)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).Match(s1) {
		t.Errorf("secret %q is not 32 hex bytes", s1)
	}
	path := filepath.Join(dir, "auth", "local-hs256-secret")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("secret file mode %o", st.Mode().Perm())
	}
	if st, _ := os.Stat(filepath.Join(dir, "auth")); st.Mode().Perm() != 0o700 {
		t.Errorf("auth dir mode %o", st.Mode().Perm())
	}
	s2, err := busconfig.LocalSecret(env)
	if err != nil || string(s2) != string(s1) {
		t.Errorf("second read %q, %v; want %q", s2, err, s1)
	}
	// Another root gets another secret.
	s3, _ := busconfig.LocalSecret(busconfig.MapEnv(map[string]string{"BUS_CONFIG_DIR": t.TempDir()}))
	if string(s3) == string(s1) {
		t.Error("two roots share a secret")
	}
	// An empty file is an error, not silently replaced.
	if err := os.WriteFile(path, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := busconfig.LocalSecret(env); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty file: %v", err)
	}
}

// Concurrent first use (several local processes starting at once) must
// agree on one secret.
func TestLocalSecretConcurrent(t *testing.T) {
	env := busconfig.MapEnv(map[string]string{"BUS_CONFIG_DIR": t.TempDir()})
	var wg sync.WaitGroup
	got := make([]string, 8)
	for i := range got {
		wg.Go(func() {
			s, err := busconfig.LocalSecret(env)
			if err != nil {
				t.Error(err)
			}
			got[i] = string(s)
		})
	}
	wg.Wait()
	for _, s := range got {
		if s != got[0] {
			t.Fatalf("concurrent first use disagrees: %q", got)
		}
	}
}

func TestLocalIdentity(t *testing.T) {
	env := busconfig.MapEnv(map[string]string{"BUS_CONFIG_DIR": t.TempDir()})
	id, err := busconfig.LocalIdentity(env)
	if err != nil {
		t.Fatal(err)
	}
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	if !uuid.MatchString(id) {
		t.Errorf("identity %q is not a v4 UUID", id)
	}
	if again, _ := busconfig.LocalIdentity(env); again != id {
		t.Errorf("identity changed: %q then %q", id, again)
	}
	if a, b := busconfig.NewUUID(), busconfig.NewUUID(); a == b || !uuid.MatchString(a) {
		t.Errorf("NewUUID %q %q", a, b)
	}
}

func TestWriteSecretFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "token")
	for _, data := range []string{"first\n", "second\n"} {
		if err := busconfig.WriteSecretFile(path, []byte(data)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != data {
			t.Errorf("read %q, %v", b, err)
		}
		st, _ := os.Stat(path)
		if st.Mode().Perm() != 0o600 {
			t.Errorf("mode %o", st.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("leftover temporary files: %v", entries)
	}
	if err := busconfig.WriteSecretFile(filepath.Join(path, "under-a-file"), []byte("x")); err == nil {
		t.Error("writing under a file succeeded")
	}
}
