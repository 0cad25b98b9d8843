// Package coaptransport speaks the CoAP-over-DTLS side of the nRF Cloud Provisioning Service
// (docs/protocol.md §2): authenticate with the JWT, fetch a batch of commands, upload responses.
//
// A Session is one DTLS 1.2 session for a whole provisioning attempt, re-authenticated at
// the start of every round as the device does. The handshake is made explicitly in Open, under
// the caller's context, so that an untrusted certificate or a silent server is reported there
// and not as a puzzling failure of the first request.
package coaptransport

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	piondtls "github.com/pion/dtls/v3"
	dtlsnet "github.com/pion/dtls/v3/pkg/net"
	"github.com/pion/logging"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	coapconfig "github.com/plgd-dev/go-coap/v3/options/config"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/provisiond/provisiond/internal/rootca"
	"github.com/provisiond/provisiond/internal/transport"
)

// Defaults filled in by New for zero Config fields (docs/protocol.md §2.1).
const (
	DefaultHostname  = "coap.nrfcloud.com"
	DefaultPort      = 5684
	DefaultTimeout   = 30 * time.Second
	DefaultBlockSize = 1024
)

// Config configures a Transport. The zero value talks to the real service, verified against
// the embedded nRF Cloud CoAP root, with DTLS Connection ID support and full handshakes.
type Config struct {
	// Hostname is the service host, also the DTLS server name. Default DefaultHostname.
	Hostname string
	// Port is the UDP port. Default 5684.
	Port int
	// Timeout bounds the handshake and each request, block transfers and retransmissions
	// included. Default 30 s, as NRF_PROVISIONING_COAP_TIMEOUT_SECONDS.
	Timeout time.Duration
	// CAFile is a PEM file of roots that replaces the embedded nRF Cloud root.
	CAFile string
	// RootCAs, when set, replaces both CAFile and the embedded root (tests, the simulator).
	RootCAs *x509.CertPool
	// SessionCache lets a later Open resume the DTLS session of an earlier one (an abbreviated
	// handshake). Off by default: pion/dtls v3.1.15 negotiates no Connection ID on a resumed
	// session, and the host saves little with it, because it handshakes once per attempt.
	SessionCache bool
	// DisableConnectionID stops advertising DTLS Connection ID support. By default the client
	// offers it as the device does ("supported": a zero-length CID of its own, so the server
	// may give it one), which keeps the session alive across NAT rebinding.
	DisableConnectionID bool
	// BlockSize is the Block1/Block2 size in bytes: 16, 32, …, 1024. Default 1024.
	BlockSize int
	// Resolver resolves Hostname; nil uses net.DefaultResolver. Ignored when DialContext is set.
	Resolver *net.Resolver
	// DialContext opens the connected UDP socket; nil uses a net.Dialer with Resolver.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// OnError receives errors of the background CoAP reader that belong to no request; nil
	// drops them. It must not block.
	OnError func(error)
}

// Transport holds the validated configuration and, with SessionCache, the DTLS sessions
// that later attempts may resume. It is safe for concurrent use.
type Transport struct {
	cfg   Config
	addr  string
	roots *x509.CertPool
	szx   blockwise.SZX
	// block2 is the initial Block2 option of every GET /p/cmd.
	block2 message.Option
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	store  *sessionStore // nil without SessionCache
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
		return nil, fmt.Errorf("coaptransport: port %d out of range", cfg.Port)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.BlockSize == 0 {
		cfg.BlockSize = DefaultBlockSize
	}
	szx, ok := blockSZX(cfg.BlockSize)
	if !ok {
		return nil, fmt.Errorf("coaptransport: block size %d is not a power of two from 16 to 1024", cfg.BlockSize)
	}
	roots := cfg.RootCAs
	var err error
	switch {
	case roots != nil:
	case cfg.CAFile != "":
		roots, err = transport.LoadRoots(cfg.CAFile)
	default:
		// The self-signed nRF Cloud root of coap.nrfcloud.com is in no system bundle, so the
		// binary carries it (the same copy the daemon writes into the modem's CA tag).
		roots, err = transport.ParseRoots([]byte(rootca.NRFCloudCoAP), "embedded nRF Cloud CoAP root")
	}
	if err != nil {
		return nil, fmt.Errorf("coaptransport: %w", err)
	}
	dial := cfg.DialContext
	if dial == nil {
		d := &net.Dialer{Resolver: cfg.Resolver}
		dial = d.DialContext
	}
	t := &Transport{
		cfg:    cfg,
		addr:   net.JoinHostPort(cfg.Hostname, strconv.Itoa(cfg.Port)),
		roots:  roots,
		szx:    szx,
		block2: block2Option(szx),
		dial:   dial,
	}
	if cfg.SessionCache {
		t.store = &sessionStore{m: make(map[string]piondtls.Session)}
	}
	return t, nil
}

// Config returns the configuration with defaults filled in.
func (t *Transport) Config() Config { return t.cfg }

func blockSZX(size int) (blockwise.SZX, bool) {
	for szx := blockwise.SZX16; szx <= blockwise.SZX1024; szx++ {
		if szx.Size() == int64(size) {
			return szx, true
		}
	}
	return 0, false
}

