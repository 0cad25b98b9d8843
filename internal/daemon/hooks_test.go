package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/provisiond/provisiond/internal/transport"
)

// writeScript writes an executable shell script.
func writeScript(t *testing.T, dir, name, body string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), mode); err != nil {
		t.Fatal(err)
	}
}

// readEnvFiles reads the files the recording hook wrote: one per event, named
// <seq>-<event>, holding the PROVISIOND_ environment.
func readEnvFiles(t *testing.T, dir string) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		env := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				env[k] = v
			}
		}
		out[e.Name()] = env
	}
	return out
}

const recordHook = `env | grep '^PROVISIOND_' > "$HOOK_OUT/$(ls "$HOOK_OUT" | wc -l | tr -d ' ')-$PROVISIOND_EVENT"`

func TestHooksGetEventEnvironment(t *testing.T) {
	hooks, out := t.TempDir(), t.TempDir()
	t.Setenv("HOOK_OUT", out)
	writeScript(t, hooks, "50-record", recordHook, 0o755)
	writeScript(t, hooks, "10-fail", "echo oops >&2; exit 3", 0o755)
	writeScript(t, hooks, ".hidden", "touch \"$HOOK_OUT/hidden-ran\"", 0o755)
	writeScript(t, hooks, "backup~", "touch \"$HOOK_OUT/backup-ran\"", 0o755)
	writeScript(t, hooks, "not-executable", "touch \"$HOOK_OUT/plain-ran\"", 0o644)
	if err := os.Mkdir(filepath.Join(hooks, "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig()
	cfg.HooksDir = hooks
	h := newHarness(t, cfg, nil, nil)
	h.cloud.fetchErrs = []error{transport.ErrNotClaimed}
	if _, err := h.d.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := readEnvFiles(t, out)
	var names []string
	for n := range got {
		names = append(names, n)
	}
	sort.Strings(names)
	want := []string{"0-START", "1-FAILED_DEVICE_NOT_CLAIMED", "2-STOP"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("hooks ran for %v, want %v (and no skipped file ran)", names, want)
	}
	nc := got["1-FAILED_DEVICE_NOT_CLAIMED"]
	if nc["PROVISIOND_DEVICE_UUID"] != h.m.uuid || nc["PROVISIOND_ATTESTATION_TOKEN"] != h.m.token ||
		nc["PROVISIOND_ATTEMPT"] != "1" || !strings.Contains(nc["PROVISIOND_REASON"], "not claimed") {
		t.Errorf("NOT_CLAIMED env = %v", nc)
	}
	if _, err := time.Parse(time.RFC3339, nc["PROVISIOND_TIME"]); err != nil {
		t.Errorf("PROVISIOND_TIME = %q: %v", nc["PROVISIOND_TIME"], err)
	}
	if _, ok := got["0-START"]["PROVISIOND_ATTESTATION_TOKEN"]; ok {
		t.Error("token passed with an event other than NOT_CLAIMED")
	}
	if n := h.logs.FilterMessage("hook failed").Len(); n != 3 {
		t.Errorf("logged %d hook failures, want 3 (one per event)", n)
	}
}

func TestHookScheduledHasNextAttempt(t *testing.T) {
	hooks, out := t.TempDir(), t.TempDir()
	t.Setenv("HOOK_OUT", out)
	writeScript(t, hooks, "record", recordHook, 0o755)
	cfg := testConfig()
	cfg.HooksDir = hooks
	h := newHarness(t, cfg, nil, nil)
	s := startRun(t, h)
	s.next().c <- s.now
	s.next()
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	// The last SCHEDULED_PROVISIONING is the one after the attempt (the first is at start).
	var sched map[string]string
	files := readEnvFiles(t, out)
	for i := len(files); i >= 0 && sched == nil; i-- {
		sched = files[fmt.Sprintf("%d-SCHEDULED_PROVISIONING", i)]
	}
	if first := files["0-SCHEDULED_PROVISIONING"]; first["PROVISIOND_NEXT_ATTEMPT"] != s.now.Format(time.RFC3339) {
		t.Errorf("first SCHEDULED_PROVISIONING = %v, want the start time", first)
	}
	want := s.now.Add(testConfig().Interval).Format(time.RFC3339)
	if sched == nil || sched["PROVISIOND_NEXT_ATTEMPT"] != want {
		t.Errorf("SCHEDULED_PROVISIONING env = %v, want next attempt %s", sched, want)
	}
}

// TestHookTimeout: a hanging hook (and its children) is killed after the timeout, logged,
// and the hooks after it still run.
func TestHookTimeout(t *testing.T) {
	hanging, recording, out := t.TempDir(), t.TempDir(), t.TempDir()
	t.Setenv("HOOK_OUT", out)
	writeScript(t, hanging, "hang", "sleep 60 & sleep 60", 0o755)
	writeScript(t, recording, "record", recordHook, 0o755)
	core, logs := observer.New(zapcore.DebugLevel)
	r := startHooks(zap.New(core))
	r.enqueue(hookJob{dir: hanging, timeout: 50 * time.Millisecond, event: EventStart})
	r.enqueue(hookJob{dir: recording, timeout: time.Minute, env: []string{"PROVISIOND_EVENT=STOP"}, event: EventStop})
	r.stop(time.Minute)
	if logs.FilterMessage("hook killed after its timeout").Len() != 1 {
		t.Errorf("logs = %v, want one timeout", logs.All())
	}
	if _, ok := readEnvFiles(t, out)["0-STOP"]; !ok {
		t.Error("the hook after the hanging one did not run")
	}
}

// TestHookStopBounded: stopping with a hanging hook kills it after the grace period instead
// of waiting for it, and queued jobs are dropped.
func TestHookStopBounded(t *testing.T) {
	hooks := t.TempDir()
	writeScript(t, hooks, "hang", "sleep 60", 0o755)
	r := startHooks(zap.NewNop())
	for range 3 {
		r.enqueue(hookJob{dir: hooks, timeout: time.Hour, event: EventStart})
	}
	r.stop(10 * time.Millisecond)                                        // returns once the running hook is killed
	r.enqueue(hookJob{dir: hooks, timeout: time.Hour, event: EventStop}) // ignored after stop
}

func TestHookQueueFull(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	r := &hookRunner{log: zap.New(core), queue: make(chan hookJob, 1)}
	r.enqueue(hookJob{event: EventStart})
	r.enqueue(hookJob{event: EventStop})
	if logs.FilterMessage("hook queue full; event not passed to hooks").Len() != 1 {
		t.Error("a dropped event was not logged")
	}
}

func TestOnFinishedExec(t *testing.T) {
	out := t.TempDir()
	t.Setenv("HOOK_OUT", out)
	script := filepath.Join(t.TempDir(), "done.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$1 $PROVISIOND_EVENT $PROVISIOND_CORRELATION_ID\" > \"$HOOK_OUT/finished\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.OnFinished = OnFinishedExec
	cfg.OnFinishedExec = script + " arg1"
	h := newHarness(t, cfg, nil, nil)
	h.cloud.push(t, finished("f"))
	if _, err := h.d.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "finished"))
	if err != nil {
		t.Fatalf("on_finished command did not run: %v", err)
	}
	if got := strings.TrimSpace(string(b)); got != "arg1 DONE f" {
		t.Errorf("on_finished saw %q, want \"arg1 DONE f\"", got)
	}
}

func TestListHooksMissingDir(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	if got := listHooks(zap.New(core), filepath.Join(t.TempDir(), "absent")); got != nil {
		t.Errorf("listHooks = %v", got)
	}
	if logs.Len() != 0 {
		t.Error("a missing hooks folder is not worth a log line")
	}
}
