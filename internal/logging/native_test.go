package logging

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"go.uber.org/zap"

	"github.com/provisiond/provisiond/internal/testexec"
)

// parseNative decodes one datagram of journald's native protocol: KEY=VALUE lines, or for a
// value holding a newline KEY, a newline, its length as a little-endian uint64, the value and
// a newline.
func parseNative(b []byte) (map[string]string, error) {
	out := map[string]string{}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			return nil, fmt.Errorf("field without newline: %q", b)
		}
		line := b[:nl]
		if k, v, ok := bytes.Cut(line, []byte{'='}); ok {
			out[string(k)] = string(v)
			b = b[nl+1:]
			continue
		}
		b = b[nl+1:]
		if len(b) < 8 {
			return nil, fmt.Errorf("field %q: no length", line)
		}
		n := binary.LittleEndian.Uint64(b)
		b = b[8:]
		if uint64(len(b)) < n+1 || b[n] != '\n' {
			return nil, fmt.Errorf("field %q: bad length %d", line, n)
		}
		out[string(line)] = string(b[:n])
		b = b[n+1:]
	}
	return out, nil
}

// buildProbe builds testdata/journalprobe with go-systemd's journal socket set to socket.
func buildProbe(t *testing.T, socket string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the probe with")
	}
	bin := filepath.Join(t.TempDir(), "journalprobe")
	cmd := exec.Command(goBin, "build", "-o", bin,
		"-ldflags", "-X github.com/coreos/go-systemd/v22/journal.journalSocket="+socket, "./testdata/journalprobe")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build probe: %v\n%s", err, out)
	}
	return bin
}

// runProbe runs the probe with stderr on a file that JOURNAL_STREAM names, and returns what
// it wrote there.
func runProbe(t *testing.T, bin string) []string {
	t.Helper()
	f, stream := journalFile(t)
	cmd := testexec.Command(context.Background(), bin)
	cmd.Stderr = f
	cmd.Env = append(os.Environ(), "JOURNAL_STREAM="+stream)
	if err := cmd.Run(); err != nil {
		t.Fatalf("probe: %v", err)
	}
	return readLines(t, f)
}

func TestNativeJournalOverSocket(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "socket")
	bin := buildProbe(t, socket)

	t.Run("journald listening", func(t *testing.T) {
		conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: socket, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(socket)
		defer conn.Close()
		if stderr := runProbe(t, bin); len(stderr) != 0 {
			t.Errorf("entries went to the stream as well: %q", stderr)
		}
		var recs []map[string]string
		buf := make([]byte, 1<<16)
		for len(recs) < 3 {
			if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("after %d records: %v", len(recs), err)
			}
			rec, err := parseNative(buf[:n])
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, rec)
		}

		want := []map[string]string{{
			"MESSAGE":                "provisioning DONE: 5 commands executed",
			"MESSAGE_ID":             "4bd5d0c2cf5e4f1f9b0c54a1e3a25d01",
			"PRIORITY":               "6",
			"SYSLOG_IDENTIFIER":      "journalprobe",
			"PROVISIOND_EVENT":       "DONE",
			"PROVISIOND_ATTEMPT":     "3",
			"PROVISIOND_DEVICE_UUID": "50363154-3931-4d2d-8011-1234567890ab",
			"PROVISIOND_MODEM_PORT":  "/dev/ttyACM0",
		}, {
			"MESSAGE":               "modem lost: read /dev/ttyACM0: input/output error (port=/dev/ttyACM0)",
			"PRIORITY":              "4",
			"PROVISIOND_ERROR":      "read /dev/ttyACM0: input/output error",
			"PROVISIOND_PORT":       "/dev/ttyACM0",
			"PROVISIOND_MODEM_PORT": "/dev/ttyACM0",
		}, {
			"MESSAGE":              `at trace (component=at line="AT+CFUN?\r\nOK")`,
			"PRIORITY":             "7",
			"PROVISIOND_COMPONENT": "at",
			"PROVISIOND_LINE":      "AT+CFUN?\r\nOK",
		}}
		for i, rec := range recs {
			for k, v := range want[i] {
				if rec[k] != v {
					t.Errorf("record %d: %s = %q, want %q", i, k, rec[k], v)
				}
			}
			if !strings.HasSuffix(rec["CODE_FILE"], "journalprobe/main.go") || rec["CODE_LINE"] == "" ||
				rec["CODE_FUNC"] != "main.main" {
				t.Errorf("record %d: caller fields CODE_FILE=%q CODE_LINE=%q CODE_FUNC=%q", i,
					rec["CODE_FILE"], rec["CODE_LINE"], rec["CODE_FUNC"])
			}
		}
		if _, ok := recs[1]["MESSAGE_ID"]; ok {
			t.Errorf("an entry without logging.Message has a MESSAGE_ID: %q", recs[1]["MESSAGE_ID"])
		}
	})

	t.Run("no journald socket: the stream keeps every entry", func(t *testing.T) {
		stderr := runProbe(t, bin)
		want := []string{"<6>INFO\t", "<4>WARN\t", "<7>DEBUG\t"}
		if len(stderr) != len(want) {
			t.Fatalf("stream got %q, want %d lines", stderr, len(want))
		}
		for i, w := range want {
			if !strings.HasPrefix(stderr[i], w) {
				t.Errorf("line %d = %q, want prefix %q", i, stderr[i], w)
			}
		}
		if strings.Contains(strings.Join(stderr, "\n"), "journal-message") {
			t.Errorf("the journal-only message field leaks into the stream: %q", stderr)
		}
	})
}

