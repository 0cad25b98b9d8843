package daemon

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/logging"
)

const catalogPath = "../../deploy/journal/provisiond.catalog"

var messageIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestEventMessageIDs(t *testing.T) {
	if len(Events()) != 13 || len(messageIDs) != len(Events()) {
		t.Fatalf("%d events listed, %d message IDs: want the device library's 13 each", len(Events()), len(messageIDs))
	}
	seen := map[string]Event{}
	for _, ev := range Events() {
		id := MessageID(ev)
		if !messageIDPattern.MatchString(id) {
			t.Errorf("%s: MESSAGE_ID %q is not 32 lowercase hex digits", ev, id)
		}
		if other, dup := seen[id]; dup {
			t.Errorf("%s and %s share MESSAGE_ID %s", ev, other, id)
		}
		seen[id] = ev
	}
}

// catalogEntry is one entry of a journal catalog file: "-- <id>" then header lines, an
// empty line and the text, as catalog(7) of systemd describes.
type catalogEntry struct {
	header map[string]string
	text   string
}

func parseCatalog(t *testing.T, b []byte) map[string]catalogEntry {
	t.Helper()
	entries := map[string]catalogEntry{}
	var id string
	var cur *catalogEntry
	inHeader := false
	var text strings.Builder
	flush := func() {
		if cur != nil {
			cur.text = strings.TrimSpace(text.String())
			entries[id] = *cur
		}
		text.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "-- "); ok {
			flush()
			id = strings.TrimSpace(rest)
			if !messageIDPattern.MatchString(id) {
				t.Fatalf("catalog line %d: %q is not a 128-bit ID in hex", n, id)
			}
			if _, dup := entries[id]; dup {
				t.Fatalf("catalog line %d: second entry for %s", n, id)
			}
			cur, inHeader = &catalogEntry{header: map[string]string{}}, true
			continue
		}
		switch {
		case cur == nil:
			if line != "" && !strings.HasPrefix(line, "#") {
				t.Fatalf("catalog line %d: text before the first entry: %q", n, line)
			}
		case inHeader && line == "":
			inHeader = false
		case inHeader:
			k, v, ok := strings.Cut(line, ": ")
			if !ok {
				t.Fatalf("catalog line %d: header line without \"Key: value\": %q", n, line)
			}
			cur.header[k] = v
		default:
			text.WriteString(line + "\n")
		}
	}
	flush()
	return entries
}

// TestJournalCatalog: every event has an entry in the catalog the package installs, filed
// under its MESSAGE_ID, with a subject naming the event and a text saying what to do; and
// journalctl itself (when installed) accepts the file and lists exactly those entries.
func TestJournalCatalog(t *testing.T) {
	raw, err := os.ReadFile(catalogPath)
	if err != nil {
		t.Fatal(err)
	}
	entries := parseCatalog(t, raw)
	want := map[string]Event{}
	for _, ev := range Events() {
		want[MessageID(ev)] = ev
		e, ok := entries[MessageID(ev)]
		if !ok {
			t.Errorf("%s: no catalog entry for MESSAGE_ID %s", ev, MessageID(ev))
			continue
		}
		if !strings.Contains(e.header["Subject"], "("+string(ev)+")") {
			t.Errorf("%s: subject %q does not name the event", ev, e.header["Subject"])
		}
		if e.header["Defined-By"] != "provisiond" || e.header["Documentation"] != "man:provisiond(8)" {
			t.Errorf("%s: header %v lacks Defined-By: provisiond or Documentation: man:provisiond(8)", ev, e.header)
		}
		if len(e.text) < 80 {
			t.Errorf("%s: catalog text too short to explain anything: %q", ev, e.text)
		}
	}
	for id := range entries {
		if _, ok := want[id]; !ok {
			t.Errorf("catalog entry %s belongs to no event", id)
		}
	}

	journalctl, err := exec.LookPath("journalctl")
	if err != nil {
		t.Log("no journalctl: checked with this test's own parser only")
		return
	}
	// journalctl --update-catalog against a root of our own: it compiles every catalog file
	// under <root>/usr/lib/systemd/catalog into <root>/var/lib/systemd/catalog/database and
	// refuses a malformed one.
	update := func(t *testing.T, content []byte) (string, error) {
		root := t.TempDir()
		dir := filepath.Join(root, "usr/lib/systemd/catalog")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "provisiond.catalog"), content, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(journalctl, "--root="+root, "--update-catalog").CombinedOutput(); err != nil {
			return string(out), err
		}
		out, err := exec.Command(journalctl, "--root="+root, "--list-catalog").Output()
		return string(out), err
	}
	t.Run("journalctl accepts it", func(t *testing.T) {
		out, err := update(t, raw)
		if err != nil {
			t.Fatalf("journalctl: %v\n%s", err, out)
		}
		var got, wantIDs []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			got = append(got, strings.Fields(l)[0])
		}
		for id := range want {
			wantIDs = append(wantIDs, id)
		}
		sort.Strings(got)
		sort.Strings(wantIDs)
		if strings.Join(got, " ") != strings.Join(wantIDs, " ") {
			t.Errorf("journalctl --list-catalog lists\n%s\nwant the %d event IDs", out, len(wantIDs))
		}
	})
	t.Run("journalctl refuses a broken copy", func(t *testing.T) {
		broken := bytes.Replace(raw, []byte("\n-- "), []byte("\n--- "), 1)
		if out, err := update(t, broken); err == nil {
			t.Errorf("journalctl took a catalog with a broken entry line: the check above is blind\n%s", out)
		}
	})
}

