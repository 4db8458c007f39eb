// Package respstore keeps stored Responses API responses so a later request
// can continue the conversation with previous_response_id, and so the owner
// can GET or DELETE them. Records are scoped by identity: a lookup by
// another identity finds nothing, exactly as an unknown or expired id.
// Every worker of a group shares one store: memory for a single process,
// Redis or PostgreSQL (the durable Events backends' settings) for many.
//
// A continuation is stored as a link to the response it continued plus its
// own new items, never as a copy of the history, so a conversation costs
// what it says once. Reading a conversation (Chain) follows the links with
// the owner checked at every step, up to a bounded depth and size; storing
// a continuation keeps its whole chain at least as long as itself.
//
// Deleting a response removes it from GET and from previous_response_id,
// but not from the history of responses that already continued it: their
// conversation stays whole (the deleted response's items stay, hidden, in
// their chain until it expires), as they did when each response held a
// full copy of its history.
//
// It imports internal/turn and the Redis and PostgreSQL drivers.
package respstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/busdk/bus-integration-codex/internal/turn"
)

// Errors of a Store.
var (
	// ErrNotFound is returned for unknown, expired, deleted and other
	// identities' ids, and for a conversation whose earlier part expired.
	ErrNotFound = errors.New("response not found")
	// ErrTooLarge is returned by Put for a record over MaxRecordBytes.
	ErrTooLarge = errors.New("response too large to store")
	// ErrHistoryTooLong is returned by Chain for a conversation deeper or
	// larger than the store's bounds.
	ErrHistoryTooLong = errors.New("conversation too long")
)

// Defaults and bounds.
const (
	// DefaultTTL is how long a stored response is kept (as OpenAI: 30 days).
	DefaultTTL = 30 * 24 * time.Hour
	// MaxRecordBytes bounds one record: its items and response object (as
	// the Events API bounds an event: a larger answer could not be
	// delivered anyway).
	MaxRecordBytes = 8 << 20
	// DefaultMaxChainDepth bounds how many responses one conversation may
	// chain.
	DefaultMaxChainDepth = 1000
	// DefaultMaxHistoryBytes bounds the items of one conversation.
	DefaultMaxHistoryBytes = 64 << 20
	// DefaultMaxMemoryBytes bounds the memory store; the oldest records
	// are dropped to stay under it.
	DefaultMaxMemoryBytes = 256 << 20
)

// Record is one stored response.
type Record struct {
	// ID is the response id ("resp_…").
	ID string `json:"id"`
	// Identity owns the record (the JWT sub of the caller).
	Identity string `json:"identity"`
	// CreatedAt is when it was stored.
	CreatedAt time.Time `json:"createdAt"`
	// Previous is the response this one continued (its
	// previous_response_id), empty for the first of a conversation.
	Previous string `json:"previous,omitempty"`
	// Items are this response's own items: the input items it added and
	// its output items, in order (instructions excluded, as OpenAI does
	// not carry them over). A conversation is the items of its chain,
	// oldest first.
	Items []turn.Item `json:"items"`
	// Response is the response object as it was returned (empty in
	// records returned by Chain and once deleted).
	Response []byte `json:"response,omitempty"`
	// Deleted marks a response its owner deleted: Get no longer finds it,
	// but it stays a link of the chains that continued it.
	Deleted bool `json:"deleted,omitempty"`
}

// Store keeps records.
type Store interface {
	// Put stores r for ttl (ErrTooLarge over MaxRecordBytes). When r
	// continues a conversation, the records of its chain are kept at least
	// as long as r.
	Put(ctx context.Context, r Record, ttl time.Duration) error
	// Get returns identity's record id, or ErrNotFound (also when it was
	// deleted).
	Get(ctx context.Context, identity, id string) (Record, error)
	// Chain returns identity's record id and the records it continues,
	// newest first, without their response objects: ErrNotFound when id
	// is unknown, expired or deleted, or an earlier record of its
	// conversation expired; ErrHistoryTooLong past the depth or size
	// bound. Every record is identity's own.
	Chain(ctx context.Context, identity, id string) ([]Record, error)
	// Delete deletes identity's record id (see the package doc);
	// ErrNotFound when there is none.
	Delete(ctx context.Context, identity, id string) error
	// Close releases the store.
	Close() error
}

// History returns the items of a chain (as Chain returns it) oldest first.
func History(chain []Record) []turn.Item {
	var items []turn.Item
	for i := len(chain) - 1; i >= 0; i-- {
		items = append(items, chain[i].Items...)
	}
	return items
}

// Option configures a store.
type Option func(*options)

type options struct {
	now             func() time.Time
	maxDepth        int
	maxHistoryBytes int64
	maxMemoryBytes  int64
}

func newOptions(opts []Option) options {
	o := options{now: time.Now, maxDepth: DefaultMaxChainDepth, maxHistoryBytes: DefaultMaxHistoryBytes, maxMemoryBytes: DefaultMaxMemoryBytes}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// WithClock sets the clock records expire by (time.Now by default), so
// expiry can be tested without waiting.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithChainLimits bounds how many records (depth) and how many bytes of
// items one conversation may have (the defaults when 0).
func WithChainLimits(depth int, bytes int64) Option {
	return func(o *options) {
		if depth > 0 {
			o.maxDepth = depth
		}
		if bytes > 0 {
			o.maxHistoryBytes = bytes
		}
	}
}

// WithMaxBytes bounds the memory store (DefaultMaxMemoryBytes when 0); the
// durable stores ignore it (their size is the database's).
func WithMaxBytes(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.maxMemoryBytes = n
		}
	}
}

// encode returns r as stored: JSON, checked against MaxRecordBytes.
func encode(r Record) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("respstore: encode: %w", err)
	}
	if len(b) > MaxRecordBytes {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(b), MaxRecordBytes)
	}
	return b, nil
}

// broken is the error of a conversation whose record id is missing.
func broken(head, missing string) error {
	return fmt.Errorf("%w: the conversation of %s is incomplete (%s has expired)", ErrNotFound, head, missing)
}

// tooLong is the error of a conversation over the bounds.
func tooLong(o options) error {
	return fmt.Errorf("%w: a conversation may chain at most %d responses and %d bytes", ErrHistoryTooLong, o.maxDepth, o.maxHistoryBytes)
}
