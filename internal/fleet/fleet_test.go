package fleet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/provisiond/provisiond/internal/status"
)

var t0 = time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)

func done(uuid string) *status.Daemon {
	fin := t0.Add(-time.Minute)
	next := t0.Add(90 * time.Second)
	return &status.Daemon{Port: "/dev/ttyACM0", State: status.StateIdle, DeviceUUID: uuid, Attempts: 2,
		LastAttempt: &status.Attempt{Number: 2, Event: "DONE", Executed: 5, Finished: fin,
			Handshakes: 1, ResumedHandshakes: 1, Requests: 4, BytesSent: 4963, BytesReceived: 2893},
		NextAttempt: &next, Outcomes: map[status.EventName]int{"DONE": 1, "NO_COMMANDS": 1},
		CommandsExecuted: 5, LastSuccess: &fin,
		HandshakesTotal: 2, RequestsTotal: 6, BytesSentTotal: 7000, BytesReceivedTotal: 5000}
}

func failed(uuid string) *status.Daemon {
	return &status.Daemon{Port: "/dev/ttyACM1", State: status.StateIdle, DeviceUUID: uuid, Attempts: 1, OutboxPending: 2,
		LastAttempt: &status.Attempt{Number: 1, Event: "NO_COMMANDS", Executed: 3, Failed: 1,
			FailedCommand: &status.FailedCommand{CorrelationID: "c2", Command: "AT%KEYGEN", Error: "+CME ERROR: 514"}},
		Outcomes: map[status.EventName]int{"NO_COMMANDS": 1}, CommandsExecuted: 3, CommandsFailed: 1}
}

func running(uuid string) *status.Daemon {
	return &status.Daemon{Port: "/dev/ttyACM2", State: status.StateProvisioning, DeviceUUID: uuid, Attempts: 1,
		Progress: &status.Progress{Attempt: 1, Step: "executing commands", Batch: 1, Command: 3, Commands: 7}}
}

