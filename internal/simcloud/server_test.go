package simcloud

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/pkg/runner/periodic"
)

func TestCertificates(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, Config{StateDir: dir})
	if s.CAFile() != filepath.Join(dir, "ca.pem") {
		t.Errorf("CAFile = %s", s.CAFile())
	}
	onDisk, err := os.ReadFile(s.CAFile())
	if err != nil || !bytes.Equal(onDisk, s.CAPEM()) {
		t.Fatalf("ca.pem on disk differs from CAPEM: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "ca-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("ca-key.pem mode = %v, %v; want 0600", fi.Mode(), err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(onDisk) {
		t.Fatal("ca.pem holds no certificate")
	}
	for _, name := range []string{"127.0.0.1", "::1", "localhost"} {
		t.Run(name, func(t *testing.T) {
			if err := s.ca.server.Leaf.VerifyHostname(name); err != nil {
				t.Error(err)
			}
			if _, err := s.ca.server.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
				t.Error(err)
			}
		})
	}
	// Over the wire: TLS 1.2 works, TLS 1.1 is refused, an unrelated CA fails.
	if c, err := tls.Dial("tcp", s.HTTPAddr(), &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12}); err != nil {
		t.Errorf("TLS 1.2: %v", err)
	} else {
		c.Close()
	}
	if c, err := tls.Dial("tcp", s.HTTPAddr(), &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}); err == nil {
		c.Close()
		t.Error("TLS 1.1 accepted")
	}
	if c, err := tls.Dial("tcp", s.HTTPAddr(), &tls.Config{RootCAs: x509.NewCertPool()}); err == nil {
		c.Close()
		t.Error("handshake verified without the CA")
	}

	// A second server on the same state dir keeps the CA and issues a new server certificate.
	s2, err := New(Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if !bytes.Equal(s2.CAPEM(), s.CAPEM()) {
		t.Error("CA not reused from the state dir")
	}
	if bytes.Equal(s2.ca.server.Certificate[0], s.ca.server.Certificate[0]) {
		t.Error("server certificate reused")
	}
	// A corrupt CA is an error, not silently replaced.
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "ca.pem"), []byte("junk"), 0o644)
	os.WriteFile(filepath.Join(bad, "ca-key.pem"), []byte("junk"), 0o600)
	if _, err := New(Config{StateDir: bad}); err == nil {
		t.Error("New accepted a corrupt CA")
	}
	// The issued PEM is really a CA certificate.
	blk, _ := pem.Decode(onDisk)
	ca, err := x509.ParseCertificate(blk.Bytes)
	if err != nil || !ca.IsCA {
		t.Errorf("ca.pem: IsCA=%v err=%v", ca != nil && ca.IsCA, err)
	}
}

