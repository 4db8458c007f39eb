package contract

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Formats lists the render formats.
func Formats() []string { return []string{"text", "json", "asyncapi"} }

// Render writes s in format (text, json or asyncapi).
func Render(w io.Writer, s Service, format string) error {
	switch format {
	case "text":
		return RenderText(w, s)
	case "json":
		return writeJSON(w, s)
	case "asyncapi":
		return writeJSON(w, AsyncAPI(s))
	default:
		return fmt.Errorf("unknown format %q (want %s)", format, strings.Join(Formats(), ", "))
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// RenderText writes one line per capability.
func RenderText(w io.Writer, s Service) error {
	fmt.Fprintf(w, "%s %s\n%s\n\n", s.Name, s.Version, s.Description)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CAPABILITY\tACTION\tEVENT\tDELIVERY\tSCOPE\tPAYLOAD")
	for _, c := range s.Capabilities {
		delivery := "-"
		if c.Delivery != "" {
			delivery = string(c.Delivery)
			if c.Group != "" {
				delivery += " (group " + c.Group + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.Action, c.Event, delivery, c.Scope, c.Payload)
	}
	return tw.Flush()
}

// RenderHelp explains one capability.
func RenderHelp(w io.Writer, c Capability) error {
	_, err := fmt.Fprintf(w, "%s\n\n  action:    %s\n  event:     %s\n", c.ID, c.Action, c.Event)
	if err != nil {
		return err
	}
	if c.Delivery != "" {
		fmt.Fprintf(w, "  delivery:  %s\n", c.Delivery)
	}
	if c.Group != "" {
		fmt.Fprintf(w, "  group:     %s\n", c.Group)
	}
	fmt.Fprintf(w, "  scope:     %s\n  operation: %s\n  payload:   %s\n\n%s\n\n%s\n", c.Scope, c.Operation, c.Payload, c.Summary, wrap(c.Description, 78))
	return nil
}

func wrap(s string, width int) string {
	var b strings.Builder
	line := 0
	for i, w := range strings.Fields(s) {
		if i > 0 {
			if line+1+len(w) > width {
				b.WriteByte('\n')
				line = 0
			} else {
				b.WriteByte(' ')
				line++
			}
		}
		b.WriteString(w)
		line += len(w)
	}
	return b.String()
}
