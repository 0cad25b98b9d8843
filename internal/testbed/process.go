package testbed

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"

	"github.com/provisiond/provisiond/internal/testexec"
)

// LogEntry is one line the daemon wrote to stderr. With log.format json (the bench's
// setting) a log entry has Level, Msg and Fields; any other line (the "provisiond: EVENT:
// reason" line of a failed --once) has only Raw.
type LogEntry struct {
	Level  string
	Msg    string
	Fields map[string]any // every JSON member except level, ts, msg, caller
	Raw    string
}

// JSON reports whether the line was a JSON log entry.
func (e LogEntry) JSON() bool { return e.Fields != nil }

// Str returns a field as a string ("" when absent; numbers in their JSON form).
func (e LogEntry) Str(key string) string {
	switch v := e.Fields[key].(type) {
	case nil:
		return ""
	case string:
		return v
	case json.Number:
		return v.String()
	default:
		return fmt.Sprint(v)
	}
}

// Event returns the provisioning event of a "provisioning event" entry, else "".
func (e LogEntry) Event() string {
	if e.Msg != "provisioning event" {
		return ""
	}
	return e.Str("event")
}

// MsgID returns the entry's msg_id: what it reports, in a form that does not change when the
// message is reworded. "" when the entry has none.
func (e LogEntry) MsgID() string { return e.Str("msg_id") }

// ParseLogLine parses one stderr line of the daemon.
func ParseLogLine(line string) LogEntry {
	e := LogEntry{Raw: line}
	if !strings.HasPrefix(line, "{") {
		return e
	}
	dec := json.NewDecoder(strings.NewReader(line))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return e
	}
	e.Level, _ = m["level"].(string)
	e.Msg, _ = m["msg"].(string)
	for _, k := range []string{"level", "ts", "msg", "caller", "stacktrace"} {
		delete(m, k)
	}
	e.Fields = m
	return e
}

// Process is one provisiond process started by Bed.Start. Its methods are safe for
// concurrent use.
type Process struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer // written by exec's copier until Wait returns; read after done
	onLog  func(LogEntry)

	mu      sync.Mutex
	entries []LogEntry
	changed chan struct{} // closed and replaced on every new entry

	done     chan struct{}
	waitErr  error
	exitCode int
}

// Command returns an exec.Cmd for `bin args... --config <ConfigPath>` with an environment
// cleaned of anything that would change the daemon's config or logging behind the bench's
// back (PROVISIOND_*, JOURNAL_STREAM, NOTIFY_SOCKET, WATCHDOG_*). A binary built for another
// CPU is started through the emulator that internal/testexec names (make test-arch).
func (b *Bed) Command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := testexec.Command(ctx, bin, append(append([]string(nil), args...), "--config", b.ConfigPath())...)
	cmd.Env = cleanEnv(os.Environ())
	return cmd
}

func cleanEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "PROVISIOND_"), name == "JOURNAL_STREAM", name == "NOTIFY_SOCKET",
			strings.HasPrefix(name, "WATCHDOG_"), strings.HasPrefix(name, "LISTEN_"):
			continue
		}
		out = append(out, kv)
	}
	return out
}

// Start starts `bin args... --config <ConfigPath>` (typically "run" or "run", "--once") and
// reads its stderr line by line; onLog, if not nil, is called for each line from one
// goroutine, in order. ctx kills the process when done.
func (b *Bed) Start(ctx context.Context, bin string, onLog func(LogEntry), args ...string) (*Process, error) {
	p := &Process{cmd: b.Command(ctx, bin, args...), onLog: onLog, changed: make(chan struct{}), done: make(chan struct{})}
	p.cmd.Stdout = &p.stdout
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("testbed: start %s: %w", bin, err)
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("testbed: start %s: %w", bin, err)
	}
	go func() {
		p.readLog(stderr)
		// Wait only after stderr is drained: it closes the pipe.
		err := p.cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.exitCode = p.cmd.ProcessState.ExitCode()
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

func (p *Process) readLog(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		e := ParseLogLine(sc.Text())
		p.mu.Lock()
		p.entries = append(p.entries, e)
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
		if p.onLog != nil {
			p.onLog(e)
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited and its stderr was read to the end.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits for the process (or ctx) and returns its exit code: -1 when a signal killed it.
func (p *Process) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.done:
	case <-ctx.Done():
		return 0, fmt.Errorf("testbed: wait for provisiond (pid %d): %w", p.Pid(), ctx.Err())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var ee *exec.ExitError
	if p.waitErr != nil && !errors.As(p.waitErr, &ee) {
		return p.exitCode, p.waitErr
	}
	return p.exitCode, nil
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill sends SIGKILL.
func (p *Process) Kill() error { return p.cmd.Process.Signal(syscall.SIGKILL) }

// Stdout returns what the process wrote to stdout; complete once Done is closed.
func (p *Process) Stdout() string {
	<-p.done
	return p.stdout.String()
}

// Entries returns the stderr lines read so far.
func (p *Process) Entries() []LogEntry {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]LogEntry(nil), p.entries...)
}

// Stderr returns the stderr lines read so far, joined.
func (p *Process) Stderr() string {
	var b strings.Builder
	for _, e := range p.Entries() {
		b.WriteString(e.Raw)
		b.WriteByte('\n')
	}
	return b.String()
}

// ErrExited is returned by WaitLog when the process ended without the awaited line.
var ErrExited = errors.New("testbed: provisiond exited")

// WaitLog waits until a stderr line from index from on satisfies match and returns it with
// the index of the line after it, where a following wait starts. It fails when ctx ends or
// the process exits first.
func (p *Process) WaitLog(ctx context.Context, from int, match func(LogEntry) bool) (LogEntry, int, error) {
	from = max(from, 0)
	for {
		p.mu.Lock()
		for i := from; i < len(p.entries); i++ {
			if match(p.entries[i]) {
				e := p.entries[i]
				p.mu.Unlock()
				return e, i + 1, nil
			}
		}
		from = max(from, len(p.entries))
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-p.done:
			// The reader has finished: one last look at what it read.
			p.mu.Lock()
			n := len(p.entries)
			p.mu.Unlock()
			if from >= n {
				return LogEntry{}, from, ErrExited
			}
		case <-ctx.Done():
			return LogEntry{}, from, fmt.Errorf("testbed: wait for a log line: %w", ctx.Err())
		}
	}
}

// WaitEvent waits for the provisioning event ev from index from on (see WaitLog).
func (p *Process) WaitEvent(ctx context.Context, from int, ev string) (LogEntry, int, error) {
	return p.WaitLog(ctx, from, func(e LogEntry) bool { return e.Event() == ev })
}

// Settings runs `bin settings --json` and returns the store's keys and values.
func (b *Bed) Settings(ctx context.Context, bin string) (map[string]string, error) {
	out, err := b.Output(ctx, bin, "settings", "--json")
	if err != nil {
		return nil, err
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		return nil, fmt.Errorf("testbed: settings --json: %w (output %q)", err, out)
	}
	return m, nil
}

// Output runs `bin args... --config <ConfigPath>` and returns its stdout; a non-zero exit is
// an error carrying stderr.
func (b *Bed) Output(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := b.Command(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("testbed: provisiond %s: %w: %s", strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}
