// Package control is the daemon's local control interface: HTTP with JSON bodies over a Unix
// socket (mode 0660, so access is granted by group membership), and the client the CLI's
// `now`, `status`, `token`, `uuid` and `interval` subcommands use.
//
// Routes (all under /v1; errors are {"error": "..."} with a 4xx/5xx status):
//
//	GET  /v1/status    the daemon's status snapshot
//	POST /v1/now       request a provisioning attempt now (202)
//	GET  /v1/token     {"token": "<attestation token>"}
//	GET  /v1/uuid      {"uuid": "<device uuid>"}
//	GET  /v1/imei      {"imei": "<15 digits>"} (404 when the backend cannot tell)
//	GET  /v1/interval  {"seconds": N}
//	PUT  /v1/interval  body {"seconds": N}; persisted by the daemon (0: back to the configured
//	                   interval); answers {"seconds": N}
package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Backend is what the server needs from the daemon.
type Backend interface {
	// Status returns a JSON-marshalable snapshot.
	Status() any
	// TriggerNow requests an attempt now; requests coalesce.
	TriggerNow()
	// Interval returns the interval between scheduled attempts, in seconds.
	Interval() int
	// SetInterval changes and persists the interval (0: back to the configured one); errors
	// wrapping ErrInvalid mean bad input.
	SetInterval(ctx context.Context, seconds int) error
	// AttestationToken asks the modem for its attestation token.
	AttestationToken(ctx context.Context) (string, error)
	// DeviceUUID returns the modem's device UUID.
	DeviceUUID(ctx context.Context) (string, error)
}

// IMEIBackend is the optional capability of a Backend to read the modem's IMEI, which a
// station's token list (`provisiond tokens`) pairs with each attestation token.
type IMEIBackend interface {
	IMEI(ctx context.Context) (string, error)
}

// Body shapes of the routes, shared by server and client.
type (
	tokenBody struct {
		Token string `json:"token"`
	}
	uuidBody struct {
		UUID string `json:"uuid"`
	}
	imeiBody struct {
		IMEI string `json:"imei"`
	}
	intervalBody struct {
		Seconds *int `json:"seconds"`
	}
	nowBody struct {
		Triggered bool `json:"triggered"`
	}
	errorBody struct {
		Error string `json:"error"`
	}
)

const (
	socketMode = 0o660
	// dirMode applies only when Serve creates the socket's folder itself (systemd's
	// RuntimeDirectory usually does): group members must be able to reach the socket.
	dirMode = 0o750
	// shutdownGrace bounds how long Serve waits for requests in flight after ctx ends.
	shutdownGrace = 5 * time.Second
	maxBody       = 4 << 10
)

// Server serves a Backend on a Unix socket.
type Server struct {
	b   Backend
	log *zap.Logger
	mux *http.ServeMux
}

// NewServer returns a server for b. logger may be nil.
func NewServer(b Backend, logger *zap.Logger) *Server {
	if logger == nil {
		logger = zap.NewNop()
	}
	s := &Server{b: b, log: logger, mux: http.NewServeMux()}
	routes := []struct {
		method, path string
		h            http.HandlerFunc
	}{
		{http.MethodGet, "/v1/status", s.status},
		{http.MethodPost, "/v1/now", s.now},
		{http.MethodGet, "/v1/token", s.token},
		{http.MethodGet, "/v1/uuid", s.uuid},
		{http.MethodGet, "/v1/imei", s.imei},
		{http.MethodGet, "/v1/interval", s.interval},
		{http.MethodPut, "/v1/interval", s.setInterval},
	}
	allowed := map[string][]string{}
	for _, r := range routes {
		s.mux.HandleFunc(r.method+" "+r.path, r.h)
		allowed[r.path] = append(allowed[r.path], r.method)
	}
	// Everything else gets a JSON error too: 405 for a known path, 404 otherwise.
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if methods, ok := allowed[r.URL.Path]; ok {
			w.Header().Set("Allow", strings.Join(methods, ", "))
			writeError(w, http.StatusMethodNotAllowed, r.Method+" not allowed on "+r.URL.Path)
			return
		}
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	})
	return s
}

