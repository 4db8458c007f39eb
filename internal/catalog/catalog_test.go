package catalog_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/busdk/bus-integration-codex/internal/catalog"
)

func TestDefault(t *testing.T) {
	c := catalog.Default()
	e, ok := c.Lookup("codex-chatgpt")
	if !ok {
		t.Fatal("default catalog lacks codex-chatgpt")
	}
	want := catalog.Entry{ID: "codex-chatgpt", Object: "model", Created: 0, OwnedBy: "bus-codex", Mode: catalog.ModeModel}
	if e != want {
		t.Fatalf("entry = %+v, want %+v", e, want)
	}
	if a, ok := c.Lookup(catalog.AgentModelID); !ok || a.Mode != catalog.ModeAgent {
		t.Fatalf("agent entry = %+v, %v", a, ok)
	}
	got, _ := json.Marshal(c.Models())
	if string(got) != `{"object":"list","data":[{"id":"codex-chatgpt","object":"model","created":0,"owned_by":"bus-codex"},{"id":"codex-agent","object":"model","created":0,"owned_by":"bus-codex"}]}` {
		t.Fatalf("models = %s", got)
	}
	if _, ok := c.Lookup("gpt-4o"); ok {
		t.Fatal("unknown id found")
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		want    []catalog.Entry
		wantErr []string // substrings of the error
	}{
		{
			name: "openai list",
			data: `{"object":"list","data":[{"id":"a","object":"model","created":1700000000,"owned_by":"me"},{"id":"b","object":"model","created":0,"owned_by":"you"}]}`,
			want: []catalog.Entry{{ID: "a", Object: "model", Created: 1700000000, OwnedBy: "me", Mode: "model"}, {ID: "b", Object: "model", OwnedBy: "you", Mode: "model"}},
		},
		{
			name: "bare array with aliases and defaults",
			data: `[{"id":"fast","codex_model":"gpt-5-codex-mini","reasoning_effort":"low"},{"id":"ag","mode":"agent"}]`,
			want: []catalog.Entry{{ID: "fast", Object: "model", OwnedBy: "bus-codex", CodexModel: "gpt-5-codex-mini", ReasoningEffort: "low", Mode: "model"}, {ID: "ag", Object: "model", OwnedBy: "bus-codex", Mode: "agent"}},
		},
		{
			name: "list without object and unknown fields ignored",
			data: `{"data":[{"id":"x","object":"model","created":0,"owned_by":"o","permission":[]}]}`,
			want: []catalog.Entry{{ID: "x", Object: "model", OwnedBy: "o", Mode: "model"}},
		},
		{name: "empty file", data: "  ", wantErr: []string{"models.json", "empty"}},
		{name: "not json", data: `{"data":`, wantErr: []string{"models.json"}},
		{name: "scalar", data: `"codex"`, wantErr: []string{"models.json", "model list"}},
		{name: "wrong list object", data: `{"object":"model","data":[]}`, wantErr: []string{"models.json", `"list"`}},
		{name: "missing data", data: `{"object":"list"}`, wantErr: []string{"models.json", "data"}},
		{name: "no models", data: `[]`, wantErr: []string{"models.json", "no models"}},
		{name: "missing id", data: `[{"id":"a"},{"object":"model"}]`, wantErr: []string{"models.json", "entry 1", "id is required"}},
		{name: "id with space", data: `[{"id":"a b"}]`, wantErr: []string{"models.json", `entry 0 (id "a b")`, "spaces"}},
		{name: "duplicate id", data: `[{"id":"a"},{"id":"b"},{"id":"a"}]`, wantErr: []string{"models.json", "entry 2", `"a"`, "entry 0"}},
		{name: "wrong object", data: `[{"id":"a","object":"engine"}]`, wantErr: []string{`entry 0 (id "a")`, "engine"}},
		{name: "negative created", data: `[{"id":"a","created":-1}]`, wantErr: []string{`entry 0 (id "a")`, "created"}},
		{name: "bad effort", data: `[{"id":"ok"},{"id":"a","reasoning_effort":"extreme"}]`, wantErr: []string{"models.json", `entry 1 (id "a")`, "reasoning_effort", "extreme"}},
		{name: "bad mode", data: `[{"id":"a","mode":"robot"}]`, wantErr: []string{`entry 0 (id "a")`, "mode", "robot"}},
		{name: "bad codex model", data: `[{"id":"a","codex_model":" gpt "}]`, wantErr: []string{`entry 0 (id "a")`, "codex_model"}},
		{name: "wrong field type", data: `[{"id":"a","created":"yesterday"}]`, wantErr: []string{"models.json", "entry 0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := catalog.Parse("models.json", []byte(tt.data))
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("Parse succeeded, want error containing %q", tt.wantErr)
				}
				if !errors.Is(err, catalog.ErrInvalid) {
					t.Errorf("error %v does not wrap ErrInvalid", err)
				}
				for _, s := range tt.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q lacks %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := c.List(); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("List = %+v, want %+v", got, tt.want)
			}
			for _, e := range tt.want {
				if got, ok := c.Lookup(e.ID); !ok || got != e {
					t.Errorf("Lookup(%q) = %+v, %v", e.ID, got, ok)
				}
			}
		})
	}
}

func TestModelsHideAliases(t *testing.T) {
	c, err := catalog.Parse("x", []byte(`[{"id":"fast","codex_model":"gpt-5-codex-mini","reasoning_effort":"high"}]`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(c.Models())
	if strings.Contains(string(b), "codex_model") || strings.Contains(string(b), "reasoning_effort") {
		t.Fatalf("alias fields rendered: %s", b)
	}
	if string(b) != `{"object":"list","data":[{"id":"fast","object":"model","created":0,"owned_by":"bus-codex"}]}` {
		t.Fatalf("models = %s", b)
	}
}

func TestListIsACopy(t *testing.T) {
	c := catalog.Default()
	l := c.List()
	l[0].ID = "changed"
	if _, ok := c.Lookup("codex-chatgpt"); !ok || c.List()[0].ID != "codex-chatgpt" {
		t.Fatal("List exposes the catalog's storage")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "models.json")
	if err := os.WriteFile(path, []byte(`{"object":"list","data":[{"id":"codex-chatgpt","object":"model","created":0,"owned_by":"bus-codex"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := catalog.Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Source() != path {
		t.Errorf("Source = %q", c.Source())
	}
	if _, ok := c.Lookup("codex-chatgpt"); !ok {
		t.Error("model missing")
	}
	_, err = catalog.Load(filepath.Join(dir, "missing.json"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "missing.json") {
		t.Fatalf("Load(missing) = %v, want a not-exist error naming the file", err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`[{"id":"a","reasoning_effort":"max"}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := catalog.Load(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("Load(bad) = %v, want an error naming %s", err, bad)
	}
}
