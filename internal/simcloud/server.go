// Package simcloud is a simulated nRF Cloud Provisioning Service for tests, demos and
// development without the cloud. It serves the device side over HTTPS
// (GET /v1/provisioning/commands, POST /v1/provisioning/response) and CoAP over DTLS 1.2
// (POST /p/auth-jwt, GET /p/cmd, POST /p/rsp) exactly as docs/protocol.md §1–§3 describe, and an
// owner-side JSON API on the HTTPS server shaped like the real service's REST API (claim a
// device by attestation token, queue provisioning commands, read their status). Both
// listeners use a certificate issued by a CA the simulator generates and writes to
// Config.StateDir, so clients can be pointed at it with a ca_file setting.
//
// The service side is stateful: a registry of device identity keys (RegisterDevice), claims,
// a per-device command queue with the cursor semantics of docs/protocol.md §4.1, and a record of
// every uploaded response. Fault injection (SetFault) makes either transport misbehave on
// purpose. A Server is safe for concurrent use; Close stops every goroutine it started.
//
// Owner API (JSON, "Authorization: Bearer <Config.APIKey>"), each route backed by a Go method;
// docs/simulators.md has an example of each:
//
//	POST   /v1/claimed-devices                       {"claimToken": "<attest>.<cose>", "tags": [...]}
//	                                                 → 201 device (?dryrun=true → 202)   Claim
//	POST   /v1/claimed-devices                       CSV rows "<token>"[,"<tag,tag>"]
//	                                                 → 201/200 {"claimedIds", "failed"}    ClaimCSV
//	GET    /v1/claimed-devices                       → {"items": [device], "total": n}
//	GET    /v1/claimed-devices/{uuid}                → device                             Device
//	DELETE /v1/claimed-devices/{uuid}                → 204                                Unclaim
//	POST   /v1/claimed-devices/{uuid}/provisioning   {"description": "...", "request": {"<type>": {...}}}
//	                                                 → 201 {"id": "<job id>"}             Enqueue
//	GET    /v1/claimed-devices/{uuid}/provisioning   → {"items": [job]}                   Jobs
//	GET    /v1/claimed-devices/{uuid}/provisioning/{id} → job: status, response.<type>    Job
//	DELETE /v1/claimed-devices/{uuid}/provisioning/{id} → 204 if not delivered yet        Discard
//	GET|POST /v1/provisioning/tags                   {"tag", "description"}               Tags, CreateTag
//	GET|POST /v1/provisioning-rules                  {"name", "description", "active", "commands", "tags"}
//	                                                                                      Rules, CreateRule
//	GET|DELETE /v1/provisioning-rules/{id}                                                DeleteRule
//	GET    /v1/sim/devices                           → every registered device            Devices
//	PUT    /v1/sim/devices/{uuid}                    body: identity public key PEM → 201  RegisterDevicePEM
//	GET    /v1/sim/devices/{uuid}/commands           → device-level commands + status     Commands
//	GET    /v1/sim/devices/{uuid}/responses          → recorded uploads (hex CBOR + decoded) Responses
//	GET|PUT|DELETE /v1/sim/faults                    {"items": [fault]}                   Faults, SetFault
//	GET    /v1/sim/ca                                → the CA certificate PEM             CAPEM
//
// Request types: atRequest {command, parameters, ignoreCmeErrors}, config {properties},
// finished {}, clientCertificate {secTag, content | attributes, keyUsage}, serverCertificate
// {secTag, content}, certificateSigningRequest {secTag, attributes, keyUsage},
// clientPrivateKeyGeneration {secTag}, cloudAccessKeyGeneration {secTag}. Unknown types and
// fields are refused. A job's response sits under its request type; key generations carry
// the modem's %KEYGEN answer verbatim in "csr". Claiming a device with tags queues the
// commands of every active rule with one of them. Errors are {"code": <status>, "message": "..."}.
package simcloud

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
)