// ServeHTTP lets the handler be tested or mounted without a socket.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Serve listens on socketPath until ctx is done, then stops accepting, lets requests in flight
// finish (their contexts are cancelled with ctx) and removes the socket. It creates the
// socket's folder if missing and replaces a stale socket left by a crash, but refuses a path
// a running daemon still answers on or that is not a socket. It returns nil after ctx ends.
func (s *Server) Serve(ctx context.Context, socketPath string) error {
	ln, err := Listen(socketPath)
	if err != nil {
		return err
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener is Serve on a listener from Listen, for callers that create the socket first
// so that a path in use fails start-up before anything else happens. It closes ln.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          zap.NewStdLog(s.log.Named("control")),
	}
	// stop ends the shutdown goroutine also when srv.Serve fails on its own.
	stopCtx, stop := context.WithCancel(ctx)
	defer stop()
	stopped := make(chan error, 1)
	go func() {
		<-stopCtx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
		defer cancel()
		stopped <- srv.Shutdown(sctx)
	}()
	err := srv.Serve(ln)
	stop()
	shutdownErr := <-stopped
	if !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("control: serve %s: %w", ln.Addr(), err)
	}
	if shutdownErr != nil {
		return fmt.Errorf("control: shutdown: %w", shutdownErr)
	}
	return nil
}

// Listen creates the control socket at path with mode 0660; Serve uses it. Closing the listener
// removes the socket file.
func Listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
		return nil, fmt.Errorf("control: create socket folder: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control: listen %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, socketMode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control: chmod %s: %w", path, err)
	}
	return ln, nil
}

// removeStale deletes a socket nobody listens on any more (the daemon crashed or was killed).
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("control: %s: %w", path, ErrNotSocket)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("control: %s: %w", path, ErrInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control: probe %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("control: remove stale socket: %w", err)
	}
	return nil
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.b.Status())
}

func (s *Server) now(w http.ResponseWriter, _ *http.Request) {
	s.b.TriggerNow()
	s.log.Info("provisioning requested over the control socket")
	writeJSON(w, http.StatusAccepted, nowBody{Triggered: true})
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	tok, err := s.b.AttestationToken(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, tokenBody{Token: tok})
}

func (s *Server) uuid(w http.ResponseWriter, r *http.Request) {
	id, err := s.b.DeviceUUID(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, uuidBody{UUID: id})
}

func (s *Server) imei(w http.ResponseWriter, r *http.Request) {
	b, ok := s.b.(IMEIBackend)
	if !ok {
		writeError(w, http.StatusNotFound, "this daemon cannot read the IMEI")
		return
	}
	v, err := b.IMEI(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, imeiBody{IMEI: v})
}

func (s *Server) interval(w http.ResponseWriter, _ *http.Request) {
	n := s.b.Interval()
	writeJSON(w, http.StatusOK, intervalBody{Seconds: &n})
}

func (s *Server) setInterval(w http.ResponseWriter, r *http.Request) {
	var body intervalBody
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "body must be {\"seconds\": N}: "+err.Error())
		return
	}
	if body.Seconds == nil {
		writeError(w, http.StatusBadRequest, "body must be {\"seconds\": N}")
		return
	}
	if *body.Seconds < 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("interval must be a number of seconds >= 0, got %d", *body.Seconds))
		return
	}
	if err := s.b.SetInterval(r.Context(), *body.Seconds); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("interval changed over the control socket", zap.Int("interval_sec", *body.Seconds))
	writeJSON(w, http.StatusOK, body)
}

// fail answers a backend error: bad input is the caller's problem (400); a cancelled request
// means the daemon is stopping (503); anything else, e.g. a modem that does not answer, is
// reported as 502 since the daemon itself works but what it asked did not.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusBadGateway
	switch {
	case errors.Is(err, ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, context.Canceled):
		code = http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	}
	s.log.Warn("control request failed", zap.String("route", r.Method+" "+r.URL.Path), zap.Error(err))
	writeError(w, code, err.Error())
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	// Encode first so that a failure can still become a clean 500. No HTML escaping: the
	// answers are read by the CLI and by people with curl, not by browsers.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: "encode response: " + err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}
