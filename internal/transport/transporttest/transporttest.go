// Package transporttest holds what the tests of both transports share: a throwaway PKI for
// their in-process servers, the open failures both must classify alike, and the checks every
// session must pass. Only tests import it.
package transporttest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/transport"
)

// JWT is a well-formed device JWT; the test servers do not verify it.
const JWT = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJucmY5MTYxLngifQ.c2ln"

// FetchRequest is a first-run fetch with the device's default sizes and JWT.
func FetchRequest() transport.FetchRequest {
	return transport.FetchRequest{
		RxMaxSize: 1024, TxMaxSize: 2048, Limit: 10,
		ModemVersion: "mfw_nrf9161_2.0.1", ClientVersion: "0.1.0", JWT: JWT,
	}
}

// CA is a throwaway EC P-256 root, valid for an hour either side of now, that issues loopback
// server certificates.
type CA struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA generates a root.
func NewCA(t testing.TB) *CA {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "test root"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, key := issue(t, tmpl, nil, nil)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, key: key}
}

// Pool is a pool holding only the root.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Leaf issues a server certificate for 127.0.0.1 and localhost; the chain includes the root.
func (ca *CA) Leaf(t testing.TB) tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, key := issue(t, tmpl, ca.Cert, ca.key)
	return tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key}
}

// issue signs tmpl with a fresh key, by parent (self-signed when parent is nil).
func issue(t testing.TB, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

// CertFile writes cert as a PEM file (a ca_file) in a fresh temporary directory.
func CertFile(t testing.TB, cert *x509.Certificate) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Target is the part of a transport's Config that says where an attempt goes and whom it
// trusts; each transport's test maps it onto its own Config.
type Target struct {
	Hostname    string
	Port        int
	RootCAs     *x509.CertPool
	Timeout     time.Duration
	Resolver    *net.Resolver
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// OpenFailure is one way an attempt fails before its first request, and the sentinel Open
// must report for it.
type OpenFailure struct {
	Name   string
	Target Target
	Want   error
}

// OpenFailures are the failures both transports classify alike. good reaches a test server on
// network ("tcp" or "udp") that a client trusting good.RootCAs accepts.
func OpenFailures(t testing.TB, network string, good Target) []OpenFailure {
	t.Helper()
	with := func(change func(*Target)) Target {
		tg := good
		change(&tg)
		return tg
	}
	addr := net.JoinHostPort(good.Hostname, strconv.Itoa(good.Port))
	return []OpenFailure{
		{Name: "roots of another CA", Want: transport.ErrWrongRootCA,
			Target: with(func(tg *Target) { tg.RootCAs = NewCA(t).Pool() })},
		{Name: "default roots do not know the test CA", Want: transport.ErrWrongRootCA,
			Target: with(func(tg *Target) { tg.RootCAs = nil })},
		{Name: "name not in the certificate", Want: transport.ErrWrongRootCA,
			Target: with(func(tg *Target) {
				tg.Hostname = "not-in-the-certificate.example.net"
				tg.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, network, addr)
				}
			})},
		{Name: "unresolvable host", Want: transport.ErrDNS,
			Target: Target{Hostname: "provisioning.invalid", Port: good.Port, Resolver: noDNS()}},
		{Name: "port closed", Want: transport.ErrConnect,
			Target: with(func(tg *Target) { tg.Port = closedPort(t, network) })},
		{Name: "silent server", Want: transport.ErrTimeout,
			Target: with(func(tg *Target) {
				tg.Port = silentPort(t, network)
				tg.Timeout = 200 * time.Millisecond
			})},
	}
}

// RunOpenFailures opens each case's target with open and checks the error.
func RunOpenFailures[S io.Closer](t *testing.T, cases []OpenFailure, open func(context.Context, Target) (S, error)) {
	for _, tt := range cases {
		t.Run(tt.Name, func(t *testing.T) {
			s, err := open(context.Background(), tt.Target)
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, tt.Want) {
				t.Fatalf("Open: got %v, want %v", err, tt.Want)
			}
		})
	}
}

// noDNS is a resolver whose every lookup fails.
func noDNS() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no name server in this test")
	}}
}

// closedPort is a loopback port on network that nothing listens on.
func closedPort(t testing.TB, network string) int {
	t.Helper()
	var c io.Closer
	var addr net.Addr
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c, addr = pc, pc.LocalAddr()
	} else {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c, addr = l, l.Addr()
	}
	_ = c.Close()
	return port(addr)
}

// silentPort is a loopback port on network that takes what a client sends and never answers:
// a UDP socket that is not read, or a TCP listener whose connections stay open and mute
// until the test ends.
func silentPort(t testing.TB, network string) int {
	t.Helper()
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pc.Close() })
		return port(pc.LocalAddr())
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		_ = l.Close()
		<-done
	})
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	return port(l.Addr())
}

func port(a net.Addr) int {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.Port
	case *net.UDPAddr:
		return a.Port
	}
	return 0
}

// Session is what the shared checks use of a transport session.
type Session interface {
	Fetch(ctx context.Context, req transport.FetchRequest) ([]byte, error)
	Upload(ctx context.Context, req transport.UploadRequest) error
	Stats() transport.Stats
	Close() error
}

// Open opens a session with open and closes it when the test ends.
func Open[S io.Closer](t testing.TB, open func(context.Context) (S, error)) S {
	t.Helper()
	s, err := open(context.Background())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// CancelInFlight returns a context that is cancelled once s has a request on the wire, so a
// test can check that the caller's cancellation is reported as such and not as a timeout.
func CancelInFlight(t testing.TB, s Session) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		for s.Stats().Requests == 0 && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	return ctx
}

// CheckClosed closes s twice and checks that both calls succeed and that later requests fail
// with errClosed.
func CheckClosed(t testing.TB, s Session, errClosed error) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Fetch(context.Background(), FetchRequest()); !errors.Is(err, errClosed) {
		t.Errorf("Fetch after Close: got %v, want %v", err, errClosed)
	}
	if err := s.Upload(context.Background(), transport.UploadRequest{}); !errors.Is(err, errClosed) {
		t.Errorf("Upload after Close: got %v, want %v", err, errClosed)
	}
}

// ResumedOver runs attempts attempts of one fetch each (answered "no commands") through open
// and returns how many of their handshakes resumed an earlier session.
func ResumedOver[S Session](t testing.TB, attempts int, open func(context.Context) (S, error)) int {
	t.Helper()
	resumed := 0
	for i := range attempts {
		s, err := open(context.Background())
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		// One request also makes a TLS 1.3 client read the ticket that follows the handshake.
		if _, err := s.Fetch(context.Background(), FetchRequest()); !errors.Is(err, transport.ErrNoCommands) {
			t.Fatalf("Fetch %d: got %v, want ErrNoCommands", i, err)
		}
		resumed += s.Stats().ResumedHandshakes
		if err := s.Close(); err != nil {
			t.Fatalf("Close %d: %v", i, err)
		}
	}
	return resumed
}
