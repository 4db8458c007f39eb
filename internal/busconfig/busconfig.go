// Package busconfig locates the Bus configuration root and the local
// development credentials kept under it: the generated HS256 secret shared by
// the local token issuer and the local servers, the local identity, and the
// user's default API token file.
//
// It imports only the standard library.
package busconfig

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Env is a lookup function for environment variables (os.LookupEnv in
// production, a map in tests).
type Env func(key string) (string, bool)

// Getenv returns the value of key, or "" when unset.
func (e Env) Getenv(key string) string {
	if e == nil {
		return ""
	}
	v, _ := e(key)
	return v
}

// OSEnv reads the process environment.
func OSEnv() Env { return os.LookupEnv }

// MapEnv is an Env backed by a map.
func MapEnv(m map[string]string) Env {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// Dir returns the Bus configuration root: $BUS_CONFIG_DIR, else
// $XDG_CONFIG_HOME/bus, else ~/.config/bus.
func Dir(env Env) (string, error) {
	if d := env.Getenv("BUS_CONFIG_DIR"); d != "" {
		return d, nil
	}
	if d := env.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "bus"), nil
	}
	home := env.Getenv("HOME")
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("busconfig: no BUS_CONFIG_DIR, XDG_CONFIG_HOME or home directory: %w", err)
		}
		home = h
	}
	return filepath.Join(home, ".config", "bus"), nil
}

// AuthDir is the auth/ folder under the configuration root.
func AuthDir(env Env) (string, error) {
	d, err := Dir(env)
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "auth"), nil
}

// TokenFile is the user's default API token file, auth/api-token.
func TokenFile(env Env) (string, error) {
	d, err := AuthDir(env)
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "api-token"), nil
}

const (
	secretFile   = "local-hs256-secret"
	identityFile = "local-identity"
)

// LocalSecret returns the generated local HS256 secret, creating it (32
// random bytes, hex, file mode 0600) on first use. It is what the local
// token issuer and the local servers share when no secret variable is set.
func LocalSecret(env Env) ([]byte, error) {
	v, err := readOrCreate(env, secretFile, 32)
	return []byte(v), err
}

// LocalIdentity returns the local operator identity (a random UUID stored
// under auth/), used as the default token subject.
func LocalIdentity(env Env) (string, error) {
	return readOrCreate(env, identityFile, 0)
}

// WriteSecretFile writes data to path with mode 0600, creating parent
// directories with mode 0700. The file is replaced atomically.
func WriteSecretFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("busconfig: create %s: %w", filepath.Dir(path), err)
	}
	tmp, err := writeTemp(filepath.Dir(path), data)
	if err != nil {
		return fmt.Errorf("busconfig: write %s: %w", path, err)
	}
	defer os.Remove(tmp)
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("busconfig: write %s: %w", path, err)
	}
	return nil
}

// writeTemp writes data to a new mode-0600 temporary file in dir and
// returns its path.
func writeTemp(dir string, data []byte) (string, error) {
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if cerr := f.Chmod(0o600); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// readOrCreate reads auth/<name>; when it is missing it creates it with a
// random value (n random bytes as hex, or a UUID when n is 0). Creation is
// race-free across processes: the first writer wins and the others read it.
func readOrCreate(env Env, name string, n int) (string, error) {
	dir, err := AuthDir(env)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, name)
	if b, err := os.ReadFile(path); err == nil {
		if v := strings.TrimSpace(string(b)); v != "" {
			return v, nil
		}
		return "", fmt.Errorf("busconfig: %s is empty; delete it to generate a new value", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("busconfig: read %s: %w", path, err)
	}
	var value string
	if n == 0 {
		value = NewUUID()
	} else {
		buf := make([]byte, n)
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("busconfig: random: %w", err)
		}
		value = hex.EncodeToString(buf)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("busconfig: create %s: %w", dir, err)
	}
	// Write the value to a temporary file, then link it into place: the
	// link appears complete or not at all, and fails when another process
	// got there first, whose value then wins.
	tmp, err := writeTemp(dir, []byte(value+"\n"))
	if err != nil {
		return "", fmt.Errorf("busconfig: write %s: %w", path, err)
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readOrCreate(env, name, n)
		}
		return "", fmt.Errorf("busconfig: create %s: %w", path, err)
	}
	return value, nil
}

// NewUUID returns a random (version 4) UUID.
func NewUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
