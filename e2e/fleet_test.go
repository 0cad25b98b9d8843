package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/provisiond/provisiond/internal/fleet"
	"github.com/provisiond/provisiond/internal/testbed"
	"github.com/provisiond/provisiond/internal/testexec"
)

// provisionOnce queues a small job on the instance's own simulated service, asks the daemon
// to provision now and waits for the attempt to end DONE.
func provisionOnce(t *testing.T, ctx context.Context, in *stationInstance) {
	t.Helper()
	queue(t, in.bed, testbed.Interval(3600), testbed.Finished())
	if _, err := in.bed.Output(ctx, provisiond, "now"); err != nil {
		t.Fatalf("%s: now: %v", in.name, err)
	}
	waitEvent(t, ctx, in.proc, &in.logAt, "DONE")
}

// startDashboard runs `provisiond dashboard` on a free loopback port and waits until it
// answers; it returns the base URL.
func startDashboard(t *testing.T, ctx context.Context, runDir string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := testexec.Command(ctx, provisiond, "dashboard", "--run-dir", runDir, "--listen", addr, "--every", "200ms")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		if err := <-exited; err != nil {
			t.Errorf("dashboard: %v\n%s", err, stderr.String())
		}
		if strings.Contains(stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("the race detector reported a data race in the dashboard:\n%s", stderr.String())
		}
	})
	base := "http://" + addr
	// Wait for the listener: the process reports nothing else when it is ready.
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/instances", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			return base
		}
		select {
		case err := <-exited:
			t.Fatalf("dashboard exited: %v\n%s", err, stderr.String())
		case <-ctx.Done():
			t.Fatalf("dashboard never answered: %v\n%s", err, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func get(t *testing.T, ctx context.Context, url string) []byte {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v\n%s", url, resp.Status, err, body)
	}
	return body
}

// TestFleetListAndDashboard runs two instances, one that hangs and one that is gone: `list`
// shows all four without waiting for the broken two and exits 1, 0 for a healthy instance
// alone; the dashboard's API gives the same rows as `list --json`, its metrics parse as
// Prometheus text, its event stream pushes a tile's change when its modem finishes, and the
// page shows the tiles in headless Chromium.
func TestFleetListAndDashboard(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	runDir := t.TempDir()
	a := startStationInstance(t, ctx, runDir, "ttyACM0", nil)
	b := startStationInstance(t, ctx, runDir, "ttyACM1", nil)
	provisionOnce(t, ctx, a)
	provisionOnce(t, ctx, b)
	hangingInstance(t, filepath.Join(runDir, "ttyACM8", "provisiond.sock"))
	goneInstance(t, filepath.Join(runDir, "ttyACM9", "provisiond.sock"))

	out, errOut, code := stationRun(t, ctx, "list", "--run-dir", runDir)
	if code != fleet.ExitFailed || !strings.Contains(errOut, "2 gave no status") {
		t.Fatalf("list: exit %d, want 1:\n%s%s", code, out, errOut)
	}
	for _, in := range []*stationInstance{a, b} {
		f := strings.Fields(tableLine(out, in.name))
		if len(f) < 9 || f[2] != in.bed.UUID() || f[3] != in.bed.Modem().IMEI() || f[6] != "DONE" {
			t.Errorf("list: row of %s %q, want its UUID, IMEI and DONE:\n%s", in.name, f, out)
		}
	}
	if !strings.HasSuffix(tableLine(out, "ttyACM8"), "no answer within 1s") || !strings.Contains(tableLine(out, "ttyACM9"), "gone: ") {
		t.Fatalf("list: the hanging and the gone instance are not shown as such:\n%s", out)
	}
	if out, errOut, code := stationRun(t, ctx, "list", "--run-dir", runDir, "--instance", "ttyACM1"); code != 0 {
		t.Fatalf("list --instance ttyACM1: exit %d, want 0:\n%s%s", code, out, errOut)
	}
	if out, errOut, code := stationRun(t, ctx, "list", "--run-dir", t.TempDir()); code != fleet.ExitNoneSeen {
		t.Fatalf("list of an empty run folder: exit %d, want 2:\n%s%s", code, out, errOut)
	}
	out, _, _ = stationRun(t, ctx, "list", "--json", "--run-dir", runDir)
	var listed fleet.Snapshot
	if err := json.Unmarshal([]byte(out), &listed); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}

	base := startDashboard(t, ctx, runDir)
	var api fleet.Snapshot
	if err := json.Unmarshal(get(t, ctx, base+"/api/instances"), &api); err != nil {
		t.Fatal(err)
	}
	if len(api.Instances) != 4 || len(listed.Instances) != 4 {
		t.Fatalf("%d instances from the API, %d from list --json, want 4", len(api.Instances), len(listed.Instances))
	}
	for i := range api.Instances {
		x, y := api.Instances[i], listed.Instances[i]
		if x.Instance != y.Instance || x.Error != y.Error || (x.Status == nil) != (y.Status == nil) ||
			(x.Status != nil && (x.Status.DeviceUUID != y.Status.DeviceUUID || x.Status.LastAttempt.Event != y.Status.LastAttempt.Event)) {
			t.Errorf("instance %d: API %+v, list --json %+v", i, x, y)
		}
	}

	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(get(t, ctx, base+"/metrics"))))
	if err != nil {
		t.Fatalf("GET /metrics does not parse: %v", err)
	}
	metric := func(name, instance string, extra ...string) (float64, bool) {
		for _, m := range fams[name].GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["instance"] != instance || (len(extra) == 2 && l[extra[0]] != extra[1]) {
				continue
			}
			if fams[name].GetType() == dto.MetricType_COUNTER {
				return m.GetCounter().GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
		return 0, false
	}
	for _, c := range []struct {
		name, instance string
		extra          []string
		want           float64
	}{
		{"provisiond_up", "ttyACM0", nil, 1},
		{"provisiond_up", "ttyACM8", nil, 0},
		{"provisiond_up", "ttyACM9", nil, 0},
		{"provisiond_modem_up", "ttyACM1", nil, 1},
		{"provisiond_attempts_total", "ttyACM0", []string{"outcome", "DONE"}, 1},
		{"provisiond_commands_total", "ttyACM1", []string{"result", "ok"}, 1},
		{"provisiond_results_waiting", "ttyACM0", nil, 0},
	} {
		if v, ok := metric(c.name, c.instance, c.extra...); !ok || v != c.want {
			t.Errorf("%s{instance=%s %v} = %v (found %v), want %v", c.name, c.instance, c.extra, v, ok, c.want)
		}
	}
	if v, ok := metric("provisiond_last_success_timestamp_seconds", "ttyACM0"); !ok || time.Since(time.Unix(int64(v), 0)) > time.Hour {
		t.Errorf("last success of ttyACM0: %v (found %v)", v, ok)
	}

	// The event stream: a tile's data changes when its modem finishes another attempt.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := bufio.NewScanner(resp.Body)
	events.Buffer(nil, 4<<20)
	nextPage := func() fleet.PageData {
		t.Helper()
		for events.Scan() {
			if data, ok := strings.CutPrefix(events.Text(), "data: "); ok {
				var pd fleet.PageData
				if err := json.Unmarshal([]byte(data), &pd); err != nil {
					t.Fatal(err)
				}
				return pd
			}
		}
		t.Fatalf("the event stream ended: %v", events.Err())
		return fleet.PageData{}
	}
	tileOf := func(pd fleet.PageData, name string) fleet.Tile {
		for _, tl := range pd.Instances {
			if tl.Instance == name {
				return tl
			}
		}
		t.Fatalf("no tile for %s", name)
		return fleet.Tile{}
	}
	first := nextPage()
	if first.Counts.Done != 2 || first.Counts.Unreachable != 2 || len(first.Instances) != 4 {
		t.Fatalf("first page: counts %+v, %d tiles", first.Counts, len(first.Instances))
	}
	before := tileOf(first, "ttyACM1").Status.LastAttempt.Number

	shot := screenshotDir(t)
	okBefore := -1
	t.Run("chromium-before", func(t *testing.T) {
		page := chromiumPage(t, ctx, base, filepath.Join(shot, "before.png"))
		if strings.Count(page, `class="tile"`) != 4 || strings.Count(page, `data-class="done"`) != 2 ||
			strings.Count(page, `data-class="unreachable"`) != 2 {
			t.Fatalf("the page in Chromium does not show 4 tiles, 2 done and 2 unreachable:\n%s", page)
		}
		okBefore = strings.Count(tileHTML(page, "ttyACM1"), `<i class="ok"`)
	})

	provisionOnce(t, ctx, b)
	for {
		tl := tileOf(nextPage(), "ttyACM1")
		if la := tl.Status.LastAttempt; la != nil && la.Number > before && tl.Class == fleet.ClassDone {
			if len(tl.Timeline) < 2 || tl.Last != "DONE" {
				t.Errorf("after the second attempt: last %q, timeline %v", tl.Last, tl.Timeline)
			}
			break
		}
	}
	t.Run("chromium-after", func(t *testing.T) {
		if okBefore < 0 {
			t.Skip("no page seen before the change")
		}
		page := chromiumPage(t, ctx, base, filepath.Join(shot, "after.png"))
		// The same page on a phone's screen, for a person to look at.
		chromiumPage(t, ctx, base, filepath.Join(shot, "phone.png"), "--window-size=390,844")
		if got := strings.Count(tileHTML(page, "ttyACM1"), `<i class="ok"`); got != okBefore+1 {
			t.Fatalf("ttyACM1's timeline shows %d good attempts, want %d after its modem finished again:\n%s", got, okBefore+1, page)
		}
	})
}

