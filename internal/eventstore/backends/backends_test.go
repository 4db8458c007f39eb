package backends_test

import (
	"context"
	"strings"
	"testing"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/eventstore/backends"
)

func TestOpenReadsTheCommonSettings(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string // "" for success, else part of the error
	}{
		{map[string]string{}, ""},
		{map[string]string{backends.EnvGroupIdleTTL: "90m", backends.EnvMemoryRetention: "100", backends.EnvMemoryMaxBytes: "1048576"}, ""},
		{map[string]string{backends.EnvGroupIdleTTL: "soon"}, backends.EnvGroupIdleTTL},
		{map[string]string{backends.EnvGroupIdleTTL: "-1h"}, backends.EnvGroupIdleTTL},
		{map[string]string{backends.EnvMemoryRetention: "0"}, backends.EnvMemoryRetention},
		{map[string]string{backends.EnvMemoryMaxBytes: "1MiB"}, backends.EnvMemoryMaxBytes},
	}
	for _, tc := range tests {
		b, err := backends.Open(context.Background(), "memory", busconfig.MapEnv(tc.env))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.env, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: got %v, want an error naming %s", tc.env, err, tc.want)
		}
		if b != nil {
			_ = b.Close()
		}
	}
}
