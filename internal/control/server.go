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
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/provisiond/provisiond/internal/status"
)

// Backend is what the server needs from the daemon.
type Backend interface {
	// Status returns the daemon's status snapshot.
	Status() status.Daemon
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
	// dirMode applies only when Listen creates the socket's folder itself (systemd's
	// RuntimeDirectory usually does): group members must be able to reach the socket.
	dirMode = 0o750
)

// Limits bound what one client can hold of the daemon. Zero fields take the defaults below.
// The socket is reachable by every member of the daemon's group, so none of them may be able
// to exhaust the daemon's descriptors or delay its shutdown by opening connections and
// sending nothing.
type Limits struct {
	// ReadTimeout bounds reading a request, headers and body (default 10s).
	ReadTimeout time.Duration
	// WriteTimeout bounds writing an answer (default 10s). Routes that ask the modem get
	// ModemWait on top.
	WriteTimeout time.Duration
	// IdleTimeout closes a kept-alive connection with no request (default 30s).
	IdleTimeout time.Duration
	// ModemWait bounds a request that waits for the modem (token, uuid; default 11m: the
	// longest AT command timeout the config allows plus a margin).
	ModemWait time.Duration
	// MaxConns caps the connections served at once (default 32); more are answered 503 and
	// closed at once, so they hold no descriptor.
	MaxConns int
	// MaxBody caps a request body (default 4 KiB); a longer one is answered 413.
	MaxBody int64
	// ShutdownGrace bounds how long requests in flight may finish after ctx ends (default
	// 3s); connections still open then are closed.
	ShutdownGrace time.Duration
	// ProbeEvery is how often the server connects to itself to prove it still accepts when
	// nobody else does (default 10s); see Server.Heartbeat.
	ProbeEvery time.Duration
}

// Default limits.
const (
	DefaultReadTimeout   = 10 * time.Second
	DefaultWriteTimeout  = 10 * time.Second
	DefaultIdleTimeout   = 30 * time.Second
	DefaultModemWait     = 11 * time.Minute
	DefaultMaxConns      = 32
	DefaultMaxBody       = 4 << 10
	DefaultShutdownGrace = 3 * time.Second
	DefaultProbeEvery    = 10 * time.Second
)

func (l Limits) withDefaults() Limits {
	l.ReadTimeout = cmp.Or(l.ReadTimeout, DefaultReadTimeout)
	l.WriteTimeout = cmp.Or(l.WriteTimeout, DefaultWriteTimeout)
	l.IdleTimeout = cmp.Or(l.IdleTimeout, DefaultIdleTimeout)
	l.ModemWait = cmp.Or(l.ModemWait, DefaultModemWait)
	l.MaxConns = cmp.Or(l.MaxConns, DefaultMaxConns)
	l.MaxBody = cmp.Or(l.MaxBody, DefaultMaxBody)
	l.ShutdownGrace = cmp.Or(l.ShutdownGrace, DefaultShutdownGrace)
	l.ProbeEvery = cmp.Or(l.ProbeEvery, DefaultProbeEvery)
	return l
}

// Server serves a Backend on a Unix socket.
type Server struct {
	b   Backend
	log *zap.Logger
	mux *http.ServeMux
	lim Limits

	// Heartbeat, when set before Serve, is called each time the server accepts a connection
	// (including its own periodic probe), so a watchdog can tell a serving control socket from
	// a wedged one.
	Heartbeat func()

	stats serverStats
}

// serverStats counts connections, for tests and the logs.
type serverStats struct {
	accepted, refused, requests atomic.Int64
	refusing                    atomic.Int64 // answers to refused connections in progress
}