func TestNativeRecordFields(t *testing.T) {
	f, stream := journalFile(t)
	type sent struct {
		msg  string
		prio journal.Priority
		vars map[string]string
	}
	var got []sent
	log, err := New(Config{Writer: f, Env: envWith(map[string]string{"JOURNAL_STREAM": stream}),
		send: func(msg string, prio journal.Priority, vars map[string]string) error {
			got = append(got, sent{msg, prio, vars})
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 2, 3, 4, 5, 0, time.UTC)
	log.Named("daemon").Warn("attempt failed",
		Message("0123456789abcdef0123456789abcdef", "provisioning FAILED: timeout"),
		zap.Time("next_attempt", at), zap.Duration("backoff", time.Minute),
		zap.Strings("keys", []string{"a", "b"}), zap.String("dotted.key-name", "v"),
		Secret("jwt", strings.Repeat("x", 40)))
	if len(got) != 1 {
		t.Fatalf("sent %d records, want 1", len(got))
	}
	r := got[0]
	if r.msg != "provisioning FAILED: timeout" || r.prio != journal.PriWarning {
		t.Errorf("MESSAGE %q PRIORITY %d", r.msg, r.prio)
	}
	want := map[string]string{
		"MESSAGE_ID":                 "0123456789abcdef0123456789abcdef",
		"PROVISIOND_NEXT_ATTEMPT":    "2026-12-02T03:04:05Z",
		"PROVISIOND_BACKOFF":         "1m0s",
		"PROVISIOND_KEYS":            `["a","b"]`,
		"PROVISIOND_DOTTED_KEY_NAME": "v",
		"PROVISIOND_LOGGER":          "daemon",
	}
	for k, v := range want {
		if r.vars[k] != v {
			t.Errorf("%s = %q, want %q", k, r.vars[k], v)
		}
	}
	if jwt := r.vars["PROVISIOND_JWT"]; strings.Contains(jwt, strings.Repeat("x", 10)) || !strings.Contains(jwt, "sha256:") {
		t.Errorf("secret field not fingerprinted: %q", jwt)
	}
	if lines := readLines(t, f); len(lines) != 0 {
		t.Errorf("a sent entry also reached the stream: %q", lines)
	}
}

func TestNativeFallsBackToStream(t *testing.T) {
	f, stream := journalFile(t)
	log, err := New(Config{Writer: f, Env: envWith(map[string]string{"JOURNAL_STREAM": stream}),
		send: func(string, journal.Priority, map[string]string) error { return syscall.ECONNREFUSED }})
	if err != nil {
		t.Fatal(err)
	}
	log.Error("refused", zap.Error(errors.New("x")))
	lines := readLines(t, f)
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "<3>ERROR\t") {
		t.Errorf("stream got %q, want one <3>ERROR line", lines)
	}
}

func TestFieldName(t *testing.T) {
	tests := map[string]string{
		"event": "PROVISIOND_EVENT", "device_uuid": "PROVISIOND_DEVICE_UUID", "a.b-c d": "PROVISIOND_A_B_C_D",
		"Attempt2": "PROVISIOND_ATTEMPT2",
	}
	for in, want := range tests {
		if got := FieldName(in); got != want {
			t.Errorf("FieldName(%q) = %q, want %q", in, got, want)
		}
	}
}