// Config configures a Server. The zero value works: both listeners on ephemeral loopback
// ports, a temporary state directory, the real clock, no logging.
type Config struct {
	// HTTPAddr is the HTTPS listen address; default "127.0.0.1:0".
	HTTPAddr string
	// CoAPAddr is the CoAP/DTLS (UDP) listen address; default "127.0.0.1:0".
	CoAPAddr string
	// StateDir receives ca.pem, ca-key.pem, server.pem and server-key.pem. An existing CA
	// there is reused. Empty means a temporary directory that Close removes.
	StateDir string
	// Clock is the service's time, used for JWT expiry and timestamps; default time.Now.
	Clock func() time.Time
	// Logf receives diagnostics (TLS handshake errors, DTLS and CoAP errors); nil discards
	// them. The simulator never writes to stdout or stderr itself.
	Logf func(format string, args ...any)
	// APIKey is the bearer token of the owner API; default "sim-api-key".
	APIKey string
	// ClockSkew is the leeway for JWT exp/iat checks; default 1 minute.
	ClockSkew time.Duration
	// MaxJobs is the most unresolved jobs per device; default 20, the real service's limit.
	MaxJobs int
	// SessionLifetime is the Max-Age returned with CoAP auth; default 30 days.
	SessionLifetime time.Duration
	// RTT is the simulated network round-trip time: every request waits one RTT before it is
	// served, and every TLS or DTLS handshake its number of round trips (delay.go). Zero (the
	// default) adds nothing.
	RTT time.Duration
	// Processing is the service's own time per request, added to RTT. Zero adds nothing.
	Processing time.Duration
}

// DefaultAPIKey is the owner API key when Config.APIKey is empty.
const DefaultAPIKey = "sim-api-key"

// Server is a running simulated Provisioning Service. Create it with New, then Start it.
type Server struct {
	cfg     Config
	ca      *authority
	tempDir string // removed by Close when the state dir was not given

	mu       sync.Mutex // guards everything below
	devices  map[string]*device
	tags     []ProvisioningTag // in creation order
	rules    []*rule           // in creation order
	faults   []Fault
	sessions map[mux.Conn]string // DTLS session → device UUID bound by /p/auth-jwt
	started  bool
	closed   bool // set once Close begins; Start refuses afterwards

	httpLn    net.Listener
	httpSrv   *http.Server
	coapLn    *coapnet.DTLSListener
	coapSrv   *server.Server
	stop      chan struct{} // closed by Close: ends slow faults and the CoAP periodic runner
	stopCtx   func() bool   // unregisters the Start context watcher
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error // written once inside closeOnce
}

// New checks cfg, fills in defaults and creates (or loads) the CA and the server
// certificate. It does not listen yet; see Start.
func New(cfg Config) (*Server, error) {
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if cfg.CoAPAddr == "" {
		cfg.CoAPAddr = "127.0.0.1:0"
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.APIKey == "" {
		cfg.APIKey = DefaultAPIKey
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = time.Minute
	}
	if cfg.MaxJobs == 0 {
		cfg.MaxJobs = 20
	}
	if cfg.SessionLifetime == 0 {
		cfg.SessionLifetime = 30 * 24 * time.Hour
	}
	if cfg.ClockSkew < 0 || cfg.MaxJobs < 0 || cfg.SessionLifetime < 0 || cfg.RTT < 0 || cfg.Processing < 0 {
		return nil, fmt.Errorf("simcloud: negative ClockSkew, MaxJobs, SessionLifetime, RTT or Processing: %w", ErrInvalid)
	}
	s := &Server{
		cfg:      cfg,
		devices:  map[string]*device{},
		sessions: map[mux.Conn]string{},
		stop:     make(chan struct{}),
	}
	dir := cfg.StateDir
	if dir == "" {
		d, err := os.MkdirTemp("", "nrfcloudsim-")
		if err != nil {
			return nil, fmt.Errorf("simcloud: state dir: %w", err)
		}
		dir, s.tempDir = d, d
	}
	ca, err := newAuthority(dir, s.now)
	if err != nil {
		if s.tempDir != "" {
			os.RemoveAll(s.tempDir)
		}
		return nil, err
	}
	s.ca = ca
	return s, nil
}

// Start binds both listeners and serves in the background until Close, or until ctx is
// cancelled (which closes the server). It returns once the addresses are known.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.started:
		return ErrStarted
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("simcloud: listen https %s: %w", s.cfg.HTTPAddr, err)
	}
	coapLn, coapSrv, err := s.newCoAP()
	if err != nil {
		ln.Close()
		return err
	}
	s.httpLn = ln
	s.httpSrv = &http.Server{
		Handler:           s.delayHTTP(s.routes()),
		TLSConfig:         s.delayTLSHandshake(s.tlsConfig()),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          log.New(logWriter{s.logf}, "", 0),
		// An empty map disables HTTP/2: the device speaks HTTP/1.1, and a dropped-connection
		// fault needs to hijack the connection.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	s.coapLn, s.coapSrv = coapLn, coapSrv
	s.started = true
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.httpSrv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logf("simcloud: https: %v", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		if err := coapSrv.Serve(coapLn); err != nil {
			s.logf("simcloud: coap: %v", err)
		}
	}()
	s.stopCtx = context.AfterFunc(ctx, func() { s.Close() })
	return nil
}