// tileHTML returns the markup of the tile of instance name in a dumped page, or "".
func tileHTML(page, name string) string {
	i := strings.Index(page, `data-instance="`+name+`"`)
	if i < 0 {
		return ""
	}
	rest := page[i:]
	if j := strings.Index(rest, "</section>"); j >= 0 {
		return rest[:j]
	}
	return rest
}

// screenshotDir is where the page's screenshots go: $E2E_SCREENSHOT_DIR when set (kept for a
// person to look at), else the test's temporary folder.
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("E2E_SCREENSHOT_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// chromiumPage loads url in headless Chromium (1920x1080 unless extra flags say otherwise),
// writes a screenshot to png and
// returns the DOM as the page drew it from the data it came with. (Headless Chromium's
// --dump-dom and --screenshot act at the page's load; what the event stream pushes later is
// checked over HTTP above, and a second load shows the change.) It skips the test,
// saying so, when Chromium is not installed (Debian package chromium).
func chromiumPage(t *testing.T, ctx context.Context, url, png string, extra ...string) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install chromium): the page is not checked in a browser")
	}
	flags := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
		"--window-size=1920,1080", "--timeout=5000"}
	run := func(more ...string) string {
		args := append(append(append(append([]string{}, flags...), "--user-data-dir="+t.TempDir()), extra...), more...)
		// Chromium ends by itself after --timeout; this only bounds a Chromium that hangs.
		cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, bin, append(args, url)...)
		var out, errOut strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
		}
		return out.String()
	}
	run("--screenshot=" + png)
	if st, err := os.Stat(png); err != nil || st.Size() == 0 {
		t.Fatalf("chromium wrote no screenshot at %s: %v", png, err)
	}
	t.Logf("screenshot: %s", png)
	return run("--dump-dom")
}
