package codex

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/appserver"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Codex offers the model its own tools beside the client's (in agent mode;
// and it silently drops a client tool named exec_command in any mode). A
// client tool with the same name would be routed to Codex's tool instead
// of back to the client, so such names are offered under another name and
// mapped back: a client tool (or namespace) whose name is one of Codex's
// own tools, or starts with a reserved prefix, is offered as
// "client_<name>" (with "_2", "_3", ... added if that is taken too). The
// client never sees the renamed form. Tools inside a namespace keep their
// names: the namespace tells them apart.

// codexToolNames are the tools Codex may offer the model itself.
func codexToolNames() []string {
	return []string{
		"exec_command", "write_stdin", "request_user_input", "view_image", "multi_agent_v1",
		"get_goal", "create_goal", "update_goal", "shell", "shell_command", "local_shell",
		"unified_exec", "apply_patch", "update_plan", "web_search", "image_generation", "js_repl",
		"read_file", "list_dir", "grep_files", "spawn_agent", "send_input", "wait", "close_agent",
		"list_mcp_resources", "list_mcp_resource_templates", "read_mcp_resource", "tool_search",
		"exec", "functions", "clock", "collaboration",
	}
}

// reservedPrefixes are namespaces of Codex (MCP tools) and of this rule.
func reservedPrefixes() []string { return []string{"mcp__", "codex_", "client_"} }

