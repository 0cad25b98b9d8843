package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/provisiond/provisiond/internal/fleet"
	"github.com/provisiond/provisiond/internal/fleet/livepage"
	"github.com/provisiond/provisiond/internal/testbed"
	"github.com/provisiond/provisiond/internal/testexec"
)

// provisionOnce queues a small job on the instance's own simulated service, asks the daemon
// to provision now and waits for the attempt to end DONE.
func provisionOnce(t *testing.T, ctx context.Context, in *stationInstance) {
	t.Helper()
	// The attempt the daemon makes at start may still be running on a loaded machine: it would
	// fetch the job queued here, and the attempt `now` asks for would then find nothing and end
	// as NO_COMMANDS. Wait until some attempt has ended (its SCHEDULED_PROVISIONING names it).
	if _, _, err := in.proc.WaitLog(ctx, 0, func(e testbed.LogEntry) bool {
		return e.Event() == "SCHEDULED_PROVISIONING" && e.Str("attempt") != ""
	}); err != nil {
		t.Fatalf("%s: waiting for the first attempt to end: %v", in.name, err)
	}
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
	args := append([]string{"dashboard", "--run-dir", runDir, "--listen", addr, "--every", "200ms"}, answerFlags()...)
	cmd := testexec.Command(ctx, provisiond, args...)
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
	if !strings.HasSuffix(tableLine(out, "ttyACM8"), noAnswer()) || !strings.Contains(tableLine(out, "ttyACM9"), "gone: ") {
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
	// What a provisioned board's attempts cost on the wire: the transports' counts, so only
	// that there are some is known here.
	for _, c := range []struct {
		name  string
		extra []string
	}{
		{"provisiond_handshakes_total", nil},
		{"provisiond_network_bytes_total", []string{"direction", "sent"}},
		{"provisiond_network_bytes_total", []string{"direction", "received"}},
		{"provisiond_last_attempt_handshakes", nil},
		{"provisiond_last_attempt_network_bytes", []string{"direction", "sent"}},
		{"provisiond_last_attempt_network_bytes", []string{"direction", "received"}},
	} {
		if v, ok := metric(c.name, "ttyACM0", c.extra...); !ok || v <= 0 {
			t.Errorf("%s{instance=ttyACM0 %v} = %v (found %v), want > 0 after a provisioned board", c.name, c.extra, v, ok)
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

	// The page, open in headless Chromium before the change: it must show the change by
	// itself, pushed through its event stream, without being loaded again.
	shot := screenshotDir(t)
	var page *livepage.Page
	var okBefore int
	t.Run("chromium-before", func(st *testing.T) {
		p := openPage(st, t, ctx, base)
		if err := p.WaitFor(ctx, `document.querySelectorAll("#tiles .tile").length === 4`, 30*time.Second); err != nil {
			st.Fatal(err)
		}
		tiles, err := p.Tiles(ctx)
		if err != nil {
			st.Fatal(err)
		}
		classes := map[string]int{}
		for _, tl := range tiles {
			classes[tl.Class]++
			if tl.Word != tl.Class {
				st.Errorf("tile %s shows the word %q, want its class %q", tl.Instance, tl.Word, tl.Class)
			}
		}
		if len(tiles) != 4 || classes["done"] != 2 || classes["unreachable"] != 2 {
			st.Fatalf("the page in Chromium does not show 4 tiles, 2 done and 2 unreachable: %+v", tiles)
		}
		okBefore = pageTile(st, tiles, "ttyACM1").OK
		st.Logf("tiles before: %+v", tiles)
		if err := p.MarkWindow(ctx); err != nil {
			st.Fatal(err)
		}
		screenshot(st, ctx, p, filepath.Join(shot, "before.png"))
		page = p
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
	t.Run("chromium-after", func(st *testing.T) {
		if page == nil {
			st.Skip("the page was not opened in Chromium (see chromium-before)")
		}
		// The stream above already carried the change; the open page gets the same push.
		want := fmt.Sprintf(`(() => { const t = document.querySelector('#tiles .tile[data-instance="ttyACM1"]');
			return t && t.dataset.class === "done" && t.querySelectorAll(".tl i.ok").length === %d; })()`, okBefore+1)
		if err := page.WaitFor(ctx, want, 30*time.Second); err != nil {
			tiles, _ := page.Tiles(ctx)
			st.Fatalf("ttyACM1's tile did not show its second good attempt in the open page: %v\ntiles: %+v", err, tiles)
		}
		if same, err := page.SameDocument(ctx); err != nil || !same {
			st.Fatalf("the page was reloaded or left (same document %v, %v): the change must arrive by the event stream", same, err)
		}
		tiles, err := page.Tiles(ctx)
		if err != nil {
			st.Fatal(err)
		}
		if tl := pageTile(st, tiles, "ttyACM1"); tl.Word != "done" || tl.Last != "last: DONE" {
			st.Errorf("ttyACM1's tile after the change: %+v", tl)
		}
		st.Logf("tiles after: %+v", tiles)
		screenshot(st, ctx, page, filepath.Join(shot, "after.png"))
		// The same page on a phone's screen, for a person to look at.
		if err := page.Resize(ctx, 390, 844); err != nil {
			st.Fatal(err)
		}
		screenshot(st, ctx, page, filepath.Join(shot, "phone.png"))
	})
}

// openPage opens url in headless Chromium for the rest of the test (the browser ends with
// parent), or skips st, saying so, when no Chromium is installed or the tests run under
// emulation.
func openPage(st, parent *testing.T, ctx context.Context, url string) *livepage.Page {
	st.Helper()
	if testexec.Emulated() {
		st.Skipf("under emulation (%s=%s): the browser would be the host's, not a program for the CPU under test, "+
			"and the page's logic does not depend on the CPU; a native run checks the page", testexec.Env, testexec.Emulator())
	}
	bin, err := livepage.Find()
	if err != nil {
		st.Skipf("%v: the page is not checked in a browser (apt-get install chromium)", err)
	}
	p, err := livepage.Open(ctx, livepage.Config{Chromium: bin}, url)
	if err != nil {
		st.Fatal(err)
	}
	parent.Cleanup(p.Close)
	return p
}

func pageTile(t *testing.T, tiles []livepage.Tile, name string) livepage.Tile {
	t.Helper()
	for _, tl := range tiles {
		if tl.Instance == name {
			return tl
		}
	}
	t.Fatalf("the page shows no tile for %s: %+v", name, tiles)
	return livepage.Tile{}
}

func screenshot(t *testing.T, ctx context.Context, p *livepage.Page, png string) {
	t.Helper()
	if err := p.Screenshot(ctx, png); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(png); err != nil || st.Size() == 0 {
		t.Fatalf("no screenshot at %s: %v", png, err)
	}
	t.Logf("screenshot: %s", png)
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