// Close stops both listeners, ends open connections and waits for every goroutine the
// server started. The state directory stays unless it was a temporary one. Idempotent; a
// concurrent second call waits for the first to finish.
func (s *Server) Close() error {
	s.closeOnce.Do(s.shutdown)
	return s.closeErr
}

func (s *Server) shutdown() {
	s.mu.Lock()
	s.closed = true
	started := s.started
	close(s.stop)
	s.mu.Unlock()

	var errs []error
	if started {
		s.stopCtx()
		// Shutdown waits for handlers in flight (a slow fault ends early on s.stop); Close
		// then ends whatever is left, such as a client that keeps a connection busy.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.httpSrv.Shutdown(ctx); err != nil {
			if err := s.httpSrv.Close(); err != nil {
				errs = append(errs, fmt.Errorf("simcloud: close https: %w", err))
			}
		}
		cancel()
		s.coapSrv.Stop()
		s.wg.Wait()
	}
	if s.tempDir != "" {
		if err := os.RemoveAll(s.tempDir); err != nil {
			errs = append(errs, fmt.Errorf("simcloud: remove state dir: %w", err))
		}
	}
	s.closeErr = errors.Join(errs...)
}

// HTTPAddr is the bound HTTPS address ("127.0.0.1:port"); empty before Start.
func (s *Server) HTTPAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// CoAPAddr is the bound CoAP/DTLS address; empty before Start.
func (s *Server) CoAPAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.coapLn == nil {
		return ""
	}
	return s.coapLn.Addr().String()
}

// HTTPURL is "https://" + HTTPAddr(), the base URL for clients.
func (s *Server) HTTPURL() string { return "https://" + s.HTTPAddr() }

// CAFile is the path of the PEM CA certificate that signed the server certificate (SANs
// 127.0.0.1, ::1, localhost). It exists from New on.
func (s *Server) CAFile() string { return s.ca.caFile }

// CAPEM returns the PEM CA certificate.
func (s *Server) CAPEM() []byte { return append([]byte(nil), s.ca.certPEM...) }

// CAPool returns a pool holding only the CA, for clients.
func (s *Server) CAPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.ca.cert)
	return p
}

func (s *Server) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{s.ca.server},
		NextProtos:   []string{"http/1.1"},
	}
}

func (s *Server) now() time.Time { return s.cfg.Clock() }

func (s *Server) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf(format, args...)
	}
}

// sleep waits d, or less if ctx ends or the server closes; it reports whether d elapsed.
func (s *Server) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-s.stop:
	}
	return false
}

// logWriter adapts Logf to the io.Writer that log.Logger and pion's logger factory want.
type logWriter struct{ logf func(string, ...any) }

func (w logWriter) Write(p []byte) (int, error) {
	w.logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = logWriter{}
