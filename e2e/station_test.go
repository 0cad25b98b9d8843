package e2e

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/attest"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/testbed"
	"github.com/provisiond/provisiond/internal/testexec"
)

// answerLimit is how long the station subcommands (tokens, claim, list, dashboard) give each
// instance to answer in these tests: their default, 1 s, natively, where the tests pass no
// --timeout and so check the default; testexec.Scale of it under emulation, passed with
// --timeout (answerFlags), where a daemon takes several times longer to answer.
func answerLimit() time.Duration { return testexec.Scale(time.Second) }

// noAnswer is how the station subcommands show an instance that gave no answer within
// answerLimit: "no answer within 1s" natively.
func noAnswer() string { return "no answer within " + answerLimit().String() }

// answerFlags are the flags that give each instance answerLimit: none natively.
func answerFlags() []string {
	if !testexec.Emulated() {
		return nil
	}
	return []string{"--timeout", answerLimit().String()}
}

// stationRun runs the built binary with args, a station subcommand and its flags, outside any
// bench and returns its stdout, stderr and exit code.
func stationRun(t *testing.T, ctx context.Context, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := testexec.Command(ctx, provisiond, append(append([]string(nil), args...), answerFlags()...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("provisiond %s: %v", strings.Join(args, " "), err)
	}
	if strings.Contains(errOut.String(), "WARNING: DATA RACE") {
		t.Errorf("the race detector reported a data race in provisiond %s", args[0])
	}
	return out.String(), errOut.String(), code
}

// tableLine returns the line of a table whose first column is first, or "".
func tableLine(table, first string) string {
	for _, l := range strings.Split(table, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == first {
			return l
		}
	}
	return ""
}

// stationInstance is one provisiond instance of the station: a bench whose daemon serves its
// control socket at <run dir>/<name>/provisiond.sock (<run dir>/provisiond.sock for the
// plain service), as the systemd units lay them out.
type stationInstance struct {
	name  string
	bed   *testbed.Bed
	proc  *testbed.Process
	logAt int
}

func startStationInstance(t *testing.T, ctx context.Context, runDir, name string, cloud *simcloud.Server) *stationInstance {
	t.Helper()
	sock := filepath.Join(runDir, name, "provisiond.sock")
	if name == "provisiond" {
		sock = filepath.Join(runDir, "provisiond.sock")
	}
	b := newBed(t, ctx, testbed.Options{Unclaimed: cloud != nil, SharedCloud: cloud,
		Settings: map[string]any{"control.socket": sock}})
	in := &stationInstance{name: name, bed: b, proc: start(t, ctx, b, "run")}
	waitID(t, ctx, in.proc, &in.logAt, "modem-answering")
	return in
}

// hangingInstance is a socket that accepts connections and never answers.
func hangingInstance(t *testing.T, path string) func() {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return
			}
			conns = append(conns, c)
		}
	}()
	stop := func() { ln.Close(); <-done }
	t.Cleanup(stop)
	return stop
}

// goneInstance leaves the socket of a daemon that was killed: the file, nobody listening.
func goneInstance(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
}