// NewServer returns a server for b with limits lim (zero fields: defaults). logger may be nil.
func NewServer(b Backend, logger *zap.Logger, lim Limits) *Server {
	if logger == nil {
		logger = zap.NewNop()
	}
	s := &Server{b: b, log: logger, mux: http.NewServeMux(), lim: lim.withDefaults()}
	routes := []struct {
		method, path string
		h            http.HandlerFunc
	}{
		{http.MethodGet, "/v1/status", s.status},
		{http.MethodPost, "/v1/now", s.now},
		{http.MethodGet, "/v1/token", s.modemRoute(s.token)},
		{http.MethodGet, "/v1/uuid", s.modemRoute(s.uuid)},
		{http.MethodGet, "/v1/imei", s.modemRoute(s.imei)},
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

// ServeHTTP lets the handler be tested or mounted without a socket. Every body is bounded.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.stats.requests.Add(1)
	r.Body = http.MaxBytesReader(w, r.Body, s.lim.MaxBody)
	s.mux.ServeHTTP(w, r)
}

// modemRoute gives a route that waits for the modem the time the modem may take, on top of
// the write timeout, and bounds its wait by the same.
func (s *Server) modemRoute(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// An error means the connection type cannot take deadlines (tests without a
		// socket); the modem's own timeouts still bound the wait.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.lim.ModemWait + s.lim.WriteTimeout))
		ctx, cancel := context.WithTimeout(r.Context(), s.lim.ModemWait)
		defer cancel()
		h(w, r.WithContext(ctx))
	}
}

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
//
// Shutdown is bounded: a request whose body is still being read fails at once, a handler
// waiting for the modem sees its context cancelled, and whatever is still open after
// Limits.ShutdownGrace is closed. Held connections never turn a clean stop into an error.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	conns := newConnSet()
	srv := &http.Server{
		Handler:        s,
		ReadTimeout:    s.lim.ReadTimeout,
		WriteTimeout:   s.lim.WriteTimeout,
		IdleTimeout:    s.lim.IdleTimeout,
		MaxHeaderBytes: 8 << 10,
		BaseContext:    func(net.Listener) context.Context { return ctx },
		ConnState:      conns.track,
		ErrorLog:       zap.NewStdLog(s.log.Named("control")),
	}
	lln := &limitListener{Listener: ln, s: s, sem: make(chan struct{}, s.lim.MaxConns),
		refusing: make(chan struct{}, maxRefusing), quit: make(chan struct{})}
	// stop ends the helper goroutines also when srv.Serve fails on its own.
	stopCtx, stop := context.WithCancel(ctx)
	defer stop()
	go s.probe(stopCtx, ln.Addr())
	stopped := make(chan error, 1)
	go func() {
		<-stopCtx.Done()
		close(lln.quit)
		// A body still being read would hold Shutdown for the whole grace: end the read now.
		// Answers being written are not affected.
		conns.expireReads()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.lim.ShutdownGrace)
		defer cancel()
		err := srv.Shutdown(sctx)
		if errors.Is(err, context.DeadlineExceeded) {
			s.log.Warn("control connections still open after the shutdown grace; closing them",
				zap.Duration("grace", s.lim.ShutdownGrace))
			err = srv.Close()
		}
		stopped <- err
	}()
	err := srv.Serve(lln)
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

// probe connects to the server every ProbeEvery so that Heartbeat also fires while no client
// comes: an accept loop that cannot accept (descriptors exhausted, wedged) stops the beats.
func (s *Server) probe(ctx context.Context, addr net.Addr) {
	if s.Heartbeat == nil {
		return
	}
	t := time.NewTicker(s.lim.ProbeEvery)
	defer t.Stop()
	var d net.Dialer
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		dctx, cancel := context.WithTimeout(ctx, s.lim.ProbeEvery)
		conn, err := d.DialContext(dctx, addr.Network(), addr.String())
		cancel()
		if err == nil {
			conn.Close()
		}
	}
}

// limitListener caps the connections being served and rides out descriptor exhaustion.
type limitListener struct {
	net.Listener
	s        *Server
	sem      chan struct{}
	refusing chan struct{}
	quit     chan struct{}
}

// maxRefusing bounds the connections over the cap being answered at once; beyond it they are
// closed without an answer. refuseWithin bounds each answer.
const (
	maxRefusing  = 4
	refuseWithin = 200 * time.Millisecond
)

