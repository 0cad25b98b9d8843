package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/fleet"
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

// TestDemoStationHold runs `make demo-station HOLD=1` with two boards: after the summary the
// dashboard still serves the station, and an interrupt then ends the demo with exit 0 and
// none of the processes it started left running.
func TestDemoStationHold(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the demo program is not built")
	}
	t.Parallel()
	ctx := testCtx(t)
	cmd := testexec.Command(ctx, demo, "--station", "2", "--hold", "--listen", "127.0.0.1:0", "--provisiond", provisiondCmd)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sc := bufio.NewScanner(stdout)
	base, held := "", ""
	for held == "" && sc.Scan() {
		line := sc.Text()
		out.WriteString(line + "\n")
		if rest, ok := strings.CutPrefix(line, "▸ dashboard: "); ok {
			base = strings.TrimSuffix(strings.Fields(rest)[0], "/")
		}
		if strings.HasPrefix(line, "▸ holding: ") {
			held = line
		}
	}
	if held == "" {
		err := cmd.Wait()
		t.Fatalf("the demo ended without holding: %v\n%s%s", err, out.String(), stderr.String())
	}
	// The rest of stdout is read while the demo stops, so it never blocks on a full pipe.
	rest := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(stdout)
		rest <- string(b)
	}()
	if !strings.Contains(out.String(), "summary: 2 of 2 board(s) provisioned") || base == "" || !strings.Contains(held, base+"/") {
		t.Errorf("before holding: no summary of 2 provisioned boards, or the hold line does not name the page %q:\n%s", base, out.String())
	}

	var snap fleet.Snapshot
	if err := json.Unmarshal(get(t, ctx, base+"/api/instances"), &snap); err != nil {
		t.Fatal(err)
	}
	if len(snap.Instances) != 2 {
		t.Fatalf("GET /api/instances while held: %d instances, want 2: %+v", len(snap.Instances), snap)
	}
	for _, r := range snap.Instances {
		if r.Status == nil || r.Status.LastAttempt == nil || !r.Status.LastAttempt.Succeeded() {
			t.Errorf("instance %s while held: %+v (%s), want its last attempt succeeded", r.Instance, r.Status, r.Error)
		}
	}
	kids := childProcesses(t, cmd.Process.Pid)
	if len(kids) < 3 {
		t.Errorf("the held demo has %d child processes %v, want its 2 instances and the dashboard", len(kids), kids)
	}

	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	tail := <-rest
	if err != nil {
		t.Fatalf("the held demo after SIGINT: %v, want exit 0\n%s%s%s", err, out.String(), tail, stderr.String())
	}
	if !strings.Contains(tail, "▸ stopping") {
		t.Errorf("the held demo did not say it stops:\n%s", tail)
	}
	// The demo waits for what it started, so they are gone by now; the poll only covers a
	// process the demo might have left to init, which is the failure this looks for.
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range kids {
		for processRunning(pid) {
			if time.Now().After(deadline) {
				t.Errorf("process %d the demo started still runs after it exited", pid)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// childProcesses lists the processes whose parent is pid (Linux /proc).
func childProcesses(t *testing.T, pid int) []int {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var kids []int
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // ended meanwhile
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(fields) < 2 || fields[1] != strconv.Itoa(pid) {
			continue
		}
		if n, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil {
			kids = append(kids, n)
		}
	}
	return kids
}

// processRunning reports whether pid exists and is not a zombie.
func processRunning(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}
