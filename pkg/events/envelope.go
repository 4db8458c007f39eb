// Package events is the Go client SDK of the Bus Events API: publish events,
// listen to NDJSON event streams with automatic reconnection, back-off and
// detection of silent dead connections, and acknowledge unicast deliveries.
// The worker, the REST front door and the tests use it; nothing else in this
// repository speaks the HTTP API by hand.
//
// It imports only the standard library.
package events

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Envelope is one event as the Events API stores and streams it.
type Envelope struct {
	// ID is assigned by the Events API ("evt_…"); opaque to clients.
	ID string `json:"id"`
	// Name is the dot-separated event name.
	Name string `json:"name"`
	// CorrelationID ties related events together (for bus.llm.* events, the
	// request id).
	CorrelationID string `json:"correlationId,omitempty"`
	// IdentityID is the JWT sub of the publisher, stamped by the Events API;
	// whatever a publisher sends here is ignored.
	IdentityID string `json:"identity_id,omitempty"`
	// IdentityType says what kind of principal published the event,
	// stamped by the Events API: IdentityService or IdentityUser (an
	// extension; empty from an Events API that does not stamp it).
	IdentityType string `json:"identity_type,omitempty"`
	// Deliveries counts how many times this event has been handed to a
	// consumer of the stream's group, this delivery included (acknowledged
	// unicast streams only; 0 elsewhere). Above 1 it is a redelivery.
	Deliveries int `json:"deliveries,omitempty"`
	// CreatedAt is when the Events API accepted the event.
	CreatedAt time.Time `json:"createdAt"`
	// Payload is the event's JSON payload.
	Payload json.RawMessage `json:"payload"`
}

// Event is what a publisher sends.
type Event struct {
	// Name is required.
	Name string `json:"name"`
	// CorrelationID is optional.
	CorrelationID string `json:"correlationId,omitempty"`
	// Payload is any JSON value; nil is sent as null.
	Payload json.RawMessage `json:"payload"`
}

// Principal kinds of Envelope.IdentityType.
const (
	// IdentityService is a service principal (a worker, a front door).
	IdentityService = "service"
	// IdentityUser is any other caller.
	IdentityUser = "user"
)

// FromService reports whether the envelope was published by a service
// principal, as the Events API stamped it. trustUnstamped treats an
// envelope without a stamp (from an Events API that does not stamp
// publishers) as a service's.
func (e Envelope) FromService(trustUnstamped bool) bool {
	return e.IdentityType == IdentityService || (e.IdentityType == "" && trustUnstamped)
}

// Accepted is the Events API's answer to a publish.
type Accepted struct {
	Accepted      bool   `json:"accepted"`
	ID            string `json:"id"`
	Name          string `json:"name"`
	CorrelationID string `json:"correlationId,omitempty"`
	// Groups is how many unicast groups of the name took the event (an
	// extension; nil from an Events API that does not report it). Zero
	// means no consumer group exists: nobody will ever take it.
	Groups *int `json:"groups,omitempty"`
}

// Delivery selects how a stream shares events with other listeners.
type Delivery string

const (
	// Broadcast: every listener gets every event (the default).
	Broadcast Delivery = "broadcast"
	// Unicast: each event goes to one consumer of the listener's group.
	Unicast Delivery = "unicast"
)

// DefaultGroup and DefaultConsumer are used when a unicast listener names none.
const (
	DefaultGroup    = "default"
	DefaultConsumer = "default"
)

var (
	nameRE = regexp.MustCompile(`^[a-z0-9_-]+(\.[a-z0-9_-]+)*$`)
	keyRE  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)
)

// ValidateName checks an event name: dot-separated lowercase identifiers of
// letters, digits, '-' and '_'; at most 200 bytes. Wildcards ('*', '>') are
// not names and are rejected.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("event name is required")
	case strings.ContainsAny(name, "*>"):
		return fmt.Errorf("wildcard event names are not allowed: %q", name)
	case len(name) > 200:
		return fmt.Errorf("event name is longer than 200 bytes")
	case !nameRE.MatchString(name):
		return fmt.Errorf("invalid event name %q: use dot-separated lowercase letters, digits, '-' and '_'", name)
	}
	return nil
}

// DeadLetterSuffix ends the dead-letter name of an event name.
const DeadLetterSuffix = ".dead"

// DeadLetterName is where a consumer moves an event it gave up on (for
// instance a request delivered too many times): name + ".dead", e.g.
// bus.llm.chat.completions.request.dead. It is a valid name for every
// valid name of at most 195 bytes, and it has the same access rules as
// name (the dead letters of bus.llm.* are service traffic too).
func DeadLetterName(name string) string { return name + DeadLetterSuffix }

// ValidateKey checks a group or consumer name: 1–128 URL-safe characters
// (letters, digits, '.', '_', '-'); no spaces, slashes or control
// characters.
func ValidateKey(kind, v string) error {
	if !keyRE.MatchString(v) {
		return fmt.Errorf("invalid %s %q: use 1-128 letters, digits, '.', '_' or '-'", kind, v)
	}
	return nil
}