// Open starts one provisioning attempt: it resolves the host, completes the DTLS handshake
// under ctx (bounded by the configured timeout) and starts the CoAP client over it. Failures
// are classified as transport sentinels (ErrDNS, ErrWrongRootCA, ErrTimeout, ErrConnect).
func (t *Transport) Open(ctx context.Context) (*Session, error) {
	s := &Session{t: t, stop: make(chan struct{})}
	hctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	raw, err := t.dial(hctx, "udp", t.addr)
	if err != nil {
		return nil, wrapNetErr(ctx, "open", err)
	}
	v := &verifier{roots: t.roots, name: t.cfg.Hostname}
	conn, err := piondtls.ClientWithOptions(dtlsnet.PacketConnFromConn(s.meter.PacketConn(raw)), raw.RemoteAddr(), t.dtlsOptions(v)...)
	if err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("coap open: %w", err)
	}
	key := raw.RemoteAddr().String() + "_" + t.cfg.Hostname // pion's client session key
	offered := t.store.id(key)
	if err := conn.HandshakeContext(hctx); err != nil {
		_ = conn.Close()
		// The handshake's error is not always the one that ended it: after the client's
		// bad_certificate alert, pion may return the server's reply to that alert (a
		// DecodeError alert, with Connection IDs). A failed verification decided the
		// outcome whatever came after it.
		if verr := v.failure(); verr != nil && ctx.Err() == nil {
			return nil, fmt.Errorf("coap open: %w: %w", transport.ErrWrongRootCA, verr)
		}
		return nil, wrapNetErr(ctx, "open", err)
	}
	state, _ := conn.ConnectionState()
	s.meter.Handshake(offered != "" && offered == string(state.SessionID))

	s.wg.Add(1)
	s.cc = coapdtls.Client(conn,
		options.WithErrors(s.onError),
		options.WithPeriodicRunner(s.runner),
		options.WithBlockwise(true, t.szx, t.cfg.Timeout),
		options.WithProcessReceivedMessageFunc(coapconfig.ProcessReceivedMessageFunc[*udpclient.Conn](s.capBlock2)),
		options.WithCloseSocket(),
	)
	return s, nil
}

func (t *Transport) dtlsOptions(v *verifier) []piondtls.ClientOption {
	opts := []piondtls.ClientOption{
		// The chain is verified by v, which remembers a failure (see Open). pion's own
		// verification is off so that it cannot reject the certificate before v sees it.
		piondtls.WithInsecureSkipVerify(true),
		piondtls.WithVerifyPeerCertificate(v.verify),
		piondtls.WithServerName(t.cfg.Hostname),
		piondtls.WithLoggerFactory(silentLoggers()),
	}
	if !t.cfg.DisableConnectionID {
		opts = append(opts, piondtls.WithConnectionIDGenerator(piondtls.OnlySendCIDGenerator()))
	}
	if t.store != nil {
		opts = append(opts, piondtls.WithSessionStore(t.store))
	}
	return opts
}

// verifier verifies the server's certificate chain for one handshake and records the
// outcome, so that Open can tell a rejected certificate from whatever error the handshake
// returns after it. verify runs on pion's handshake goroutine.
type verifier struct {
	roots *x509.CertPool
	name  string

	mu  sync.Mutex
	err error // the last verification's failure; nil if it passed or none ran
}

// verify checks the chain against the roots and the server name, as crypto/tls does. pion
// also calls it for a cached session before offering to resume it.
func (v *verifier) verify(rawCerts [][]byte, _ [][]*x509.Certificate) error {
	err := verifyChain(rawCerts, v.roots, v.name)
	v.mu.Lock()
	v.err = err
	v.mu.Unlock()
	return err
}

// failure returns the recorded verification failure, nil if there is none.
func (v *verifier) failure() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.err
}

// verifyChain verifies the leaf of rawCerts, with the rest as intermediates.
func verifyChain(rawCerts [][]byte, roots *x509.CertPool, name string) error {
	if len(rawCerts) == 0 {
		return errNoServerCert
	}
	certs := make([]*x509.Certificate, 0, len(rawCerts))
	for _, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return fmt.Errorf("parse server certificate: %w", err)
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, DNSName: name, Intermediates: inter})
	return err
}

// silentLoggers keeps pion from writing to stderr: a library reports through errors only.
func silentLoggers() logging.LoggerFactory {
	return &logging.DefaultLoggerFactory{
		Writer:          io.Discard,
		DefaultLogLevel: logging.LogLevelDisabled,
		ScopeLevels:     map[string]logging.LogLevel{},
	}
}

// sessionStore is the in-memory DTLS session cache of one Transport.
type sessionStore struct {
	mu sync.Mutex
	m  map[string]piondtls.Session
}

func (st *sessionStore) Set(key []byte, s piondtls.Session) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.m[string(key)] = s
	return nil
}

func (st *sessionStore) Get(key []byte) (piondtls.Session, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.m[string(key)], nil // a zero Session means none; pion then does a full handshake
}

func (st *sessionStore) Del(key []byte) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.m, string(key))
	return nil
}

// id is the session id that a handshake to key would offer, empty when none (or no cache).
func (st *sessionStore) id(key string) string {
	if st == nil {
		return ""
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return string(st.m[key].ID)
}

// block2Option is the Block2 option the device puts on its GET (NUM=0, M=0, SZX of the
// configured block size, docs/protocol.md §2.2): it asks the server for blocks of that size.
func block2Option(szx blockwise.SZX) message.Option {
	v, _ := blockwise.EncodeBlockOption(szx, 0, false) // szx is valid: New checked it
	buf := make([]byte, 4)
	n, _ := message.EncodeUint32(buf, v)
	return message.Option{ID: message.Block2, Value: buf[:n]}
}
