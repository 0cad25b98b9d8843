package e2e

import (
	"strings"
	"testing"

	"github.com/provisiond/provisiond/internal/testexec"
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
			out, err := testexec.Command(ctx, demo, "--transport", tr, "--provisiond", provisiondCmd).CombinedOutput()
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

// TestDemoStation runs `make demo-station` with three boards: every board is provisioned
// through tokens, one bulk claim and the onboarding rule, and `list` exits 0 at the end (the
// demo checks its own summary and exits non-zero on any miss).
func TestDemoStation(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the demo program is not built")
	}
	t.Parallel()
	ctx := testCtx(t)
	out, err := testexec.Command(ctx, demo, "--station", "3", "--listen", "127.0.0.1:0", "--provisiond", provisiondCmd).CombinedOutput()
	if err != nil {
		t.Fatalf("demo --station 3: %v\n%s", err, out)
	}
	for _, want := range []string{"3 device(s): 3 claimed, 0 failed", "summary: 3 of 3 board(s) provisioned", "list exit 0", "▸ dashboard: http://127.0.0.1:"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}
