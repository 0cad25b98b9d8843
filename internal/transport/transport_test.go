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

func TestBackoffOnClientErrors(t *testing.T) {
	tests := []struct {
		code string
		kind error
		want bool
	}{
		{"400", ErrBadRequest, true},
		{"404", ErrUnsupported, true},
		{"413", ErrUnsupported, true},
		{"415", ErrUnsupported, true},
		{"429", ErrUnsupported, true},
		{"401", ErrNotClaimed, false},
		{"403", ErrNotClaimed, false},
		{"4.00", ErrBadRequest, true},
		{"4.04", ErrUnsupported, true},
		{"4.13", ErrUnsupported, true},
		{"4.01", ErrNotClaimed, false},
		{"4.03", ErrNotClaimed, false},
		{"500", ErrBusy, true},
		{"2.00", ErrUnsupported, false},
		{"301", ErrUnsupported, false},
		{"201", ErrUnsupported, false},
	}
	for _, tt := range tests {
		err := fmt.Errorf("x: %w", &StatusError{Transport: "t", Op: "fetch", Code: tt.code, Kind: tt.kind})
		if got := Backoff(err); got != tt.want {
			t.Errorf("Backoff(%s): got %v, want %v", tt.code, got, tt.want)
		}
	}
}

func TestFetchStatusError(t *testing.T) {
	const simText = `{"code":400,"message":"rxMaxSize 1024 too small: the next command needs 1349 bytes"}`
	tests := []struct {
		name   string
		code   string
		detail string
		rx     int
		need   int // 0: not an *RxTooSmallError
	}{
		{name: "nrfcloudsim http", code: "400", detail: simText, rx: 1024, need: 1349},
		{name: "nrfcloudsim coap", code: "4.00", detail: "rxMaxSize 256 too small: the next command needs 4321 bytes", rx: 256, need: 4321},
		{name: "other wording", code: "413", detail: "rxMaxSize: command requires at least 5000 bytes", rx: 4096, need: 5000},
		{name: "no size named", code: "400", detail: "rxMaxSize too small", rx: 1024},
		{name: "rxMaxSize not named", code: "400", detail: "the next command needs 1349 bytes", rx: 1024},
		{name: "need not above what was asked", code: "400", detail: "rxMaxSize 1024 too small: needs 1024 bytes", rx: 1024},
		{name: "not a client error", code: "500", detail: simText, rx: 1024},
		{name: "unauthorized", code: "401", detail: simText, rx: 1024},
		{name: "absurd size", code: "400", detail: "rxMaxSize: needs 99999999999 bytes", rx: 1024},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &StatusError{Transport: "t", Op: "fetch", Code: tt.code, Kind: ErrBadRequest, Detail: tt.detail}
			err := FetchStatusError(st, tt.rx)
			var small *RxTooSmallError
			if got := errors.As(err, &small); got != (tt.need > 0) {
				t.Fatalf("FetchStatusError: %v (%T), RxTooSmallError %v, want %v", err, err, got, tt.need > 0)
			}
			if !errors.Is(err, ErrBadRequest) {
				t.Errorf("errors.Is(ErrBadRequest) lost: %v", err)
			}
			if tt.need > 0 && (small.Need != tt.need || small.RxMaxSize != tt.rx || small.Status != st) {
				t.Errorf("got %+v, want Need %d RxMaxSize %d", small, tt.need, tt.rx)
			}
		})
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

func TestStatsAdd(t *testing.T) {
	a := Stats{Handshakes: 1, ResumedHandshakes: 1, Requests: 2, BytesSent: 100, BytesReceived: 200, DatagramsSent: 3, DatagramsReceived: 4}
	b := Stats{Handshakes: 2, Requests: 5, BytesSent: 10, BytesReceived: 20, DatagramsSent: 1}
	want := Stats{Handshakes: 3, ResumedHandshakes: 1, Requests: 7, BytesSent: 110, BytesReceived: 220, DatagramsSent: 4, DatagramsReceived: 4}
	if got := a.Add(b); got != want {
		t.Errorf("Add: got %+v, want %+v", got, want)
	}
	if got := (Stats{}).Add(a); got != a {
		t.Errorf("zero.Add(a): got %+v, want %+v", got, a)
	}
}
