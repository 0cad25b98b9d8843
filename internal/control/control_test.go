package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/provisiond/provisiond/internal/status"
)

// fakeBackend records what the server asked of it.
type fakeBackend struct {
	mu       sync.Mutex
	nows     int
	interval int
	token    string
	uuid     string
	err      error         // returned by token, uuid and set-interval
	block    chan struct{} // when set, AttestationToken waits for ctx and reports it
}

func (f *fakeBackend) Status() status.Daemon {
	f.mu.Lock()
	defer f.mu.Unlock()
	return status.Daemon{State: "idle", IntervalSeconds: int64(f.interval), Attempts: f.nows}
}

func (f *fakeBackend) TriggerNow() {
	f.mu.Lock()
	f.nows++
	f.mu.Unlock()
}

func (f *fakeBackend) Interval() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.interval
}

func (f *fakeBackend) SetInterval(_ context.Context, n int) error {
	if f.err != nil {
		return f.err
	}
	f.mu.Lock()
	f.interval = n
	f.mu.Unlock()
	return nil
}

func (f *fakeBackend) AttestationToken(ctx context.Context) (string, error) {
	if f.block != nil {
		close(f.block)
		<-ctx.Done()
		return "", ctx.Err()
	}
	return f.token, f.err
}

func (f *fakeBackend) DeviceUUID(context.Context) (string, error) { return f.uuid, f.err }

// serve runs a server for b on a socket in a fresh folder and returns the socket path; the
// server stops, and Serve's result is checked, when the test ends.
func serve(t *testing.T, b Backend) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "provisiond.sock")
	startServer(t, b, path)
	return path
}

func startServer(t *testing.T, b Backend, path string) (stop func()) {
	t.Helper()
	stop, _ = startServerLimits(t, b, path, Limits{})
	return stop
}

