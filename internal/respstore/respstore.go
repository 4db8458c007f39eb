// Package respstore keeps stored Responses API responses so a later request
// can continue the conversation with previous_response_id, and so the owner
// can GET or DELETE them. Records are scoped by identity: a lookup by
// another identity finds nothing, exactly as an unknown or expired id.
// Every worker of a group shares one store: memory for a single process,
// Redis or PostgreSQL (the durable Events backends' settings) for many.
//
// It imports internal/turn and the Redis and PostgreSQL drivers.
package respstore

import (
	"context"
	"errors"
	"time"

	"github.com/busdk/bus-integration-codex/internal/turn"
)

// ErrNotFound is returned for unknown, expired and other identities' ids.
var ErrNotFound = errors.New("response not found")

// DefaultTTL is how long a stored response is kept (as OpenAI: 30 days).
const DefaultTTL = 30 * 24 * time.Hour

// Record is one stored response.
type Record struct {
	// ID is the response id ("resp_…").
	ID string `json:"id"`
	// Identity owns the record (the JWT sub of the caller).
	Identity string `json:"identity"`
	// CreatedAt is when it was stored.
	CreatedAt time.Time `json:"createdAt"`
	// Items is the conversation a continuation resumes: every earlier
	// input item and output item, in order (instructions excluded, as
	// OpenAI does not carry them over).
	Items []turn.Item `json:"items"`
	// Response is the response object as it was returned.
	Response []byte `json:"response"`
}

// Store keeps records.
type Store interface {
	// Put stores r for ttl.
	Put(ctx context.Context, r Record, ttl time.Duration) error
	// Get returns identity's record id, or ErrNotFound.
	Get(ctx context.Context, identity, id string) (Record, error)
	// Delete removes identity's record id; ErrNotFound when there is none.
	Delete(ctx context.Context, identity, id string) error
	// Close releases the store.
	Close() error
}
