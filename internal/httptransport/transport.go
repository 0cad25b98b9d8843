// Package httptransport speaks the HTTPS (REST) side of the nRF Cloud Provisioning Service
// (docs/protocol.md §1): fetch a batch of commands, upload a batch of responses.
//
// Unlike the device library, which opens a new TCP+TLS connection with "Connection: close" for
// every request, a Session keeps one keep-alive TLS connection for the whole provisioning
// attempt, so a batch costs one handshake instead of two.
package httptransport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/provisiond/provisiond/internal/transport"
)

// Defaults filled in by New for zero Config fields (docs/protocol.md §1.1).
const (
	DefaultHostname  = "provisioning-http.nrfcloud.com"
	DefaultPort      = 443
	DefaultTimeout   = 30 * time.Second
	DefaultUserAgent = "provisiond"
)

// Paths of the device API (docs/protocol.md §1.2, §1.3).
const (
	commandsPath = "/v1/provisioning/commands"
	responsePath = "/v1/provisioning/response"
)

// Config configures a Transport. The zero value talks to the real service with system roots.
type Config struct {
	// Hostname is the service host, also used for SNI and certificate verification.
	// Default DefaultHostname.
	Hostname string
	// Port is the TCP port. Default 443.
	Port int
	// Timeout bounds each request: DNS, connect, TLS handshake, request and the whole body.
	// Default 30 s, as NRF_PROVISIONING_HTTP_TIMEOUT_MS.
	Timeout time.Duration
	// CAFile is a PEM file of roots that replaces the system roots (the ca_file setting).
	CAFile string
	// RootCAs, when set, replaces both CAFile and the system roots (tests, the simulator).
	RootCAs *x509.CertPool
	// UserAgent is sent on every request, e.g. "provisiond/1.2.3". Default DefaultUserAgent.
	UserAgent string
	// Resolver resolves Hostname; nil uses net.DefaultResolver. Ignored when DialContext is set.
	Resolver *net.Resolver
	// DialContext opens the TCP connection; nil uses a net.Dialer with Resolver.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Transport holds the validated configuration and a TLS session cache shared by its sessions,
// so the handshake of a later attempt may be resumed. It is safe for concurrent use.
type Transport struct {
	cfg  Config
	addr string
	tls  *tls.Config // template; cloned per connection
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// New checks cfg, fills in defaults and loads the roots.
func New(cfg Config) (*Transport, error) {
	if cfg.Hostname == "" {
		cfg.Hostname = DefaultHostname
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("httptransport: port %d out of range", cfg.Port)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = DefaultUserAgent
	}
	roots := cfg.RootCAs
	if roots == nil && cfg.CAFile != "" {
		var err error
		if roots, err = transport.LoadRoots(cfg.CAFile); err != nil {
			return nil, fmt.Errorf("httptransport: %w", err)
		}
	}
	dial := cfg.DialContext
	if dial == nil {
		d := &net.Dialer{Resolver: cfg.Resolver}
		dial = d.DialContext
	}
	return &Transport{
		cfg:  cfg,
		addr: net.JoinHostPort(cfg.Hostname, strconv.Itoa(cfg.Port)),
		dial: dial,
		// Verification is always on: InsecureSkipVerify is never set, and nil RootCAs means
		// the system roots.
		tls: &tls.Config{
			ServerName:         cfg.Hostname,
			RootCAs:            roots,
			MinVersion:         tls.VersionTLS12,
			ClientSessionCache: tls.NewLRUClientSessionCache(4),
		},
	}, nil
}

// Config returns the configuration with defaults filled in.
func (t *Transport) Config() Config { return t.cfg }

// Open starts one provisioning attempt: it connects and completes the TLS handshake under
// ctx (bounded by the configured timeout), so DNS, certificate and connect failures surface
// here, classified as transport sentinels. The connection is then reused by every request
// of the Session; if the server drops it, the next request reconnects.
func (t *Transport) Open(ctx context.Context) (*Session, error) {
	s := &Session{t: t}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	conn, err := t.dialTLS(ctx, &s.meter)
	if err != nil {
		return nil, wrapNetErr("open", err)
	}
	s.spare = conn
	s.rt = &http.Transport{
		DialTLSContext:      s.dialTLS,
		MaxConnsPerHost:     1,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     90 * time.Second,
		// The body is CBOR and its size is checked against rxMaxSize on the wire; a transparent
		// gzip would undo both.
		DisableCompression: true,
		// A custom DialTLSContext without ForceAttemptHTTP2 keeps the client on HTTP/1.1, the
		// protocol the device speaks.
		ResponseHeaderTimeout: t.cfg.Timeout,
	}
	return s, nil
}

// dialTLS opens a TCP connection counted by m and completes the TLS handshake.
func (t *Transport) dialTLS(ctx context.Context, m *transport.Meter) (net.Conn, error) {
	raw, err := t.dial(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	conn := tls.Client(m.Conn(raw), t.tls)
	err = conn.HandshakeContext(ctx)
	m.Handshake(err == nil && conn.ConnectionState().DidResume)
	if err != nil {
		_ = raw.Close()
		return nil, err
	}
	return conn, nil
}
