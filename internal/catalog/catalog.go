// Package catalog is the model catalog of the REST front door: the public
// model ids served by GET /v1/models and accepted in execution requests.
//
// A catalog file is an OpenAI model list,
//
//	{"object": "list", "data": [{"id": "codex-chatgpt", "object": "model", "created": 0, "owned_by": "bus-codex"}]}
//
// or a bare array of model objects. An entry may also carry the alias fields
// "codex_model" (the Codex model that runs requests for this id) and
// "reasoning_effort" (none, minimal, low, medium, high or xhigh), and
// "mode" (model, the default, or agent), and "web_search": false to turn
// hosted web search off for that model. The worker uses them; they are
// never rendered in /v1/models. Unknown fields are
// ignored so OpenAI model lists load unchanged.
//
// It imports only the standard library.
package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"unicode"
)

// ErrInvalid is wrapped by every validation error of a catalog file.
var ErrInvalid = errors.New("invalid model catalog")

// Default model values.
const (
	// DefaultModelID is the id of the built-in catalog's only model.
	DefaultModelID = "codex-chatgpt"
	// DefaultOwner is the owned_by of the built-in model, and of file
	// entries that leave owned_by empty.
	DefaultOwner = "bus-codex"
	// ObjectModel is the OpenAI object type of a model.
	ObjectModel = "model"
	// ObjectList is the OpenAI object type of a list.
	ObjectList = "list"
)

// ReasoningEfforts lists the accepted reasoning_effort values.
func ReasoningEfforts() []string {
	return []string{"none", "minimal", "low", "medium", "high", "xhigh"}
}

// Entry is one catalog model with its worker-side alias fields.
type Entry struct {
	// ID is the public model id clients send.
	ID string `json:"id"`
	// Object is always "model".
	Object string `json:"object"`
	// Created is the creation time in Unix seconds.
	Created int64 `json:"created"`
	// OwnedBy names the model's owner.
	OwnedBy string `json:"owned_by"`
	// CodexModel, when set, is the Codex model that runs this id.
	CodexModel string `json:"codex_model,omitempty"`
	// ReasoningEffort, when set, is the reasoning effort to run it with.
	ReasoningEffort string `json:"reasoning_effort,omitempty"`
	// WebSearch, when false, turns hosted web search off for this model
	// (requests that ask for it get a 400); unset allows it.
	WebSearch *bool `json:"web_search,omitempty"`
	// Mode is how the worker runs this id: ModeModel (the default: the
	// model sees only what the caller sent) or ModeAgent (Codex as a
	// coding agent with its own tools in the worker's workspace).
	Mode string `json:"mode,omitempty"`
}

// Execution modes of an Entry.
const (
	ModeModel = "model"
	ModeAgent = "agent"
)

// AgentModelID is the id of the built-in catalog's agent-mode model.
const AgentModelID = "codex-agent"

// WebSearchAllowed reports whether hosted web search may run for e.
func (e Entry) WebSearchAllowed() bool { return e.WebSearch == nil || *e.WebSearch }

// Model is the public OpenAI rendering of an Entry (no alias fields).
type Model struct {
	// ID is the public model id.
	ID string `json:"id"`
	// Object is "model".
	Object string `json:"object"`
	// Created is the creation time in Unix seconds.
	Created int64 `json:"created"`
	// OwnedBy names the model's owner.
	OwnedBy string `json:"owned_by"`
}

// Model returns the public rendering of e.
func (e Entry) Model() Model {
	return Model{ID: e.ID, Object: ObjectModel, Created: e.Created, OwnedBy: e.OwnedBy}
}

// ModelList is the body of GET /v1/models.
type ModelList struct {
	// Object is "list".
	Object string `json:"object"`
	// Data holds the models in catalog order.
	Data []Model `json:"data"`
}

// Catalog is an immutable, validated set of models. Its methods are safe
// for concurrent use.
type Catalog struct {
	source  string
	entries []Entry
	byID    map[string]int
}

// Default returns the built-in catalog used when no file is configured: the
// single model codex-chatgpt owned by bus-codex.
func Default() *Catalog {
	c, err := newCatalog("built-in catalog", []Entry{
		{ID: DefaultModelID, Object: ObjectModel, Created: 0, OwnedBy: DefaultOwner, Mode: ModeModel},
		{ID: AgentModelID, Object: ObjectModel, Created: 0, OwnedBy: DefaultOwner, Mode: ModeAgent},
	})
	if err != nil {
		panic(err) // the built-in entry is valid by construction
	}
	return c
}

// Load reads and validates the catalog file at path.
func Load(path string) (*Catalog, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("model catalog: %w", err)
	}
	return Parse(path, data)
}

