package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/creack/pty"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// journalFile returns a file to log into and a JOURNAL_STREAM value that names it, the way
// systemd names the stream socket it hands a service as stderr.
func journalFile(t *testing.T) (*os.File, string) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return f, fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// refuse stands for a journald whose native socket refuses every entry: the logger falls
// back to the stream, which is what the stream tests look at.
func refuse(string, journal.Priority, map[string]string) error { return syscall.ECONNREFUSED }

func envWith(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func readLines(t *testing.T, f *os.File) []string {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func TestJournalPriorityPrefix(t *testing.T) {
	f, stream := journalFile(t)
	log, err := New(Config{Level: "debug", Writer: f, Env: envWith(map[string]string{"JOURNAL_STREAM": stream}), send: refuse})
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("d")
	log.Info("i", zap.String("port", "/dev/ttyACM0"))
	log.Warn("w")
	log.Error("e")
	log.DPanic("p") // production-style logger: DPanic logs, does not panic

	lines := readLines(t, f)
	want := []string{"<7>DEBUG\t", "<6>INFO\t", "<4>WARN\t", "<3>ERROR\t", "<2>DPANIC\t"}
	entry := regexp.MustCompile(`^<\d>[A-Z]+\t`)
	var got []string
	for _, l := range lines {
		// Stack traces of error entries span lines; each line must carry a priority.
		if !regexp.MustCompile(`^<\d>`).MatchString(l) {
			t.Errorf("line without priority prefix: %q", l)
		}
		if entry.MatchString(l) {
			got = append(got, l)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d:\n%s", len(got), len(want), strings.Join(lines, "\n"))
	}
	for i, l := range got {
		if !strings.HasPrefix(l, want[i]) {
			t.Errorf("entry %d = %q, want prefix %q", i, l, want[i])
		}
	}
	// journald stamps entries itself: no timestamp in the line.
	if regexp.MustCompile(`\d{4}-\d\d-\d\dT`).MatchString(got[1]) {
		t.Errorf("entry carries a timestamp under journald: %q", got[1])
	}
	if !strings.Contains(got[1], `{"port": "/dev/ttyACM0"}`) {
		t.Errorf("fields missing from %q", got[1])
	}
}

func TestJournalStackTraceLinesKeepPriority(t *testing.T) {
	f, stream := journalFile(t)
	log, err := New(Config{Writer: f, Env: envWith(map[string]string{"JOURNAL_STREAM": stream}), send: refuse})
	if err != nil {
		t.Fatal(err)
	}
	log.Error("refused") // operational error: one line, no stack
	log.DPanic("boom")   // a bug: stack trace over several lines
	lines := readLines(t, f)
	if len(lines) < 3 {
		t.Fatalf("want one error line and a multi-line entry with a stack trace, got %q", lines)
	}
	if !strings.HasPrefix(lines[0], "<3>ERROR\t") || !strings.HasPrefix(lines[1], "<2>DPANIC\t") {
		t.Errorf("error entry is not one line followed by the dpanic entry: %q", lines[:2])
	}
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l, "<2>") {
			t.Errorf("line %q does not start with <2>", l)
		}
	}
}

func TestJournalDetection(t *testing.T) {
	f, stream := journalFile(t)
	_, otherStream := journalFile(t)
	tests := []struct {
		name   string
		stream string
		format string
		want   string // prefix of the first line
	}{
		{name: "matching stream, native socket refusing", stream: stream, want: "<6>INFO\t"},
		{name: "matching stream, json", stream: stream, format: "json", want: `<6>{"level":"info",`},
		{name: "inherited stream of another file", stream: otherStream, want: `{"level":"info",`},
		{name: "not under systemd", stream: "", want: `{"level":"info",`},
		{name: "garbage variable", stream: "x:y", want: `{"level":"info",`},
		{name: "console outside journald has a time", stream: "", format: "console", want: "20"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := f.Truncate(0); err != nil {
				t.Fatal(err)
			}
			if _, err := f.Seek(0, 0); err != nil {
				t.Fatal(err)
			}
			log, err := New(Config{Format: tt.format, Writer: f, Env: envWith(map[string]string{"JOURNAL_STREAM": tt.stream}), send: refuse})
			if err != nil {
				t.Fatal(err)
			}
			log.Info("hello")
			lines := readLines(t, f)
			if len(lines) != 1 || !strings.HasPrefix(lines[0], tt.want) {
				t.Errorf("got %q, want one line starting with %q", lines, tt.want)
			}
		})
	}
}

func TestLevelFiltering(t *testing.T) {
	tests := []struct {
		level string
		want  []string
	}{
		{level: "debug", want: []string{"debug", "info", "warn", "error"}},
		{level: "", want: []string{"info", "warn", "error"}},
		{level: "info", want: []string{"info", "warn", "error"}},
		{level: "WARN", want: []string{"warn", "error"}},
		{level: "error", want: []string{"error"}},
	}
	for _, tt := range tests {
		t.Run("level="+tt.level, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := New(Config{Level: tt.level, Format: "json", Writer: &buf})
			if err != nil {
				t.Fatal(err)
			}
			log.Debug("m")
			log.Info("m")
			log.Warn("m")
			log.Error("m")
			if got := levels(t, buf.String()); strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("got levels %v, want %v", got, tt.want)
			}
		})
	}
}

func levels(t *testing.T, out string) []string {
	t.Helper()
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var e struct{ Level string }
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		got = append(got, e.Level)
	}
	return got
}

func TestAtomicLevelChangesRunningLogger(t *testing.T) {
	var buf bytes.Buffer
	lvl := zap.NewAtomicLevel()
	log, err := New(Config{Level: "warn", Format: "json", Writer: &buf, Atomic: lvl})
	if err != nil {
		t.Fatal(err)
	}
	log.Info("dropped")
	lvl.SetLevel(zapcore.DebugLevel)
	log.Debug("kept")
	if got := levels(t, buf.String()); strings.Join(got, ",") != "debug" {
		t.Errorf("got levels %v, want [debug]", got)
	}
}

func TestBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want error
	}{
		{name: "level", cfg: Config{Level: "verbose"}, want: ErrBadLevel},
		{name: "format", cfg: Config{Format: "xml"}, want: ErrBadFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestPriority(t *testing.T) {
	tests := []struct {
		level zapcore.Level
		want  int
	}{
		{zapcore.DebugLevel, 7}, {zapcore.InfoLevel, 6}, {zapcore.WarnLevel, 4}, {zapcore.ErrorLevel, 3},
		{zapcore.DPanicLevel, 2}, {zapcore.PanicLevel, 2}, {zapcore.FatalLevel, 2},
	}
	for _, tt := range tests {
		t.Run(tt.level.String(), func(t *testing.T) {
			if got := Priority(tt.level); got != tt.want {
				t.Errorf("Priority(%v) = %d, want %d", tt.level, got, tt.want)
			}
		})
	}
}

func TestTerminalDetection(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	file, _ := journalFile(t)
	if !isTerminal(tty) {
		t.Error("a pty is not taken for a terminal")
	}
	if isTerminal(file) {
		t.Error("a regular file is taken for a terminal")
	}
}