// startServerLimits is startServer with limits; it also returns the server, for its counters.
func startServerLimits(t *testing.T, b Backend, path string, lim Limits) (stop func(), s *Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := Listen(path) // the socket accepts from here on, before ServeListener runs
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	s = NewServer(b, zaptest.NewLogger(t), lim)
	go func() { done <- s.ServeListener(ctx, ln) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("ServeListener returned %v after cancel, want nil", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop, s
}

func TestVerbs(t *testing.T) {
	b := &fakeBackend{interval: 86400, token: "2dn3hQFQ.0oRDoQEm", uuid: "50363154-3931-44f0-8022-121b6401627d"}
	c := Dial(serve(t, b))
	ctx := context.Background()

	if err := c.Now(ctx); err != nil {
		t.Fatalf("Now: %v", err)
	}
	if err := c.Now(ctx); err != nil {
		t.Fatalf("Now: %v", err)
	}
	if b.nows != 2 {
		t.Errorf("backend saw %d now requests, want 2", b.nows)
	}
	if got, err := c.Token(ctx); err != nil || got != b.token {
		t.Errorf("Token = %q, %v; want %q", got, err, b.token)
	}
	if got, err := c.UUID(ctx); err != nil || got != b.uuid {
		t.Errorf("UUID = %q, %v; want %q", got, err, b.uuid)
	}
	if got, err := c.Interval(ctx); err != nil || got != 86400 {
		t.Errorf("Interval = %d, %v; want 86400", got, err)
	}
	if err := c.SetInterval(ctx, 3600); err != nil {
		t.Fatalf("SetInterval: %v", err)
	}
	if got, err := c.Interval(ctx); err != nil || got != 3600 {
		t.Errorf("Interval after set = %d, %v; want 3600", got, err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.State != "idle" || st.IntervalSeconds != 3600 {
		t.Errorf("Status = %+v (%v), want state idle and interval 3600", st, err)
	}
	// The raw answer keeps the names scripts read.
	raw, err := c.StatusJSON(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names map[string]any
	if err := json.Unmarshal(raw, &names); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"state", "interval_seconds", "cursor", "outbox_pending", "attempts", "events"} {
		if _, ok := names[k]; !ok {
			t.Errorf("status JSON %s has no %q", raw, k)
		}
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name       string
		backendErr error
		call       func(c *Client) error
		wantStatus int
		wantMsg    string
	}{
		{
			name:       "modem does not answer",
			backendErr: errors.New("atmodem: AT%ATTESTTOKEN: timed out"),
			call:       func(c *Client) error { _, err := c.Token(context.Background()); return err },
			wantStatus: http.StatusBadGateway,
			wantMsg:    "atmodem: AT%ATTESTTOKEN: timed out",
		},
		{
			name:       "backend refuses the interval",
			backendErr: fmt.Errorf("daemon: interval 5s below the minimum: %w", ErrInvalid),
			call:       func(c *Client) error { return c.SetInterval(context.Background(), 5) },
			wantStatus: http.StatusBadRequest,
			wantMsg:    "below the minimum",
		},
		{
			name:       "negative interval refused before the backend",
			call:       func(c *Client) error { return c.SetInterval(context.Background(), -5) },
			wantStatus: http.StatusBadRequest,
			wantMsg:    "number of seconds >= 0, got -5",
		},
		{
			name:       "uuid times out",
			backendErr: fmt.Errorf("daemon: uuid: %w", context.DeadlineExceeded),
			call:       func(c *Client) error { _, err := c.UUID(context.Background()); return err },
			wantStatus: http.StatusGatewayTimeout,
			wantMsg:    "deadline exceeded",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Dial(serve(t, &fakeBackend{err: tt.backendErr}))
			err := tt.call(c)
			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("got %v, want *APIError", err)
			}
			if apiErr.Status != tt.wantStatus || !strings.Contains(apiErr.Message, tt.wantMsg) {
				t.Errorf("got status %d message %q, want %d containing %q", apiErr.Status, apiErr.Message, tt.wantStatus, tt.wantMsg)
			}
		})
	}
}

func TestRawRequests(t *testing.T) {
	path := serve(t, &fakeBackend{interval: 60})
	hc := Dial(path).hc
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		wantStatus int
		wantBody   string
	}{
		{name: "unknown path", method: "GET", path: "/v1/reboot", wantStatus: 404, wantBody: `{"error":"no such endpoint: /v1/reboot"}`},
		{name: "wrong method", method: "DELETE", path: "/v1/interval", wantStatus: 405, wantBody: `{"error":"DELETE not allowed on /v1/interval"}`},
		{name: "now needs POST", method: "GET", path: "/v1/now", wantStatus: 405, wantBody: `{"error":"GET not allowed on /v1/now"}`},
		{name: "interval as text", method: "PUT", path: "/v1/interval", body: `{"seconds":"60"}`, wantStatus: 400, wantBody: `{"error":"body must be`},
		{name: "interval without seconds", method: "PUT", path: "/v1/interval", body: `{}`, wantStatus: 400, wantBody: `{"error":"body must be`},
		{name: "unknown field", method: "PUT", path: "/v1/interval", body: `{"seconds":60,"spread":1}`, wantStatus: 400, wantBody: `{"error":"body must be`},
		{name: "negative", method: "PUT", path: "/v1/interval", body: `{"seconds":-1}`, wantStatus: 400, wantBody: `{"error":"interval must be a number of seconds >= 0, got -1"}`},
		{name: "interval", method: "GET", path: "/v1/interval", wantStatus: 200, wantBody: `{"seconds":60}`},
		{name: "now", method: "POST", path: "/v1/now", wantStatus: 202, wantBody: `{"triggered":true}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, "http://provisiond"+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantStatus || !strings.HasPrefix(string(body), tt.wantBody) {
				t.Errorf("got %d %q, want %d %q…", resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
		})
	}
}

func TestNotRunning(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // leaves the socket file behind, as a killed daemon does

	for _, path := range []string{filepath.Join(dir, "missing.sock"), stale} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			_, err := Dial(path).UUID(context.Background())
			if !errors.Is(err, ErrNotRunning) {
				t.Fatalf("got %v, want ErrNotRunning", err)
			}
			want := "cannot reach provisiond at " + path + ": is it running?"
			if err.Error() != want {
				t.Errorf("got %q, want %q", err, want)
			}
		})
	}
}

func TestSocketLifecycle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "provisiond", "ctl.sock")
	stop := startServer(t, &fakeBackend{}, path)

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want socket 0660", fi.Mode())
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != 0o750 {
		t.Errorf("created folder: %v %v, want 0750", di.Mode(), err)
	}

	// A second daemon on the same path must not steal the socket of the running one.
	err = NewServer(&fakeBackend{}, nil, Limits{}).Serve(context.Background(), path)
	if !errors.Is(err, ErrInUse) {
		t.Errorf("second Serve: got %v, want ErrInUse", err)
	}
	if _, err := Dial(path).Interval(context.Background()); err != nil {
		t.Errorf("first server no longer answers: %v", err)
	}

	stop()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after shutdown: %v", err)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	startServer(t, &fakeBackend{interval: 7}, path)
	if got, err := Dial(path).Interval(context.Background()); err != nil || got != 7 {
		t.Errorf("Interval = %d, %v; want 7 from the new server", got, err)
	}
}

func TestRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "provisiond.sock")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := NewServer(&fakeBackend{}, nil, Limits{}).Serve(context.Background(), path)
	if !errors.Is(err, ErrNotSocket) {
		t.Errorf("got %v, want ErrNotSocket", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
		t.Errorf("the file was touched: %q %v", b, err)
	}
}

// A request blocked on the modem must not hold the daemon's shutdown: its context is
// cancelled with Serve's.
func TestShutdownCancelsRequestsInFlight(t *testing.T) {
	b := &fakeBackend{block: make(chan struct{})}
	path := filepath.Join(t.TempDir(), "ctl.sock")
	stop := startServer(t, b, path)
	errc := make(chan error, 1)
	go func() { _, err := Dial(path).Token(context.Background()); errc <- err }()
	<-b.block
	stop()
	err := <-errc
	var apiErr *APIError
	if err == nil || (errors.As(err, &apiErr) && apiErr.Status != http.StatusServiceUnavailable) {
		t.Errorf("got %v, want 503 or a dropped connection", err)
	}
}
