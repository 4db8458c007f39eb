// Package agents holds the end-to-end tests of what agent clients need from
// the bridge: function calling (chat completions and Responses, plain and
// streaming, parallel calls) and Responses conversation state
// (previous_response_id, item references, input item listing, per-identity
// ownership, GET/DELETE, a store shared by several workers and surviving
// their restarts), all through the official openai-go client, the front
// door, the Events API and real workers on the real codex binary with the
// fake model server.
package agents
