package config

import (
	"bytes"
	"os"
	"testing"
)

// referencePath is the configuration reference the README links to.
const referencePath = "../../docs/config.md"

const referenceHeader = "# Configuration reference\n\n" +
	"Generated from the key table in `internal/config` (the same table that validates a config\n" +
	"file), so it cannot drift: `go test ./internal/config -run TestReferenceDoc -update` rewrites\n" +
	"it, and `provisiond config reference` prints the table. Every key can also be set from the\n" +
	"environment as `PROVISIOND_<SECTION>_<KEY>` (for example `PROVISIOND_MODEM_PORT`), which\n" +
	"beats the file, also when empty: an empty string, or the default for a key that is no string.\n\n"

// TestReferenceDoc keeps docs/config.md equal to the generated Markdown table.
func TestReferenceDoc(t *testing.T) {
	var buf bytes.Buffer
	buf.WriteString(referenceHeader)
	if err := WriteMarkdown(&buf); err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(referencePath, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, buf.Bytes()) {
		t.Fatalf("%s differs from the key table; run go test ./internal/config -run TestReferenceDoc -update", referencePath)
	}
}
