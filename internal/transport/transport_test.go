package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want error
	}{
		{name: "nil", err: nil, want: nil},
		{name: "caller cancel is not an outcome", err: fmt.Errorf("x: %w", context.Canceled), want: nil},
		{name: "dns", err: &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "a.invalid"}}, want: ErrDNS},
		{name: "unknown authority", err: fmt.Errorf("hs: %w", x509.UnknownAuthorityError{}), want: ErrWrongRootCA},
		{name: "tls verification", err: &tls.CertificateVerificationError{Err: x509.HostnameError{}}, want: ErrWrongRootCA},
		{name: "expired", err: x509.CertificateInvalidError{Reason: x509.Expired}, want: ErrWrongRootCA},
		{name: "deadline", err: fmt.Errorf("get: %w", context.DeadlineExceeded), want: ErrTimeout},
		{name: "socket deadline", err: os.ErrDeadlineExceeded, want: ErrTimeout},
		{name: "eof", err: io.EOF, want: ErrShutdown},
		{name: "reset", err: &net.OpError{Op: "read", Err: syscall.ECONNRESET}, want: ErrShutdown},
		{name: "refused", err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, want: ErrConnect},
		{name: "tls alert", err: tls.AlertError(40), want: ErrConnect},
		{name: "unknown", err: errors.New("something else"), want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.err); got != tt.want {
				t.Errorf("Classify(%v): got %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestStatusError(t *testing.T) {
	err := fmt.Errorf("round: %w", &StatusError{Transport: "coap", Op: "auth", Code: "5.03", Kind: ErrBusy, Detail: "later"})
	if !errors.Is(err, ErrBusy) || !Backoff(err) {
		t.Fatalf("errors.Is/Backoff: got false for %v", err)
	}
	if want := "round: coap auth: status 5.03: service busy: later"; err.Error() != want {
		t.Errorf("Error: got %q, want %q", err.Error(), want)
	}
	if Backoff(&StatusError{Kind: ErrNotClaimed}) {
		t.Error("Backoff(not claimed): got true")
	}
}

func TestWithDefaults(t *testing.T) {
	got := FetchRequest{After: "x", Limit: 3}.WithDefaults()
	want := FetchRequest{After: "x", RxMaxSize: DefaultRxMaxSize, TxMaxSize: DefaultTxMaxSize, Limit: 3}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestMeter(t *testing.T) {
	var m Meter
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := m.PacketConn(a)
	go func() {
		buf := make([]byte, 10)
		n, _ := b.Read(buf)
		_, _ = b.Write(buf[:n])
	}()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	m.Handshake(false)
	m.Handshake(true)
	m.Request()
	want := Stats{Handshakes: 2, ResumedHandshakes: 1, Requests: 1, BytesSent: 5, BytesReceived: 5, DatagramsSent: 1, DatagramsReceived: 1}
	if got := m.Stats(); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestLoadRoots(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("nothing here"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadRoots(bad); !errors.Is(err, errNoCerts) {
		t.Errorf("LoadRoots(no certs): got %v", err)
	}
	if _, err := LoadRoots(filepath.Join(dir, "missing.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadRoots(missing): got %v", err)
	}
	good := filepath.Join(dir, "good.pem")
	pem, err := os.ReadFile("../../../shared/certs/amazon-root-ca-1.pem")
	if err != nil {
		t.Skip("shared certs not beside the repo:", err)
	}
	if err := os.WriteFile(good, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadRoots(good); err != nil {
		t.Errorf("LoadRoots(amazon root): %v", err)
	}
}
