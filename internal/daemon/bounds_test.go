package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"
	"unicode"

	"go.uber.org/zap/zapcore"

	"github.com/provisiond/provisiond/internal/proto"
)

// Text from the service or the modem reaches status output, logs and hook environments: an
// escape sequence must not reach a terminal raw, and a NUL must not stop the hooks (exec
// refuses an environment holding one).
func TestReasonsLoseControlCharacters(t *testing.T) {
	hooks, out := t.TempDir(), t.TempDir()
	t.Setenv("HOOK_OUT", out)
	writeScript(t, hooks, "record", recordHook, 0o755)
	cfg := testConfig()
	cfg.HooksDir = hooks
	h := newHarness(t, cfg, nil, nil)
	h.cloud.fetchErrs = []error{errors.New("service says \x1b[2J\x1b]0;owned\x07 no\x00 thanks\r\nbye\u0085")}
	if res, _ := h.d.RunOnce(context.Background()); res.Event != EventFailed {
		t.Fatalf("attempt ended %s, want FAILED", res.Event)
	}
	dirty := func(s string) bool { return strings.ContainsFunc(s, unicode.IsControl) }
	var reason string
	for _, e := range h.d.Status().Events {
		if e.Event == EventFailed {
			reason = e.Reason
		}
		if dirty(e.Reason) || dirty(e.CorrelationID) {
			t.Errorf("status event %s holds control characters: %q", e.Event, e.Reason)
		}
	}
	if want := "service says [2J ]0;owned no thanks bye"; !strings.Contains(reason, want) {
		t.Errorf("FAILED reason %q, want it to contain %q", reason, want)
	}
	files := readEnvFiles(t, out)
	env, ok := files["1-FAILED"]
	if !ok {
		names := []string{}
		for n := range files {
			names = append(names, n)
		}
		t.Fatalf("the hook did not run for FAILED (ran for %v)", names)
	}
	if env["PROVISIOND_REASON"] != reason {
		t.Errorf("PROVISIOND_REASON = %q, want %q", env["PROVISIOND_REASON"], reason)
	}
}

func TestEventEnvHasNoControlCharacters(t *testing.T) {
	rec := EventRecord{Event: EventFailed, Reason: "a\x00b\x1bc", CorrelationID: "id\x00\n1"}
	for _, kv := range eventEnv(rec, "u\x00", "tok\x00en") {
		if strings.ContainsFunc(kv, unicode.IsControl) {
			t.Errorf("hook environment entry %q holds control characters", kv)
		}
	}
}

// #-commands reach the serial front-end's application (reset, sockets, DFU), not the modem: by
// default the service cannot run them, and the refusal is reported like a failed command.
func TestHashCommandsRefusedByDefault(t *testing.T) {
	tests := []struct {
		name    string
		allow   bool
		cmd     proto.Command
		wantRun bool
	}{
		{name: "plain", cmd: at("a", "#XRESET", "")},
		{name: "concatenated", cmd: at("a", "+CFUN=4;#XSOCKET", "1,1,0")},
		{name: "lower case in a later part", cmd: at("a", "+CFUN?; AT#xdfuget", "")},
		{name: "a # inside a quoted parameter is no command", cmd: at("a", "%XAPNSTATUS", `1,"#apn"`), wantRun: true},
		{name: "allowed", allow: true, cmd: at("a", "#XRESET", ""), wantRun: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.AllowHashCommands = tt.allow
			h := newHarness(t, cfg, nil, nil)
			h.cloud.push(t, tt.cmd, at("b", "%NEXT", ""))
			res, err := h.d.RunOnce(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			ran := false
			for _, c := range h.m.commands() {
				if c == tt.cmd.ATString() {
					ran = true
				}
			}
			if ran != tt.wantRun {
				t.Fatalf("modem got %q: ran %v, want %v", h.m.commands(), ran, tt.wantRun)
			}
			if tt.wantRun {
				return
			}
			ups := h.cloud.allUploads()
			if len(ups) != 1 || len(ups[0]) != 1 {
				t.Fatalf("uploads %+v, want one with the refusal only", ups)
			}
			if r := ups[0][0]; r.ID != "a" || r.Kind != proto.KindError || r.CMEError != 0 || r.Message != msgHashCommand {
				t.Errorf("response %+v, want [a, 99, 0, %q]", r, msgHashCommand)
			}
			if res.Failed != 1 || !strings.Contains(res.Reason, msgHashCommand) {
				t.Errorf("result %+v, want one failure naming the refusal", res)
			}
		})
	}
}

// An attempt in which a command failed is no quiet NO_COMMANDS: it is logged as a warning that
// names the command and its error, and the reason says so.
func TestFailedCommandMakesAWarning(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	h.m.replies["AT%KEYGEN=16842753,2,0"] = reply{final: "+CME ERROR: 523"}
	h.cloud.push(t, at("k", "%KEYGEN", "16842753,2,0"))
	res, err := h.d.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Event != EventNoCommands || res.Failed != 1 {
		t.Fatalf("result %+v, want NO_COMMANDS with one failure", res)
	}
	for _, want := range []string{"AT%KEYGEN", "correlation id k", "+CME ERROR: 523"} {
		if !strings.Contains(res.Reason, want) {
			t.Errorf("reason %q lacks %q", res.Reason, want)
		}
	}
	if strings.Contains(res.Reason, "16842753") {
		t.Errorf("reason %q holds the command's parameters", res.Reason)
	}
	var found bool
	for _, e := range h.logs.FilterMessage("provisioning event").All() {
		if e.ContextMap()["event"] == string(EventNoCommands) {
			found = true
			if e.Level != zapcore.WarnLevel || e.ContextMap()["reason"] != res.Reason {
				t.Errorf("NO_COMMANDS logged at %s with %v, want a warning with the reason", e.Level, e.ContextMap())
			}
		}
	}
	if !found {
		t.Fatal("no NO_COMMANDS event logged")
	}
}
