package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemo runs the demo program (`make demo`) against the binary under test, on both
// transports: it must succeed, and it checks its own summary (it exits non-zero on any miss).
func TestDemo(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	demo := filepath.Join(t.TempDir(), "provisiond-demo")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", demo,
		"github.com/provisiond/provisiond/cmd/provisiond-demo").CombinedOutput(); err != nil {
		t.Fatalf("building the demo: %v\n%s", err, out)
	}
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			out, err := exec.CommandContext(ctx, demo, "--transport", tr, "--provisiond", provisiond).CombinedOutput()
			if err != nil {
				t.Fatalf("demo: %v\n%s", err, out)
			}
			for _, want := range []string{"▸ START attempt 1", "%KEYGEN", "✓ DONE", "+CFUN=1 before → +CFUN=1 after", "✓ provisioned"} {
				if !strings.Contains(string(out), want) {
					t.Errorf("demo output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}