func TestExitCode(t *testing.T) {
	t.Parallel()
	gone := Row{Instance: "x", Error: "gone: nothing listens on its socket"}
	fresh := Row{Instance: "n", Status: &status.Daemon{State: status.StateIdle}}
	tests := []struct {
		name string
		rows []Row
		want int
	}{
		{"all done", []Row{{Status: done("a")}, {Status: done("b")}}, ExitOK},
		{"none ran yet", []Row{fresh}, ExitOK},
		{"running without a last attempt", []Row{{Status: running("c")}, {Status: done("a")}}, ExitOK},
		{"a failed command", []Row{{Status: done("a")}, {Status: failed("b")}}, ExitFailed},
		{"one gone", []Row{{Status: done("a")}, gone}, ExitFailed},
		{"none reached", []Row{gone, gone}, ExitNoneSeen},
		{"no rows", nil, ExitNoneSeen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ExitCode(Snapshot{Instances: tc.rows}); got != tc.want {
				t.Errorf("ExitCode = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestWriteTable(t *testing.T) {
	t.Parallel()
	s := Snapshot{Time: t0, Instances: []Row{
		{Instance: "ttyACM0", IMEI: "351358811111111", Status: done("u-a")},
		{Instance: "ttyACM1", Status: failed("u-b")},
		{Instance: "ttyACM2", Status: running("u-c")},
		{Instance: "ttyACM9", Error: "no answer within 1s"},
	}}
	var b strings.Builder
	if err := WriteTable(&b, s, t0); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines, want a header and 4 rows:\n%s", len(lines), b.String())
	}
	want := [][]string{
		{"ttyACM0", "/dev/ttyACM0", "u-a", "351358811111111", "idle", "-", "DONE", "in 1m30s", "0"},
		{"ttyACM1", "/dev/ttyACM1", "u-b", "-", "idle", "-", "NO_COMMANDS", "-", "2", "AT%KEYGEN: +CME ERROR: 514"},
		{"ttyACM2", "/dev/ttyACM2", "u-c", "-", "provisioning", "batch 1 cmd 3/7", "-", "-", "0"},
		{"ttyACM9", "-", "-", "-", "unreachable", "-", "-", "-", "-", "no answer within 1s"},
	}
	for i, w := range want {
		got := strings.Join(strings.Fields(lines[i+1]), " ")
		if !strings.HasPrefix(got, strings.Join(w, " ")) {
			t.Errorf("row %d:\n got %q\nwant %q…", i+1, got, strings.Join(w, " "))
		}
	}
}

// fakeSource is an instance whose status the test sets.
type fakeSource struct {
	mu        sync.Mutex
	st        *status.Daemon
	err       error
	imei      string
	imeiCalls int
	asked     int // Status calls
}

func (f *fakeSource) Status(ctx context.Context) (status.Daemon, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked++
	if f.err != nil {
		return status.Daemon{}, f.err
	}
	return *f.st, nil
}

func (f *fakeSource) IMEI(ctx context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.imeiCalls++
	return f.imei, nil
}

func (f *fakeSource) set(st *status.Daemon) {
	f.mu.Lock()
	f.st = st
	f.mu.Unlock()
}

// station lays out a run folder with one socket file per name (Discover only looks at the
// names) and a collector dialling the fakes.
func newStation(t *testing.T, srcs map[string]*fakeSource) *Collector {
	t.Helper()
	dir := t.TempDir()
	for name := range srcs {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "provisiond.sock"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return &Collector{RunDir: dir, Now: func() time.Time { return t0 }, Dial: func(socket string) Source {
		return srcs[filepath.Base(filepath.Dir(socket))]
	}}
}

func TestCollectAsksIMEIOncePerIdleDevice(t *testing.T) {
	t.Parallel()
	busy := &fakeSource{st: running("u-c"), imei: "351358833333333"}
	idle := &fakeSource{st: done("u-a"), imei: "351358811111111"}
	broken := &fakeSource{err: errors.New("control: GET /v1/status: boom")}
	c := newStation(t, map[string]*fakeSource{"a": idle, "b": broken, "c": busy})
	for range 3 {
		s, err := c.Collect(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Instances[0].IMEI; got != idle.imei {
			t.Errorf("idle instance's IMEI %q, want %q", got, idle.imei)
		}
		if s.Instances[1].Status != nil || !strings.Contains(s.Instances[1].Error, "boom") {
			t.Errorf("broken instance: %+v", s.Instances[1])
		}
		if s.Instances[2].IMEI != "" {
			t.Errorf("busy instance's IMEI %q, want it left empty", s.Instances[2].IMEI)
		}
	}
	if idle.imeiCalls != 1 || busy.imeiCalls != 0 {
		t.Errorf("IMEI asked %d times of the idle and %d of the busy instance, want 1 and 0", idle.imeiCalls, busy.imeiCalls)
	}
	// Another board on the same instance: its IMEI is asked again.
	idle.set(done("u-z"))
	idle.imei = "351358899999999"
	s, err := c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Instances[0].IMEI != idle.imei || idle.imeiCalls != 2 {
		t.Errorf("after a board change: IMEI %q after %d calls, want %q after 2", s.Instances[0].IMEI, idle.imeiCalls, idle.imei)
	}
}

func TestMetricsParse(t *testing.T) {
	t.Parallel()
	s := Snapshot{Time: t0, Instances: []Row{
		{Instance: "ttyACM0", Status: done("u-a")},
		{Instance: "ttyACM1", Status: failed("u-b")},
		{Instance: "ttyACM2", Status: running("u-c")},
		{Instance: `odd"name\`, Error: "gone: nothing listens on its socket"},
	}}
	var b strings.Builder
	if err := WriteMetrics(&b, s); err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(b.String()))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, b.String())
	}
	value := func(name string, labels map[string]string) (float64, bool) {
		f := fams[name]
		if f == nil {
			return 0, false
		}
	next:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue(), true
			default:
				return m.GetGauge().GetValue(), true
			}
		}
		return 0, false
	}
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"provisiond_up", map[string]string{"instance": "ttyACM0", "device_uuid": "u-a"}, 1},
		{"provisiond_up", map[string]string{"instance": `odd"name\`, "device_uuid": ""}, 0},
		{"provisiond_modem_up", map[string]string{"instance": "ttyACM1"}, 1},
		{"provisiond_attempts_total", map[string]string{"instance": "ttyACM0", "outcome": "DONE"}, 1},
		{"provisiond_attempts_total", map[string]string{"instance": "ttyACM0", "outcome": "NO_COMMANDS"}, 1},
		{"provisiond_commands_total", map[string]string{"instance": "ttyACM1", "result": "failed"}, 1},
		{"provisiond_commands_total", map[string]string{"instance": "ttyACM1", "result": "ok"}, 2},
		{"provisiond_last_success_timestamp_seconds", map[string]string{"instance": "ttyACM0"}, float64(t0.Add(-time.Minute).Unix())},
		{"provisiond_results_waiting", map[string]string{"instance": "ttyACM1", "device_uuid": "u-b"}, 2},
		{"provisiond_handshakes_total", map[string]string{"instance": "ttyACM0", "device_uuid": "u-a"}, 2},
		{"provisiond_handshakes_total", map[string]string{"instance": "ttyACM1"}, 0},
		{"provisiond_network_bytes_total", map[string]string{"instance": "ttyACM0", "direction": "sent"}, 7000},
		{"provisiond_network_bytes_total", map[string]string{"instance": "ttyACM0", "direction": "received"}, 5000},
		{"provisiond_last_attempt_handshakes", map[string]string{"instance": "ttyACM0"}, 1},
		{"provisiond_last_attempt_network_bytes", map[string]string{"instance": "ttyACM0", "direction": "sent"}, 4963},
		{"provisiond_last_attempt_network_bytes", map[string]string{"instance": "ttyACM0", "direction": "received"}, 2893},
		{"provisiond_last_attempt_network_bytes", map[string]string{"instance": "ttyACM1", "direction": "received"}, 0},
	}
	for _, tc := range tests {
		got, ok := value(tc.name, tc.labels)
		if !ok || got != tc.want {
			t.Errorf("%s%v = %v (found %v), want %v", tc.name, tc.labels, got, ok, tc.want)
		}
	}
	if _, ok := value("provisiond_last_success_timestamp_seconds", map[string]string{"instance": "ttyACM1"}); ok {
		t.Error("an instance that never succeeded has a last success time")
	}
	for name, typ := range map[string]dto.MetricType{
		"provisiond_attempts_total":             dto.MetricType_COUNTER,
		"provisiond_handshakes_total":           dto.MetricType_COUNTER,
		"provisiond_network_bytes_total":        dto.MetricType_COUNTER,
		"provisiond_last_attempt_handshakes":    dto.MetricType_GAUGE,
		"provisiond_last_attempt_network_bytes": dto.MetricType_GAUGE,
	} {
		if f := fams[name]; f.GetType() != typ || f.GetHelp() == "" {
			t.Errorf("%s is a %v with help %q, want a %v with help", name, f.GetType(), f.GetHelp(), typ)
		}
	}
	if _, ok := value("provisiond_last_attempt_handshakes", map[string]string{"instance": "ttyACM2"}); ok {
		t.Error("an instance whose first attempt has not finished has a last attempt's handshakes")
	}
}

func TestLoopback(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{"127.0.0.1:9273": true, "[::1]:9273": true, "localhost:1": true,
		":9273": false, "0.0.0.0:9273": false, "192.168.1.4:9273": false, "127.0.0.1": false} {
		if got := Loopback(addr); got != want {
			t.Errorf("Loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// TestDashboardPushesChanges: the event stream gives the page data at once and again when an
// instance's attempt finishes, and nothing when nothing changed.
func TestDashboardPushesChanges(t *testing.T) {
	t.Parallel()
	a := &fakeSource{st: running("u-a"), imei: "351358811111111"}
	b := &fakeSource{st: done("u-b"), imei: "351358822222222"}
	d := &Dashboard{Collector: newStation(t, map[string]*fakeSource{"a": a, "b": b}), Interval: 5 * time.Millisecond}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go d.Poll(ctx)

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	nextPage := func() PageData {
		t.Helper()
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var p PageData
				if err := json.Unmarshal([]byte(data), &p); err != nil {
					t.Fatalf("event data: %v", err)
				}
				return p
			}
		}
		t.Fatalf("the event stream ended: %v", sc.Err())
		return PageData{}
	}
	p := nextPage()
	if len(p.Instances) != 2 || p.Instances[0].Class != ClassRunning || p.Instances[1].Class != ClassDone ||
		p.Counts != (Counts{Done: 1, Running: 1}) || p.Instances[0].Step != "batch 1 cmd 3/7" {
		t.Fatalf("first page: %+v", p)
	}
	fin := done("u-a")
	fin.Events = []status.Event{{Event: "START"}, {Event: "NO_COMMANDS", Reason: "command AT%KEYGEN failed"}, {Event: "STOP"},
		{Event: "SCHEDULED_PROVISIONING"}, {Event: "START"}, {Event: "DONE"}, {Event: "STOP"}}
	a.set(fin)
	p = nextPage()
	if p.Instances[0].Class != ClassDone || p.Counts != (Counts{Done: 2}) || p.Progress != 1 {
		t.Fatalf("after a finished: %+v", p)
	}
	if tl := p.Instances[0].Timeline; len(tl) != 2 || tl[0].OK || tl[0].Event != "NO_COMMANDS" || !tl[1].OK || tl[1].Event != "DONE" {
		t.Errorf("timeline %+v, want a failed NO_COMMANDS then a DONE", tl)
	}

	// The page comes with the data of the moment; the API and the metrics answer.
	for path, want := range map[string]string{"/": `"instance":"a"`, "/api/instances": `"instance": "b"`,
		"/metrics": `provisiond_up{instance="a",device_uuid="u-a"} 1`} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %s, want %q in:\n%s", path, resp.Status, want, body)
		}
	}
}

func (f *fakeSource) statusCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.asked
}

// TestPollFasterWhileProvisioning: while an attempt runs on some instance the sockets are asked
// every BusyInterval; once every instance rests, only every Interval again (an hour here, so a
// single further ask would show).
func TestPollFasterWhileProvisioning(t *testing.T) {
	t.Parallel()
	a := &fakeSource{st: running("u-a"), imei: "351358811111111"}
	b := &fakeSource{st: done("u-b"), imei: "351358822222222"}
	d := &Dashboard{Collector: newStation(t, map[string]*fakeSource{"a": a, "b": b}),
		Interval: time.Hour, BusyInterval: time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	polled := make(chan struct{})
	go func() { d.Poll(ctx); close(polled) }()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("%s: not within 30 s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor("five asks while a provisions", func() bool { return b.statusCalls() >= 5 })

	a.set(done("u-a"))
	// Every ask of a from now on sees it at rest; the collect holding the first of them is
	// the last for an hour. Let a collect that was under way when a finished run out first.
	seen := a.statusCalls()
	waitFor("an ask after a finished", func() bool { return a.statusCalls() > seen })
	time.Sleep(50 * time.Millisecond)
	rest := b.statusCalls()
	time.Sleep(200 * time.Millisecond)
	if got := b.statusCalls(); got != rest {
		t.Errorf("asked %d more times with every instance at rest, want 0 (Interval is an hour)", got-rest)
	}
	cancel()
	<-polled
}

func TestPollPeriods(t *testing.T) {
	t.Parallel()
	tests := []struct {
		interval, busy     time.Duration
		wantIdle, wantBusy time.Duration
	}{
		{0, 0, time.Second, 200 * time.Millisecond},
		{2 * time.Second, 0, 2 * time.Second, 400 * time.Millisecond},
		{200 * time.Millisecond, 0, 200 * time.Millisecond, 100 * time.Millisecond},
		{50 * time.Millisecond, 0, 50 * time.Millisecond, 50 * time.Millisecond},
		{time.Second, 3 * time.Second, time.Second, time.Second},
		{time.Second, 10 * time.Millisecond, time.Second, 10 * time.Millisecond},
	}
	for _, tt := range tests {
		d := &Dashboard{Interval: tt.interval, BusyInterval: tt.busy}
		if idle, busy := d.periods(); idle != tt.wantIdle || busy != tt.wantBusy {
			t.Errorf("Interval %v, BusyInterval %v: periods %v, %v; want %v, %v",
				tt.interval, tt.busy, idle, busy, tt.wantIdle, tt.wantBusy)
		}
	}
}