func TestLifecycle(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Dir(s.CAFile())
	if s.HTTPAddr() != "" || s.CoAPAddr() != "" {
		t.Error("addresses before Start")
	}
	ctx, cancel := context.WithCancel(t.Context())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start = %v, want ErrStarted", err)
	}
	addr := s.HTTPAddr()
	cancel() // cancelling the Start context closes the server
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("still listening after the context was cancelled")
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary state dir %s left behind: %v", tmp, err)
	}
	if err := s.Start(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}

	// Close without Start.
	s2, err := New(Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Close(); err != nil {
		t.Errorf("Close before Start: %v", err)
	}

	// Port in use.
	s3 := startServer(t, Config{})
	s4, err := New(Config{StateDir: t.TempDir(), HTTPAddr: s3.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	defer s4.Close()
	if err := s4.Start(t.Context()); err == nil {
		t.Error("Start on a busy port succeeded")
	}
}

// TestCloseDuringSlowRequests: Close ends requests held by a slow fault on both transports
// without leaking goroutines (goleak in TestMain).
func TestCloseDuringSlowRequests(t *testing.T) {
	s, err := New(Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	dev := claimedDevice(t, s)
	s.SetFault(Fault{Kind: FaultSlow, Delay: time.Hour, Count: 2})
	h := newHTTPDevice(t, s, dev)
	c := newCoAPDevice(t, s, dev, blockwise.SZX1024)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		h.do(http.MethodGet, "/v1/provisioning/commands?after=", dev.jwt(t), nil)
	}()
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if resp, err := c.cc.Post(ctx, pathAuth, 60, stringsReader(dev.jwt(t))); err == nil {
			c.cc.ReleaseMessage(resp)
		}
		c.cc.Close() // a held CoAP request gets no answer; close so the goroutine ends
	}()
	for len(s.Faults()) != 0 { // both requests have taken their fault
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

// TestConnectionID moves the client to a new UDP source port in the middle of a session.
// With a Connection ID the server keeps the session (and its auth binding); without one the
// session is lost, which shows the relay really changes the address.
func TestConnectionID(t *testing.T) {
	s := startServer(t, Config{})
	dev := claimedDevice(t, s)
	for _, tc := range []struct {
		name   string
		cid    bool
		follow bool
	}{{"with CID", true, true}, {"without CID", false, false}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRelay(t, s.CoAPAddr())
			popts := []piondtls.ClientOption{piondtls.WithRootCAs(s.CAPool()), piondtls.WithServerName("localhost")}
			if tc.cid {
				popts = append(popts, piondtls.WithConnectionIDGenerator(piondtls.OnlySendCIDGenerator()))
			}
			stop := make(chan struct{})
			cc, err := dtls.Dial(r.addr(), dtls.NewDTLSClientOptions(popts...),
				options.WithErrors(func(error) {}), options.WithPeriodicRunner(periodic.New(stop, 100*time.Millisecond)))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { cc.Close(); <-cc.Done(); close(stop) }()
			c := &coapDevice{t: t, cc: cc, dev: dev}
			if code, err := c.auth(dev.jwt(t)); err != nil || code != codes.Created {
				t.Fatalf("auth: %v %v", code, err)
			}
			r.rebind(t)
			// The CID case expects an answer: give it room on a loaded CI machine. The case
			// without CID expects none, so a short wait keeps the test quick.
			wait := 2 * time.Second
			if tc.follow {
				wait = 15 * time.Second
			}
			ctx, cancel := context.WithTimeout(t.Context(), wait)
			defer cancel()
			resp, err := cc.Get(ctx, pathCommands, queries("after=")...)
			if tc.follow {
				if err != nil || resp.Code() != codes.Content {
					t.Errorf("fetch after rebinding: %v %v, want 2.05", resp, err)
				}
			} else if err == nil && resp.Code() == codes.Content {
				t.Errorf("fetch after rebinding without CID succeeded: the relay did not move the client")
			}
			if err == nil {
				cc.ReleaseMessage(resp)
			}
		})
	}
}

// udpRelay forwards datagrams between one client and the server; rebind makes the server
// see the client at a new source port.
type udpRelay struct {
	ln     *net.UDPConn
	server *net.UDPAddr
	mu     sync.Mutex
	up     *net.UDPConn
	client *net.UDPAddr
	wg     sync.WaitGroup
}

func newRelay(t *testing.T, server string) *udpRelay {
	t.Helper()
	sa, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &udpRelay{ln: ln, server: sa}
	r.rebind(t)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, from, err := ln.ReadFromUDP(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.client = from
			up := r.up
			r.mu.Unlock()
			up.Write(buf[:n])
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		r.up.Close()
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *udpRelay) addr() string { return r.ln.LocalAddr().String() }

func (r *udpRelay) rebind(t *testing.T) {
	t.Helper()
	up, err := net.DialUDP("udp", nil, r.server)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	old := r.up
	r.up = up
	r.mu.Unlock()
	if old != nil {
		old.Close()
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			client := r.client
			r.mu.Unlock()
			if client != nil {
				r.ln.WriteToUDP(buf[:n], client)
			}
		}
	}()
}
