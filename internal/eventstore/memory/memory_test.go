package memory_test

import (
	"testing"

	"github.com/busdk/bus-integration-codex/internal/eventstore"
	"github.com/busdk/bus-integration-codex/internal/eventstore/conformance"
	"github.com/busdk/bus-integration-codex/internal/eventstore/memory"
)

func TestConformance(t *testing.T) {
	conformance.Run(t, conformance.Harness{
		Open: func(*testing.T, string) eventstore.Backend { return memory.New(memory.Options{}) },
	})
}
