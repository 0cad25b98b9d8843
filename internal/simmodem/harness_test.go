package simmodem

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// harness drives a Modem over an in-memory pipe and splits what it writes into lines.
type harness struct {
	t     *testing.T
	m     *Modem
	conn  net.Conn
	lines chan string
	errc  chan error
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return serveHarness(t, m)
}

func serveHarness(t *testing.T, m *Modem) *harness {
	t.Helper()
	client, server := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, m: m, conn: client, lines: make(chan string, 1024), errc: make(chan error, 1)}
	go func() { h.errc <- m.Serve(ctx, server) }()
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer close(h.lines)
		r := bufio.NewReader(client)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			h.lines <- strings.TrimSuffix(l, "\r\n")
		}
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-h.errc; err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, ErrUnplugged) {
			t.Errorf("Serve() = %v", err)
		}
		_ = client.Close()
		_ = server.Close()
		<-readDone
	})
	return h
}

func (h *harness) send(raw string) {
	h.t.Helper()
	if _, err := io.WriteString(h.conn, raw); err != nil {
		h.t.Fatalf("write %q: %v", raw, err)
	}
}

// next returns the next line, failing the test if none arrives in 10 s (a hang guard,
// not a timing assertion).
func (h *harness) next() string {
	h.t.Helper()
	select {
	case l, ok := <-h.lines:
		if !ok {
			h.t.Fatal("stream closed")
		}
		return l
	case <-time.After(10 * time.Second):
		h.t.Fatal("no line from the modem")
	}
	return ""
}

func isFinal(l string) bool {
	return l == "OK" || l == "ERROR" || strings.HasPrefix(l, "+CME ERROR: ") || strings.HasPrefix(l, "+CMS ERROR: ")
}

// cmd sends cmd with CR LF and returns the lines before the final one, and the final line.
// Lines that are URCs (by prefix) are skipped when skipURC is set.
func (h *harness) cmd(cmd string) ([]string, string) {
	h.t.Helper()
	h.send(cmd + "\r\n")
	var lines []string
	for {
		l := h.next()
		if isFinal(l) {
			return lines, l
		}
		lines = append(lines, l)
	}
}

// mustOK runs cmd and fails unless it answers OK.
func (h *harness) mustOK(cmd string) []string {
	h.t.Helper()
	lines, final := h.cmd(cmd)
	if final != "OK" {
		h.t.Fatalf("%s: final %q, lines %q", cmd, final, lines)
	}
	return lines
}

// waitLine waits for a line satisfying ok, returning it (URCs arrive asynchronously).
func (h *harness) waitLine(ok func(string) bool) string {
	h.t.Helper()
	for {
		if l := h.next(); ok(l) {
			return l
		}
	}
}

func isPrintableASCII(s string) bool {
	return bytes.IndexFunc([]byte(s), func(r rune) bool { return r < 0x20 || r > 0x7e }) < 0
}