// tooManyBody is the answer to a connection over the cap, written before it is closed.
const tooManyBody = `{"error":"too many control connections open; try again shortly"}` + "\n"

// Accept returns the next connection within the cap. Over the cap, a connection is answered
// 503 and closed (or closed at once in a flood), so it holds no descriptor for long. Running out of descriptors
// (EMFILE, ENFILE) is waited out here with a growing pause and logged once per episode:
// never a busy loop, and never an error that would stop the server.
func (l *limitListener) Accept() (net.Conn, error) {
	var pause time.Duration
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			if !isDescriptorShortage(err) {
				return nil, err
			}
			if pause == 0 {
				l.s.log.Warn("control socket: out of file descriptors; pausing accepts", zap.Error(err))
			}
			pause = min(max(2*pause, 10*time.Millisecond), time.Second)
			select {
			case <-time.After(pause):
				continue
			case <-l.quit:
				return nil, net.ErrClosed
			}
		}
		if pause > 0 {
			l.s.log.Info("control socket: accepting again")
			pause = 0
		}
		if l.s.Heartbeat != nil {
			l.s.Heartbeat()
		}
		select {
		case l.sem <- struct{}{}:
			l.s.stats.accepted.Add(1)
			return &limitConn{Conn: conn, release: func() { <-l.sem }}, nil
		default:
		}
		l.s.stats.refused.Add(1)
		select {
		case l.refusing <- struct{}{}:
			l.s.stats.refusing.Add(1)
			go l.refuse(conn)
		default:
			conn.Close() // a flood: not even an answer
		}
	}
}

// refuse answers a connection over the cap with 503 once its request has arrived (an HTTP
// client takes an answer that comes first for a broken connection), in bounded time.
func (l *limitListener) refuse(conn net.Conn) {
	defer func() {
		l.s.stats.refusing.Add(-1)
		<-l.refusing
	}()
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(refuseWithin))
	var buf [1024]byte
	if _, err := conn.Read(buf[:]); err != nil {
		return
	}
	_, _ = fmt.Fprintf(conn, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"+
		"Connection: close\r\nContent-Length: %d\r\n\r\n%s", len(tooManyBody), tooManyBody)
}

func isDescriptorShortage(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// limitConn frees its slot in the cap once, on its first Close.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// connSet is the open connections, so that shutdown can end reads still in progress.
type connSet struct {
	mu sync.Mutex
	m  map[net.Conn]struct{}
}

func newConnSet() *connSet { return &connSet{m: map[net.Conn]struct{}{}} }

func (cs *connSet) track(c net.Conn, st http.ConnState) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	switch st {
	case http.StateNew:
		cs.m[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(cs.m, c)
	}
}

func (cs *connSet) expireReads() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	now := time.Now()
	for c := range cs.m {
		_ = c.SetReadDeadline(now)
	}
}

// Listen creates the control socket at path with mode 0660; Serve uses it. Closing the listener
// removes the socket file. A socket folder Listen creates gets mode 0750 whatever the umask
// (UMask=0077 in the units would leave it 0700 and lock the group out).
func Listen(path string) (*net.UnixListener, error) {
	if err := makeSocketDir(filepath.Dir(path)); err != nil {
		return nil, err
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

// makeSocketDir creates dir and any missing parents with mode 0750, set explicitly since
// MkdirAll's mode is filtered by the umask. A folder that exists is left as it is: its owner
// (systemd's RuntimeDirectory, an admin) chose its mode.
func makeSocketDir(dir string) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("control: socket folder: %w", err)
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("control: create socket folder: %w", err)
	}
	for _, d := range missing {
		if err := os.Chmod(d, dirMode); err != nil {
			return fmt.Errorf("control: socket folder: %w", err)
		}
	}
	return nil
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
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		var tooLong *http.MaxBytesError
		if errors.As(err, &tooLong) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body longer than %d bytes", tooLong.Limit))
			return
		}
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
