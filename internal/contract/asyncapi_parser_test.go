package contract_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/busdk/bus-integration-codex/internal/contract"
)

// validateJS parses an AsyncAPI document with the official parser and fails
// on any error-level diagnostic.
const validateJS = `
const { Parser } = require(process.env.PARSER);
const fs = require('fs');
(async () => {
  const { document, diagnostics } = await new Parser().parse(fs.readFileSync(process.argv[2], 'utf8'));
  const errors = diagnostics.filter(d => d.severity === 0);
  for (const d of errors) console.log('error', d.code, d.message, JSON.stringify(d.path));
  if (!document || errors.length) process.exit(1);
  console.log('valid ' + document.version());
})().catch(e => { console.log(String(e)); process.exit(2); });
`

// TestAsyncAPIValidWithOfficialParser validates the --events --format
// asyncapi document with @asyncapi/parser (installed by make test-deps into
// .tools/asyncapi; BUS_TEST_ASYNCAPI_PARSER points at it).
func TestAsyncAPIValidWithOfficialParser(t *testing.T) {
	parser := os.Getenv("BUS_TEST_ASYNCAPI_PARSER")
	if parser == "" {
		if os.Getenv("BUS_TEST_REQUIRE_ASYNCAPI") == "1" {
			t.Fatal("BUS_TEST_ASYNCAPI_PARSER is not set")
		}
		t.Skip("BUS_TEST_ASYNCAPI_PARSER not set (make test-deps installs @asyncapi/parser)")
	}
	if _, err := os.Stat(parser); err != nil {
		t.Fatalf("AsyncAPI parser at %s: %v", parser, err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is needed to run the AsyncAPI parser")
	}
	dir := t.TempDir()
	var doc bytes.Buffer
	if err := contract.Render(&doc, contract.Worker("test", "bus-integration-codex"), "asyncapi"); err != nil {
		t.Fatal(err)
	}
	docPath, script := filepath.Join(dir, "asyncapi.json"), filepath.Join(dir, "validate.js")
	if err := os.WriteFile(docPath, doc.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte(validateJS), 0o600); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(parser)
	cmd := exec.Command(node, script, docPath)
	cmd.Env = append(os.Environ(), "PARSER="+abs)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "valid 3.0.0") {
		t.Fatalf("the AsyncAPI document is not valid (%v):\n%s", err, out)
	}
}