// Parse validates catalog data; source names it in errors (usually the
// file path).
func Parse(source string, data []byte) (*Catalog, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("%w: %s: file is empty", ErrInvalid, source)
	}
	var raw []json.RawMessage
	switch trimmed[0] {
	case '[':
		if err := json.Unmarshal(trimmed, &raw); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, source, err)
		}
	case '{':
		var list struct {
			Object *string            `json:"object"`
			Data   *[]json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(trimmed, &list); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, source, err)
		}
		if list.Object != nil && *list.Object != ObjectList {
			return nil, fmt.Errorf("%w: %s: object is %q, want %q", ErrInvalid, source, *list.Object, ObjectList)
		}
		if list.Data == nil {
			return nil, fmt.Errorf("%w: %s: missing \"data\" array of models", ErrInvalid, source)
		}
		raw = *list.Data
	default:
		return nil, fmt.Errorf("%w: %s: want an OpenAI model list {\"object\":\"list\",\"data\":[...]} or a JSON array of models", ErrInvalid, source)
	}
	entries := make([]Entry, 0, len(raw))
	for i, r := range raw {
		var e Entry
		if err := json.Unmarshal(r, &e); err != nil {
			return nil, fmt.Errorf("%w: %s: entry %d: %w", ErrInvalid, source, i, err)
		}
		entries = append(entries, e)
	}
	return newCatalog(source, entries)
}

func newCatalog(source string, entries []Entry) (*Catalog, error) {
	if len(entries) == 0 {
		return nil, fmt.Errorf("%w: %s: the catalog lists no models", ErrInvalid, source)
	}
	c := &Catalog{source: source, entries: make([]Entry, 0, len(entries)), byID: make(map[string]int, len(entries))}
	for i, e := range entries {
		if err := normalize(&e); err != nil {
			name := fmt.Sprintf("entry %d", i)
			if e.ID != "" {
				name = fmt.Sprintf("entry %d (id %q)", i, e.ID)
			}
			return nil, fmt.Errorf("%w: %s: %s: %w", ErrInvalid, source, name, err)
		}
		if j, dup := c.byID[e.ID]; dup {
			return nil, fmt.Errorf("%w: %s: entry %d: id %q is already used by entry %d", ErrInvalid, source, i, e.ID, j)
		}
		c.byID[e.ID] = i
		c.entries = append(c.entries, e)
	}
	return c, nil
}

// normalize fills defaults into e and checks it.
func normalize(e *Entry) error {
	switch {
	case e.ID == "":
		return errors.New("id is required")
	case strings.IndexFunc(e.ID, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return errors.New("id must not contain spaces or control characters")
	case len(e.ID) > 256:
		return errors.New("id is longer than 256 bytes")
	}
	if e.Object == "" {
		e.Object = ObjectModel
	}
	if e.Object != ObjectModel {
		return fmt.Errorf("object is %q, want %q", e.Object, ObjectModel)
	}
	if e.Created < 0 {
		return fmt.Errorf("created is %d, want Unix seconds >= 0", e.Created)
	}
	if e.OwnedBy == "" {
		e.OwnedBy = DefaultOwner
	}
	if e.CodexModel != strings.TrimSpace(e.CodexModel) || strings.ContainsAny(e.CodexModel, "\r\n\t") {
		return fmt.Errorf("codex_model %q has surrounding or embedded whitespace", e.CodexModel)
	}
	switch e.Mode {
	case "":
		e.Mode = ModeModel
	case ModeModel, ModeAgent:
	default:
		return fmt.Errorf("mode %q is not %s or %s", e.Mode, ModeModel, ModeAgent)
	}
	if e.ReasoningEffort != "" && !slices.Contains(ReasoningEfforts(), e.ReasoningEffort) {
		return fmt.Errorf("reasoning_effort %q is not one of %s", e.ReasoningEffort, strings.Join(ReasoningEfforts(), ", "))
	}
	return nil
}

// Source names where the catalog came from: a file path or "built-in catalog".
func (c *Catalog) Source() string { return c.source }

// Lookup returns the entry with id.
func (c *Catalog) Lookup(id string) (Entry, bool) {
	i, ok := c.byID[id]
	if !ok {
		return Entry{}, false
	}
	return c.entries[i], true
}

// List returns a copy of every entry in catalog order.
func (c *Catalog) List() []Entry { return slices.Clone(c.entries) }

// Models returns the public model list, the body of GET /v1/models.
func (c *Catalog) Models() ModelList {
	l := ModelList{Object: ObjectList, Data: make([]Model, 0, len(c.entries))}
	for _, e := range c.entries {
		l.Data = append(l.Data, e.Model())
	}
	return l
}

// LoadOrDefault loads the catalog file at path, or returns the built-in
// default catalog when path is empty.
func LoadOrDefault(path string) (*Catalog, error) {
	if path == "" {
		return Default(), nil
	}
	return Load(path)
}