func reserved(name string) bool {
	for _, n := range codexToolNames() {
		if name == n {
			return true
		}
	}
	for _, p := range reservedPrefixes() {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// toolRef names a tool: its namespace ("" for a top-level tool) and name.
type toolRef struct{ namespace, name string }

// toolNames maps client tools to what Codex is offered and back.
type toolNames struct {
	toCodex  map[toolRef]toolRef
	toClient map[toolRef]toolRef
	custom   map[toolRef]bool // client custom tools (free-form input)
}

// newToolNames plans the names of the request's tools and of the tools its
// history calls.
func newToolNames(tools []turn.Tool, history []turn.Item) (toolNames, error) {
	m := toolNames{toCodex: map[toolRef]toolRef{}, toClient: map[toolRef]toolRef{}, custom: map[toolRef]bool{}}
	var refs []toolRef
	seen := map[toolRef]bool{}
	for i, t := range tools {
		ref := toolRef{t.Namespace, t.Name}
		if seen[ref] {
			param := fmt.Sprintf("tools[%d]", i)
			return m, llmapi.InvalidRequest(param, "duplicate_tool", fmt.Sprintf("tool %q is offered twice", qualified(ref)))
		}
		seen[ref] = true
		refs = append(refs, ref)
		if t.Kind == turn.ToolCustom {
			m.custom[ref] = true
		}
	}
	for _, it := range history {
		if it.Type == turn.ItemFunctionCall || it.Type == turn.ItemCustomToolCall {
			refs = append(refs, toolRef{it.Namespace, it.Name})
		}
	}
	// Top-level names and namespace names share one space at Codex.
	taken := map[string]bool{}
	for _, r := range refs {
		if n := top(r); !reserved(n) {
			taken[n] = true
		}
	}
	renamed := map[string]string{}
	rename := func(n string) string {
		if v, ok := renamed[n]; ok {
			return v
		}
		offered := n
		if reserved(n) {
			offered = "client_" + n
			for i := 2; taken[offered]; i++ {
				offered = fmt.Sprintf("client_%s_%d", n, i)
			}
		}
		taken[offered] = true
		renamed[n] = offered
		return offered
	}
	for _, r := range refs {
		if _, done := m.toCodex[r]; done {
			continue
		}
		c := r
		if r.namespace == "" {
			c.name = rename(r.name)
		} else {
			c.namespace = rename(r.namespace)
		}
		m.toCodex[r], m.toClient[c] = c, r
	}
	return m, nil
}

// top is the name a tool takes in Codex's top-level tool list.
func top(r toolRef) string {
	if r.namespace != "" {
		return r.namespace
	}
	return r.name
}

func qualified(r toolRef) string {
	if r.namespace != "" {
		return r.namespace + "." + r.name
	}
	return r.name
}

func (m toolNames) codex(r toolRef) toolRef {
	if v, ok := m.toCodex[r]; ok {
		return v
	}
	return r
}

func (m toolNames) client(r toolRef) (toolRef, bool) {
	v, ok := m.toClient[r]
	return v, ok
}

// customInputSchema is the function schema a custom tool is offered with:
// App Server dynamic tools are functions only, so the free-form input
// travels as one string argument.
const customInputSchema = `{"type":"object","properties":{"input":{"type":"string","description":"The tool's free-form input."}},"required":["input"],"additionalProperties":false}`

// dynamicTools offers the client's tools to the model.
func dynamicTools(tools []turn.Tool, names toolNames) []appserver.DynamicTool {
	out := make([]appserver.DynamicTool, 0, len(tools))
	for _, t := range tools {
		c := names.codex(toolRef{t.Namespace, t.Name})
		schema, desc := t.Parameters, t.Description
		if t.Kind == turn.ToolCustom {
			schema = json.RawMessage(customInputSchema)
			if f := formatNote(t.Format); f != "" {
				desc = strings.TrimSpace(desc + "\n\n" + f)
			}
		}
		if len(schema) == 0 || string(schema) == "null" {
			schema = json.RawMessage(`{"type":"object","properties":{}}`)
		}
		out = append(out, appserver.DynamicTool{
			Name: c.name, Description: desc, InputSchema: schema,
			Namespace: c.namespace, NamespaceDescription: t.NamespaceDescription,
		})
	}
	return out
}

// formatNote describes a custom tool's input format (a grammar) for the
// model, as the function schema cannot carry it.
func formatNote(raw json.RawMessage) string {
	var f struct {
		Type       string `json:"type"`
		Syntax     string `json:"syntax"`
		Definition string `json:"definition"`
	}
	if json.Unmarshal(raw, &f) != nil || f.Type != "grammar" || f.Definition == "" {
		return ""
	}
	return fmt.Sprintf("The input must match this %s grammar:\n%s", f.Syntax, f.Definition)
}

// toolInstructions carries the parts of tool_choice and
// parallel_tool_calls that Codex has no parameter for.
func toolInstructions(req *turn.Request, names toolNames) string {
	var parts []string
	switch req.ToolChoice.Mode {
	case turn.ToolChoiceRequired:
		parts = append(parts, "You must call one of the available functions in this step; do not answer with text alone.")
	case turn.ToolChoiceFunction:
		parts = append(parts, fmt.Sprintf("You must call the function %q in this step; do not answer with text alone.", qualified(names.codex(toolRef{"", req.ToolChoice.Name}))))
	}
	if !req.ParallelToolCalls {
		parts = append(parts, "Call at most one function per step.")
	}
	return strings.Join(parts, " ")
}

// clientCall converts a call the model made to a Codex-offered tool into
// the client's tool call; ok is false for a tool that is not the client's.
func (m toolNames) clientCall(callID, namespace, name, arguments string) (turn.ToolCall, bool) {
	ref, ok := m.client(toolRef{namespace, name})
	if !ok {
		return turn.ToolCall{}, false
	}
	args := arguments
	if args == "" || args == "null" {
		args = "{}"
	}
	tc := turn.ToolCall{ID: callID, Name: ref.name, Namespace: ref.namespace, Arguments: args}
	if m.custom[ref] {
		var in struct {
			Input string `json:"input"`
		}
		if json.Unmarshal([]byte(arguments), &in) == nil {
			tc.Arguments = in.Input
		}
		tc.Custom = true
	}
	return tc, true
}

// codexArguments is the arguments text Codex saw for a client call: a
// custom tool's input wrapped as its one string argument.
func (m toolNames) codexArguments(it turn.Item) string {
	if it.Type != turn.ItemCustomToolCall {
		return it.Arguments
	}
	b, _ := json.Marshal(map[string]string{"input": it.Input})
	return string(b)
}
