package atmodem

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// item is one thing the fake modem sends: bytes, or a read error, after an optional pause.
type item struct {
	data  string
	err   error
	delay time.Duration
}

// say is the modem's answer as one chunk.
func say(s string) []item { return []item{{data: s}} }

// fakePort is a scripted modem: a write that completes a key of script is answered with
// its items. Knobs: echo the command, split answers into 1-byte reads, accept at most
// maxWrite bytes per Write, fail writes. Unknown complete commands are answered "ERROR".
type fakePort struct {
	mu       sync.Mutex
	script   map[string][]item
	handler  func(cmd string) []item // if set, used before script
	term     string                  // command terminator the fake expects, default "\r\n"
	echo     bool
	oneByte  bool
	maxWrite int
	writeErr error
	acc      []byte
	written  []string
	unknown  []string
	onWrite  func(cmd string) // if set, told of every complete command written
	// A new client probes before its first command unless that is a constant read (package
	// doc, "Late answers"). Unless scriptOpen is set, the fake answers that probe itself as
	// an idle modem would, without recording it in written, and counts it in opened.
	scriptOpen bool
	opened     int

	out       chan item
	closed    chan struct{}
	closeOnce sync.Once
	pending   []byte // only touched by the single reader
}

func newFake(script map[string][]item) *fakePort {
	return &fakePort{
		script: script,
		term:   "\r\n",
		out:    make(chan item, 4096),
		closed: make(chan struct{}),
	}
}

func (f *fakePort) Read(p []byte) (int, error) {
	for len(f.pending) == 0 {
		select {
		case it := <-f.out:
			if it.delay > 0 {
				time.Sleep(it.delay)
			}
			if it.err != nil {
				return 0, it.err
			}
			f.pending = []byte(it.data)
		case <-f.closed:
			return 0, os.ErrClosed
		}
	}
	n := copy(p, f.pending)
	f.pending = f.pending[n:]
	return n, nil
}

func (f *fakePort) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.closed:
		return 0, os.ErrClosed
	default:
	}
	if f.writeErr != nil {
		return 0, f.writeErr
	}
	n := len(p)
	if f.maxWrite > 0 && n > f.maxWrite {
		n = f.maxWrite
	}
	f.acc = append(f.acc, p[:n]...)
	cmd := string(f.acc)
	if !f.scriptOpen && f.opened == 0 && len(f.written) == 0 && cmd == probes[0].cmd+f.term {
		f.acc = nil
		f.opened++
		if f.echo {
			f.send(item{data: cmd})
		}
		f.send(item{data: "+CMEE: 0\r\nOK\r\n"})
		return n, nil
	}
	var reply []item
	var ok bool
	if f.handler != nil {
		reply = f.handler(cmd)
		ok = reply != nil
	}
	if !ok {
		reply, ok = f.script[cmd]
	}
	if !ok && strings.HasSuffix(cmd, f.term) && strings.Count(cmd, `"`)%2 == 0 {
		f.unknown = append(f.unknown, cmd)
		reply, ok = say("ERROR\r\n"), true
	}
	if ok {
		f.acc = nil
		f.written = append(f.written, cmd)
		if f.onWrite != nil {
			f.onWrite(cmd)
		}
		if f.echo {
			f.send(item{data: cmd})
		}
		for _, it := range reply {
			f.send(it)
		}
	}
	return n, nil
}

// send queues it, split into single bytes with the oneByte knob.
func (f *fakePort) send(it item) {
	if !f.oneByte || len(it.data) <= 1 {
		f.out <- it
		return
	}
	for i := 0; i < len(it.data); i++ {
		b := item{data: it.data[i : i+1]}
		if i == 0 {
			b.delay = it.delay
		}
		f.out <- b
	}
}

// inject sends unsolicited bytes (or an error) as if the modem sent them on its own.
func (f *fakePort) inject(items ...item) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, it := range items {
		f.send(it)
	}
}

func (f *fakePort) Close() error {
	f.closeOnce.Do(func() { close(f.closed) })
	return nil
}

func (f *fakePort) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.written...)
}

// waitFor polls cond until it holds; a test that never gets there fails by its own -timeout.
// deadlineCtx is a context whose deadline passes when pass is called.
type deadlineCtx struct {
	context.Context
	done chan struct{}
	once sync.Once
}

func (c *deadlineCtx) Done() <-chan struct{} { return c.done }

func (c *deadlineCtx) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

func (c *deadlineCtx) pass() { c.once.Do(func() { close(c.done) }) }

// expireOn returns a context whose deadline passes as soon as f sees cmd written, so that the
// command the context is for certainly times out after the client took it. A short real
// deadline does not promise that: on a loaded machine it can pass before the client's
// goroutine takes the command, which is then refused unsent with the bare context error.
func expireOn(f *fakePort, cmd string) context.Context {
	ctx := &deadlineCtx{Context: context.Background(), done: make(chan struct{})}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onWrite = func(c string) {
		if c == cmd {
			ctx.pass()
		}
	}
	return ctx
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for start := time.Now(); !cond(); time.Sleep(time.Millisecond) {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("waited 30s for %s", what)
		}
	}
}
