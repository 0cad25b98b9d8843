package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDemo runs the demo program (`make demo`) against the binary under test, on both
// transports: it must succeed, and it checks its own summary (it exits non-zero on any miss).
// -short skips it: it needs a second binary built, and the demo's run is the realistic job,
// which TestRealisticJob covers.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the demo program is not built")
	}
	t.Parallel()
	ctx := testCtx(t)
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
