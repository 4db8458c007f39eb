// Package scaleout holds the scale-out test of the BusDK LLM path: real
// processes — two bus-api-provider-events replicas on one shared Redis or
// PostgreSQL server, three bus-integration-codex workers in one unicast
// group spread over the replicas, and a bus-api-provider-llm front door —
// built from this module and driven over HTTP, with one worker killed
// mid-run. The package has no code besides its tests; docs/SCALING.md
// describes the deployment the test reproduces.
package scaleout