func TestEventSentences(t *testing.T) {
	next := time.Date(2026, 12, 2, 9, 30, 0, 0, time.UTC)
	tests := []struct {
		ev   Event
		info eventInfo
		want string
	}{
		{EventDone, eventInfo{attempt: 2, executed: 5}, "provisioning DONE: 5 commands executed"},
		{EventDone, eventInfo{executed: 1}, "provisioning DONE: 1 command executed"},
		{EventDone, eventInfo{executed: 3, failed: 1}, "provisioning DONE: 3 commands executed, 1 answered with an error"},
		{EventStart, eventInfo{attempt: 4}, "provisioning START: attempt 4 started"},
		{EventStop, eventInfo{attempt: 4}, "provisioning STOP: attempt 4 ended"},
		{EventNoCommands, eventInfo{}, "provisioning NO_COMMANDS: the service had no commands for this device"},
		{EventFailed, eventInfo{reason: "http fetch: timeout"}, "provisioning FAILED: the attempt failed: http fetch: timeout"},
		{EventFailedDeviceNotClaimed, eventInfo{}, "provisioning FAILED_DEVICE_NOT_CLAIMED: the service does not know the device as claimed; claim it with its attestation token (provisiond token)"},
		{EventScheduledProvisioning, eventInfo{next: next}, "provisioning SCHEDULED_PROVISIONING: next attempt at 2026-12-02T09:30:00Z"},
		{EventNeedLTEActivated, eventInfo{reason: "root CA written"}, "provisioning NEED_LTE_ACTIVATED: the modem's saved functional mode is restored: root CA written"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.info.sentence(tt.ev); got != tt.want {
				t.Errorf("sentence = %q, want %q", got, tt.want)
			}
		})
	}
	for _, ev := range Events() {
		if s := (eventInfo{}).sentence(ev); !strings.HasPrefix(s, "provisioning "+string(ev)+": ") || strings.HasSuffix(s, ": ") {
			t.Errorf("%s: sentence %q does not name the event and say what happened", ev, s)
		}
	}
}

// TestEmittedEventCarriesJournalMessage: the entry an attempt logs for its outcome carries
// the event's MESSAGE_ID and the sentence with the attempt's own figures.
func TestEmittedEventCarriesJournalMessage(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	h.cloud.push(t, at("a", "%A", ""), config("c", "provisioning/x", "1"), finished("f"))
	h.d.running.Store(true)
	if err := h.d.loadState(h.d.config()); err != nil {
		t.Fatal(err)
	}
	if err := h.d.onModemOpen(context.Background(), h.m); err != nil {
		t.Fatal(err)
	}
	if o := h.d.attempt(context.Background()); o.res.Event != EventDone {
		t.Fatalf("attempt = %+v, want DONE", o.res)
	}
	got := map[Event][2]string{}
	for _, e := range h.logs.FilterMessage("provisioning event").All() {
		var ev Event
		var id, text string
		for _, f := range e.Context {
			if f.Key == "event" {
				ev = Event(f.String)
			}
			if i, s, ok := logging.MessageOf(f); ok {
				id, text = i, s
			}
		}
		got[ev] = [2]string{id, text}
	}
	want := map[Event][2]string{
		EventStart: {MessageID(EventStart), "provisioning START: attempt 1 started"},
		EventDone:  {MessageID(EventDone), "provisioning DONE: 2 commands executed"},
		EventStop:  {MessageID(EventStop), "provisioning STOP: attempt 1 ended"},
	}
	for ev, w := range want {
		if got[ev] != w {
			t.Errorf("%s entry: MESSAGE_ID, MESSAGE = %q, want %q", ev, got[ev], w)
		}
	}
}
