package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// waitFor polls cond until it holds; the test's own deadline bounds it.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if t.Context().Err() != nil {
			t.Fatalf("gave up waiting for %s", what)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

// Connections that send nothing must not take the daemon's descriptors: beyond the cap they
// are refused and closed at once, and the daemon answers again when the holders go.
func TestHeldConnectionsDoNotExhaustDescriptors(t *testing.T) {
	const held, maxConns = 250, 8
	path := filepath.Join(t.TempDir(), "ctl.sock")
	// Timeouts far beyond the test: only the cap can protect the descriptors here.
	_, s := startServerLimits(t, &fakeBackend{}, path, Limits{MaxConns: maxConns, ReadTimeout: time.Hour, IdleTimeout: time.Hour})
	before := openFDs(t)
	var conns []net.Conn
	for range held {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	waitFor(t, "every connection handled", func() bool {
		return s.stats.accepted.Load()+s.stats.refused.Load() >= held
	})
	// What the server holds is what this process holds beyond the client ends.
	serverSide := openFDs(t) - before - held
	if limit := maxConns + maxRefusing + 2; serverSide > limit {
		t.Errorf("the server holds %d descriptors for %d held connections, want at most %d", serverSide, held, limit)
	}
	if got := s.stats.accepted.Load(); got != maxConns {
		t.Errorf("accepted %d connections, want the cap %d", got, maxConns)
	}

	// The held connections over the cap got their answer slots first; once those have
	// given up on them, a newcomer gets a clear answer.
	waitFor(t, "the refusals to end", func() bool { return s.stats.refusing.Load() == 0 })
	_, err := Dial(path).Status(context.Background())
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusServiceUnavailable || !strings.Contains(apiErr.Message, "too many") {
		t.Errorf("status while the cap is held: %v, want 503 too many connections", err)
	}

	for _, c := range conns {
		c.Close()
	}
	waitFor(t, "the daemon to answer again", func() bool {
		_, err := Dial(path).Status(context.Background())
		return err == nil
	})
}

// An unfinished request body must not hold a clean shutdown: Serve returns nil without
// waiting for the grace.
func TestHeldBodyDoesNotHoldShutdown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(&fakeBackend{}, zaptest.NewLogger(t), Limits{ReadTimeout: time.Hour, ShutdownGrace: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeListener(ctx, ln) }()

	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "PUT /v1/interval HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"sec"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the request to reach the handler", func() bool { return s.stats.requests.Load() == 1 })
	cancel()
	// With a grace of an hour, only ending the read lets Serve return before the test's deadline.
	if err := <-done; err != nil {
		t.Errorf("ServeListener after cancel with a held body: %v, want nil", err)
	}
}

func TestBodyBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	b := &fakeBackend{interval: 7}
	startServerLimits(t, b, path, Limits{MaxBody: 64})
	body := `{"seconds": 5` + strings.Repeat(" ", 100) + `}`
	resp := rawRequest(t, path, http.MethodPut, "/v1/interval", body)
	if resp.code != http.StatusRequestEntityTooLarge {
		t.Errorf("PUT with a %d-byte body: %d %s, want 413", len(body), resp.code, resp.body)
	}
	if n := b.Interval(); n != 7 {
		t.Errorf("interval changed to %d by a refused body", n)
	}
}

type rawAnswer struct {
	code int
	body string
}

func rawRequest(t *testing.T, path, method, route, body string) rawAnswer {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
	req, err := http.NewRequest(method, "http://provisiond"+route, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return rawAnswer{resp.StatusCode, string(data)}
}

// The folder the daemon creates for its socket lets the group in even under UMask=0077;
// a folder that exists keeps the mode its owner gave it.
func TestSocketFolderModeDespiteUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	root := t.TempDir()
	existing := filepath.Join(root, "existing")
	if err := os.Mkdir(existing, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sock string
		dirs map[string]os.FileMode
	}{
		{filepath.Join(root, "run", "provisiond", "ctl.sock"), map[string]os.FileMode{
			filepath.Join(root, "run"): 0o750, filepath.Join(root, "run", "provisiond"): 0o750}},
		{filepath.Join(existing, "ctl.sock"), map[string]os.FileMode{existing: 0o700}},
	} {
		ln, err := Listen(tc.sock)
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		for dir, want := range tc.dirs {
			fi, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != want {
				t.Errorf("%s: mode %o, want %o", dir, got, want)
			}
		}
	}
}

// shortListener fails its first accepts with the given errors.
type shortListener struct {
	net.Listener
	errs  []error
	calls int
	conn  net.Conn
}

func (l *shortListener) Accept() (net.Conn, error) {
	l.calls++
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	return l.conn, nil
}

// Running out of descriptors is waited out inside Accept, not returned to the HTTP server
// (which would log and retry in a tight loop) and not fatal.
func TestAcceptRidesOutDescriptorShortage(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	emfile := &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	enfile := &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.ENFILE)}
	inner := &shortListener{errs: []error{emfile, emfile, enfile}, conn: a}
	s := NewServer(&fakeBackend{}, zaptest.NewLogger(t), Limits{})
	l := &limitListener{Listener: inner, s: s, sem: make(chan struct{}, 1), refusing: make(chan struct{}, maxRefusing), quit: make(chan struct{})}
	conn, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept: %v, want the connection after the shortage", err)
	}
	defer conn.Close()
	if inner.calls != 4 {
		t.Errorf("accept called %d times, want 4", inner.calls)
	}

	// Any other error ends Serve as before.
	other := fmt.Errorf("boom")
	inner.errs = []error{other}
	if _, err := l.Accept(); !errors.Is(err, other) {
		t.Errorf("Accept: %v, want %v", err, other)
	}
}