// TestStationTokensAndClaim runs a station of three instances sharing one simulated service,
// a fourth whose device that service does not know, one that hangs and one that is gone:
// `tokens --csv` lists the three-plus-one devices as Nordic's claim_devices reads them without
// waiting for the broken two; `claim` with a wrong key fails every device and never shows the
// key; a dry run finds three claimable; the claim tagged nrf-cloud-onboarding claims three
// and reports the stranger with the service's reason; the rule's commands then provision all
// three.
func TestStationTokensAndClaim(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	cloud, err := simcloud.New(simcloud.Config{StateDir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if err := cloud.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cloud.Close() })

	runDir := t.TempDir()
	var station []*stationInstance
	for _, name := range []string{"provisiond", "ttyACM0", "ttyACM1"} {
		station = append(station, startStationInstance(t, ctx, runDir, name, cloud))
	}
	stranger := startStationInstance(t, ctx, runDir, "ttyACM2", nil) // its own service
	stopHang := hangingInstance(t, filepath.Join(runDir, "ttyACM8", "provisiond.sock"))
	goneInstance(t, filepath.Join(runDir, "ttyACM9", "provisiond.sock"))

	// tokens --csv: one row per device, the broken instances on stderr, exit 1.
	out, errOut, code := stationRun(t, ctx, "tokens", "--csv", "--run-dir", runDir)
	if code != 1 || !strings.Contains(errOut, "ttyACM8: "+noAnswer()) || !strings.Contains(errOut, "ttyACM9: gone") {
		t.Fatalf("tokens --csv: exit %d, stderr %q; want 1 naming the hanging and the gone instance", code, errOut)
	}
	// claim_devices: csv.reader, then imei, uuid, attest_tok, date_time = row[:4].
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatalf("tokens --csv output does not parse: %v\n%s", err, out)
	}
	all := append(append([]*stationInstance(nil), station...), stranger)
	if len(rows) != len(all) {
		t.Fatalf("%d rows, want %d:\n%s", len(rows), len(all), out)
	}
	for i, in := range all {
		imei, uuid, tok, at := rows[i][0], rows[i][1], rows[i][2], rows[i][3]
		if imei != in.bed.Modem().IMEI() || uuid != in.bed.UUID() {
			t.Errorf("row %d: %s %s, want %s's %s %s", i+1, imei, uuid, in.name, in.bed.Modem().IMEI(), in.bed.UUID())
		}
		if id, err := attest.DeviceUUID(tok); err != nil || id != uuid {
			t.Errorf("row %d: token of %q (%v), want %s", i+1, id, err, uuid)
		}
		if ts, err := time.Parse("2006-01-02T15:04:05.999999-07:00", at); err != nil || !strings.HasSuffix(at, "+00:00") || time.Since(ts) > time.Hour {
			t.Errorf("row %d: time %q (%v), want an ISO-8601 UTC time of the reading", i+1, at, err)
		}
	}
	out, _, code = stationRun(t, ctx, "tokens", "--run-dir", runDir)
	if code != 1 || !strings.HasSuffix(tableLine(out, "ttyACM8"), " "+noAnswer()) ||
		!strings.Contains(tableLine(out, "ttyACM9"), " gone: ") || !strings.Contains(tableLine(out, "provisiond"), station[0].bed.UUID()) {
		t.Fatalf("tokens: exit %d, want 1 and a table showing the hanging and the gone instance:\n%s", code, out)
	}
	out, _, code = stationRun(t, ctx, "tokens", "--run-dir", runDir, "--instance", "ttyACM1")
	if code != 0 || !strings.Contains(out, station[2].bed.UUID()) || strings.Contains(out, station[1].bed.UUID()) {
		t.Fatalf("tokens --instance ttyACM1: exit %d\n%s", code, out)
	}
	stopHang()
	if err := os.RemoveAll(filepath.Join(runDir, "ttyACM9")); err != nil {
		t.Fatal(err)
	}

	// The owner side: the config names the simulated service and its CA; the key is in a file.
	dir := t.TempDir()
	cfg := filepath.Join(dir, "owner.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("owner:\n  api_url: %q\n  ca_file: %q\n", cloud.HTTPURL(), cloud.CAFile())), 0o600); err != nil {
		t.Fatal(err)
	}
	keyFile, wrongKeyFile := filepath.Join(dir, "api-key"), filepath.Join(dir, "wrong-key")
	const wrongKey = "not-the-key-4f9a8c7e"
	if err := os.WriteFile(keyFile, []byte(simcloud.DefaultAPIKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrongKeyFile, []byte(wrongKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	claim := func(key string, args ...string) (string, string, int) {
		return stationRun(t, ctx, append([]string{"claim", "--config", cfg, "--run-dir", runDir, "--api-key-file", key}, args...)...)
	}

	out, errOut, code = claim(wrongKeyFile, "--tags", "nrf-cloud-onboarding")
	if code != 1 || strings.Count(out, "401 Unauthorized") != len(all) || strings.Contains(out+errOut, wrongKey) {
		t.Fatalf("claim with a wrong key: exit %d, want 1, every device refused with 401 and the key nowhere:\n%s%s", code, out, errOut)
	}

	out, _, code = claim(keyFile, "--dry-run")
	if code != 1 || strings.Count(out, " claimable ") != 3 || !strings.Contains(out, "4 device(s): 3 claimable, 1 failed") {
		t.Fatalf("claim --dry-run: exit %d, want 1 with 3 claimable:\n%s", code, out)
	}
	for _, in := range all {
		if d, err := cloud.Device(in.bed.UUID()); err == nil && d.Claimed {
			t.Fatalf("the dry run claimed %s", in.name)
		}
	}

	// The onboarding rule Nordic's client creates; the claim's tag starts it.
	api := newOwnerAPI(t, ctx, cloud)
	if st, body := api.do("POST", "provisioning/tags", nil, map[string]any{"tag": "nrf-cloud-onboarding", "description": "onboarding"}); st != 201 {
		t.Fatalf("create tag: %d %s", st, body)
	}
	rule := map[string]any{"name": "nRF Cloud Onboarding", "active": true, "tags": []string{"nrf-cloud-onboarding"},
		"commands": []any{
			map[string]any{"request": map[string]any{"clientPrivateKeyGeneration": map[string]any{"secTag": nrfCloudSecTag}}},
			map[string]any{"request": map[string]any{"cloudAccessKeyGeneration": map[string]any{"secTag": nrfCloudSecTag}}},
			map[string]any{"request": map[string]any{"serverCertificate": map[string]any{"secTag": nrfCloudSecTag, "content": serverCerts(testbed.TransportHTTP)}}},
		}}
	if st, body := api.do("POST", "provisioning-rules", nil, rule); st != 201 {
		t.Fatalf("create rule: %d %s", st, body)
	}

	out, _, code = claim(keyFile, "--tags", "nrf-cloud-onboarding")
	if code != 1 || !strings.Contains(out, "4 device(s): 3 claimed, 1 failed") {
		t.Fatalf("claim: exit %d, want 1 with 3 claimed and the stranger failed:\n%s", code, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "ttyACM2 ") && !(strings.Contains(line, " failed ") && strings.Contains(line, "device not registered")) {
			t.Errorf("the stranger's line %q does not give the service's reason", line)
		}
	}
	out, _, code = claim(keyFile, "--instance", "ttyACM0")
	if code != 0 || !strings.Contains(out, "already claimed") {
		t.Fatalf("claim again: exit %d, want 0 and already claimed:\n%s", code, out)
	}

	// Each daemon now fetches the rule's commands and uploads their results (no FINISHED
	// command, so the attempt ends NO_COMMANDS); every job ends SUCCEEDED.
	for _, in := range station {
		if _, err := in.bed.Output(ctx, provisiond, "now"); err != nil {
			t.Fatalf("%s: now: %v", in.name, err)
		}
	}
	for _, in := range station {
		waitID(t, ctx, in.proc, &in.logAt, "results-uploaded")
		jobs, err := cloud.Jobs(in.bed.UUID())
		if err != nil || len(jobs) != 3 {
			t.Fatalf("%s: %d jobs (%v), want the rule's 3", in.name, len(jobs), err)
		}
		for _, j := range jobs {
			if j.Status != simcloud.StatusSucceeded {
				t.Errorf("%s: job %s is %s, want SUCCEEDED", in.name, j.ID, j.Status)
			}
		}
	}
}
