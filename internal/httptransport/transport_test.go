package httptransport

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/provisiond/provisiond/internal/transport"
	"github.com/provisiond/provisiond/internal/transport/transporttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testJWT = transporttest.JWT

var fetchReq = transporttest.FetchRequest()

// server is an in-process HTTPS server that counts the TCP connections it accepts.
type server struct {
	*httptest.Server
	mu    sync.Mutex
	conns int
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	t.Helper()
	return newServerTLS(t, h, nil)
}

// newServerTLS starts a server with its own TLS config (certificate, versions).
func newServerTLS(t *testing.T, h http.HandlerFunc, tlsCfg *tls.Config) *server {
	t.Helper()
	s := &server{Server: httptest.NewUnstartedServer(h)}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
		}
	}
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tlsCfg != nil {
		s.TLS = tlsCfg
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func (s *server) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

func (s *server) roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.Certificate())
	return p
}

func (s *server) port(t *testing.T) int {
	t.Helper()
	_, p, err := net.SplitHostPort(s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

func (s *server) config(t *testing.T) Config {
	return Config{Hostname: "127.0.0.1", Port: s.port(t), RootCAs: s.roots(), UserAgent: "provisiond/test"}
}

func open(t *testing.T, cfg Config) *Session {
	t.Helper()
	tr, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return transporttest.Open(t, tr.Open)
}

// openTarget is how the shared open-failure cases reach this transport.
func openTarget(ctx context.Context, tg transporttest.Target) (*Session, error) {
	tr, err := New(Config{Hostname: tg.Hostname, Port: tg.Port, RootCAs: tg.RootCAs, Timeout: tg.Timeout,
		Resolver: tg.Resolver, DialContext: tg.DialContext})
	if err != nil {
		return nil, err
	}
	return tr.Open(ctx)
}

func TestFetchRequestOnTheWire(t *testing.T) {
	tests := []struct {
		name string
		req  transport.FetchRequest
		want string
	}{
		{
			name: "first run sends an empty cursor",
			req:  fetchReq,
			want: "/v1/provisioning/commands?after=&rxMaxSize=1024&txMaxSize=2048&mver=mfw_nrf9161_2.0.1&cver=0.1.0&limit=10",
		},
		{
			name: "cursor and sizes in order",
			req: transport.FetchRequest{After: "c0ffee-42", RxMaxSize: 4096, TxMaxSize: 8192, Limit: 5,
				ModemVersion: "mfw_nrf91x1_2.0.2", ClientVersion: "1.2.3", JWT: testJWT},
			want: "/v1/provisioning/commands?after=c0ffee-42&rxMaxSize=4096&txMaxSize=8192&mver=mfw_nrf91x1_2.0.2&cver=1.2.3&limit=5",
		},
		{
			name: "zero sizes take the device defaults",
			req:  transport.FetchRequest{After: "7", ModemVersion: "m", ClientVersion: "c", JWT: testJWT},
			want: "/v1/provisioning/commands?after=7&rxMaxSize=1024&txMaxSize=2048&mver=m&cver=c&limit=10",
		},
		{
			name: "reserved characters stay inside their parameter",
			req:  transport.FetchRequest{After: "a&b=c d%", RxMaxSize: 1, TxMaxSize: 2, Limit: 3, JWT: testJWT},
			want: "/v1/provisioning/commands?after=a%26b%3Dc%20d%25&rxMaxSize=1&txMaxSize=2&mver=&cver=&limit=3",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got *http.Request
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				got = r.Clone(context.Background())
				w.WriteHeader(http.StatusNoContent)
			})
			s := open(t, srv.config(t))
			_, err := s.Fetch(context.Background(), tt.req)
			if !errors.Is(err, transport.ErrNoCommands) {
				t.Fatalf("Fetch: got %v, want ErrNoCommands", err)
			}
			if got.Method != http.MethodGet {
				t.Errorf("method: got %s, want GET", got.Method)
			}
			if got.RequestURI != tt.want {
				t.Errorf("target:\n got %s\nwant %s", got.RequestURI, tt.want)
			}
			wantHeaders := map[string]string{
				"Accept":          "application/cbor",
				"Authorization":   "Bearer " + testJWT,
				"User-Agent":      "provisiond/test",
				"Accept-Encoding": "",
			}
			for k, v := range wantHeaders {
				if g := got.Header.Get(k); g != v {
					t.Errorf("header %s: got %q, want %q", k, g, v)
				}
			}
			if got.Host != "127.0.0.1" {
				t.Errorf("Host: got %q, want the bare host name", got.Host)
			}
			if got.ProtoMajor != 1 || got.ProtoMinor != 1 {
				t.Errorf("protocol: got %s, want HTTP/1.1", got.Proto)
			}
		})
	}
}

func TestFetchStatusMapping(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   error // nil: success
		detail string
	}{
		{name: "200 returns the body", status: 200, body: "\x81\x84..."},
		{name: "200 with an empty body is handed on", status: 200, body: ""},
		{name: "204 no commands", status: 204, want: transport.ErrNoCommands},
		{name: "400 bad request", status: 400, body: `{"message":"bad"}`, want: transport.ErrBadRequest, detail: `{"message":"bad"}`},
		{name: "401 not claimed", status: 401, want: transport.ErrNotClaimed},
		{name: "403 treated as not claimed", status: 403, body: "wrong auth credentials", want: transport.ErrNotClaimed, detail: "wrong auth credentials"},
		{name: "404 unsupported", status: 404, want: transport.ErrUnsupported},
		{name: "415 unsupported", status: 415, want: transport.ErrUnsupported},
		{name: "500 busy", status: 500, want: transport.ErrBusy},
		{name: "503 busy", status: 503, want: transport.ErrBusy},
		{name: "201 unsupported", status: 201, want: transport.ErrUnsupported},
		{name: "302 is not followed", status: 302, want: transport.ErrUnsupported},
		{name: "detail is cut and cleaned", status: 500, body: "a\x00b\n" + strings.Repeat("x", 500), want: transport.ErrBusy,
			detail: "ab" + strings.Repeat("x", transport.DetailLen-4)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.status == 302 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			})
			s := open(t, srv.config(t))
			got, err := s.Fetch(context.Background(), fetchReq)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Fetch: %v", err)
				}
				if string(got) != tt.body {
					t.Fatalf("body: got %q, want %q", got, tt.body)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Fetch: got %v, want %v", err, tt.want)
			}
			var se *transport.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("Fetch: got %T, want *transport.StatusError", err)
			}
			if se.Code != strconv.Itoa(tt.status) || se.Op != "fetch" || se.Transport != "http" {
				t.Errorf("StatusError: got %+v", se)
			}
			if se.Detail != tt.detail {
				t.Errorf("Detail: got %q, want %q", se.Detail, tt.detail)
			}
		})
	}
}

func TestUpload(t *testing.T) {
	body := []byte{0x81, 0x84, 0x61, 0x31, 0x18, 0x64, 0x00, 0x60}
	tests := []struct {
		name   string
		status int
		want   error
	}{
		{name: "200 success", status: 200},
		{name: "201 is a failure", status: 201, want: transport.ErrUnsupported},
		{name: "204 is a failure", status: 204, want: transport.ErrUnsupported},
		{name: "400 bad request", status: 400, want: transport.ErrBadRequest},
		{name: "401 not claimed", status: 401, want: transport.ErrNotClaimed},
		{name: "500 busy", status: 500, want: transport.ErrBusy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got *http.Request
			var gotBody []byte
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				got = r.Clone(context.Background())
				gotBody, _ = io.ReadAll(r.Body)
				w.WriteHeader(tt.status)
			})
			s := open(t, srv.config(t))
			err := s.Upload(context.Background(), transport.UploadRequest{JWT: testJWT, Body: body})
			if tt.want == nil && err != nil {
				t.Fatalf("Upload: %v", err)
			}
			if tt.want != nil {
				var se *transport.StatusError
				if !errors.Is(err, tt.want) || !errors.As(err, &se) || se.Op != "upload" {
					t.Fatalf("Upload: got %v, want %v in a StatusError", err, tt.want)
				}
			}
			if got.Method != http.MethodPost || got.RequestURI != "/v1/provisioning/response" {
				t.Errorf("request: got %s %s", got.Method, got.RequestURI)
			}
			if ct := got.Header.Get("Content-Type"); ct != "application/cbor" {
				t.Errorf("Content-Type: got %q", ct)
			}
			if a := got.Header.Get("Authorization"); a != "Bearer "+testJWT {
				t.Errorf("Authorization: got %q", a)
			}
			if !bytes.Equal(gotBody, body) {
				t.Errorf("body: got %x, want %x", gotBody, body)
			}
		})
	}
}

// TestOneConnectionPerAttempt is the point of this package: a 3-batch job is one handshake.
func TestOneConnectionPerAttempt(t *testing.T) {
	var mu sync.Mutex
	batches := 3
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Method == http.MethodPost {
			_, _ = io.Copy(io.Discard, r.Body)
			return
		}
		if batches == 0 {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		batches--
		_, _ = w.Write(bytes.Repeat([]byte{0xa5}, 300))
	})
	s := open(t, srv.config(t))
	ctx := context.Background()
	for i := 0; ; i++ {
		_, err := s.Fetch(ctx, fetchReq)
		if errors.Is(err, transport.ErrNoCommands) {
			break
		}
		if err != nil {
			t.Fatalf("Fetch %d: %v", i, err)
		}
		if err := s.Upload(ctx, transport.UploadRequest{JWT: testJWT, Body: []byte{0x80}}); err != nil {
			t.Fatalf("Upload %d: %v", i, err)
		}
	}
	st := s.Stats()
	if st.Handshakes != 1 || st.Requests != 7 {
		t.Errorf("stats: got %d handshakes, %d requests; want 1, 7", st.Handshakes, st.Requests)
	}
	if st.BytesReceived < 900 || st.BytesSent == 0 {
		t.Errorf("stats: bytes sent %d received %d, want the TLS traffic counted", st.BytesSent, st.BytesReceived)
	}
	if n := srv.connCount(); n != 1 {
		t.Errorf("server saw %d connections, want 1", n)
	}
}

func TestTooLarge(t *testing.T) {
	tests := []struct {
		name    string
		size    int
		chunked bool
		want    error
	}{
		{name: "exactly rxMaxSize is accepted", size: 1024},
		{name: "over rxMaxSize by Content-Length", size: 1025, want: transport.ErrTooLarge},
		{name: "far over rxMaxSize by Content-Length", size: 1 << 20, want: transport.ErrTooLarge},
		{name: "over rxMaxSize without Content-Length", size: 64 << 10, chunked: true, want: transport.ErrTooLarge},
		{name: "chunked within rxMaxSize", size: 1000, chunked: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if !tt.chunked {
					w.Header().Set("Content-Length", strconv.Itoa(tt.size))
				}
				for left := tt.size; left > 0; {
					n := min(left, 512)
					if _, err := w.Write(make([]byte, n)); err != nil {
						return
					}
					if tt.chunked {
						w.(http.Flusher).Flush()
					}
					left -= n
				}
			})
			s := open(t, srv.config(t))
			body, err := s.Fetch(context.Background(), fetchReq)
			if tt.want == nil {
				if err != nil || len(body) != tt.size {
					t.Fatalf("Fetch: got %d bytes, %v; want %d bytes", len(body), err, tt.size)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Fetch: got %v, want %v", err, tt.want)
			}
			if st := s.Stats(); st.BytesReceived > 64<<10 && tt.size >= 1<<20 {
				t.Errorf("read %d bytes of a refused %d-byte body", st.BytesReceived, tt.size)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/provisioning/commands" {
			// A slow body: headers go out, the rest never comes.
			w.Header().Set("Content-Length", "10")
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
		}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	tr, err := New(srv.config(t))
	if err != nil {
		t.Fatal(err)
	}
	s := transporttest.Open(t, tr.Open)
	// The short timeout is for the requests only: the handshake under it would fail on a
	// loaded machine, and what is tested here is a server that stops answering.
	tr.cfg.Timeout = 50 * time.Millisecond
	_, err = s.Fetch(context.Background(), fetchReq)
	if !errors.Is(err, transport.ErrTimeout) || !transport.Backoff(err) {
		t.Fatalf("Fetch: got %v, want ErrTimeout", err)
	}
	err = s.Upload(context.Background(), transport.UploadRequest{JWT: testJWT, Body: []byte{0x80}})
	if !errors.Is(err, transport.ErrTimeout) {
		t.Fatalf("Upload: got %v, want ErrTimeout", err)
	}
}

func TestCallerCancelIsNotATimeout(t *testing.T) {
	release := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	s := open(t, srv.config(t))
	ctx := transporttest.CancelInFlight(t, s)
	_, err := s.Fetch(ctx, fetchReq)
	if !errors.Is(err, context.Canceled) || errors.Is(err, transport.ErrTimeout) {
		t.Fatalf("Fetch: got %v, want context.Canceled only", err)
	}
}

func TestOpenFailures(t *testing.T) {
	good := newServer(t, func(http.ResponseWriter, *http.Request) {})
	cases := transporttest.OpenFailures(t, "tcp", transporttest.Target{Hostname: "127.0.0.1", Port: good.port(t), RootCAs: good.roots()})

	// A server that hangs up in the middle of the handshake.
	hangup, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hangup.Close() })
	go func() {
		for {
			c, err := hangup.Accept()
			if err != nil {
				return
			}
			_, _ = c.Read(make([]byte, 10))
			_ = c.Close()
		}
	}()
	cases = append(cases, transporttest.OpenFailure{Name: "hang-up during the handshake", Want: transport.ErrShutdown,
		Target: transporttest.Target{Hostname: "127.0.0.1", Port: hangup.Addr().(*net.TCPAddr).Port, RootCAs: good.roots()}})

	transporttest.RunOpenFailures(t, cases, openTarget)
}

func TestDroppedConnection(t *testing.T) {
	var mu sync.Mutex
	hangUp := true
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		drop := hangUp
		mu.Unlock()
		if drop {
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = c.Close()
			}
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	s := open(t, srv.config(t))
	_, err := s.Fetch(context.Background(), fetchReq)
	if !errors.Is(err, transport.ErrShutdown) {
		t.Fatalf("Fetch on a dropped connection: got %v, want ErrShutdown", err)
	}
	mu.Lock()
	hangUp = false
	mu.Unlock()
	// The next request reconnects on its own, at the price of one more handshake.
	if _, err := s.Fetch(context.Background(), fetchReq); !errors.Is(err, transport.ErrNoCommands) {
		t.Fatalf("Fetch after reconnect: got %v, want ErrNoCommands", err)
	}
	if st := s.Stats(); st.Handshakes != 2 {
		t.Errorf("handshakes: got %d, want 2", st.Handshakes)
	}
}

func TestServerClosesIdleConnection(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		// "Connection: close" from the server: the next request needs a new connection.
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusOK)
	})
	s := open(t, srv.config(t))
	for i := range 2 {
		if err := s.Upload(context.Background(), transport.UploadRequest{JWT: testJWT, Body: []byte{0x80}}); err != nil {
			t.Fatalf("Upload %d: %v", i, err)
		}
	}
	if st := s.Stats(); st.Handshakes != 2 || srv.connCount() != 2 {
		t.Errorf("got %d handshakes, %d server connections; want 2, 2", st.Handshakes, srv.connCount())
	}
}

func TestSessionResumptionAcrossAttempts(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	tr, err := New(srv.config(t))
	if err != nil {
		t.Fatal(err)
	}
	resumed := transporttest.ResumedOver(t, 3, tr.Open)
	if resumed != 2 {
		t.Errorf("resumed handshakes over 3 attempts: got %d, want 2", resumed)
	}
}

func TestClosedSession(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	transporttest.CheckClosed(t, open(t, srv.config(t)), ErrClosed)
}

func TestNew(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	caFile := transporttest.CertFile(t, srv.Certificate())
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("defaults", func(t *testing.T) {
		tr, err := New(Config{})
		if err != nil {
			t.Fatal(err)
		}
		got := tr.Config()
		if got.Hostname != DefaultHostname || got.Port != 443 || got.Timeout != 30*time.Second || got.UserAgent != DefaultUserAgent {
			t.Errorf("defaults: got %+v", got)
		}
		if tr.tls.MinVersion != tls.VersionTLS12 || tr.tls.InsecureSkipVerify {
			t.Errorf("tls: min version %x, skip verify %v", tr.tls.MinVersion, tr.tls.InsecureSkipVerify)
		}
	})
	t.Run("ca file is used", func(t *testing.T) {
		cfg := srv.config(t)
		cfg.RootCAs, cfg.CAFile = nil, caFile
		s := open(t, cfg)
		if _, err := s.Fetch(context.Background(), fetchReq); !errors.Is(err, transport.ErrNoCommands) {
			t.Fatalf("Fetch: %v", err)
		}
	})
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{name: "missing ca file", cfg: Config{CAFile: filepath.Join(dir, "nope.pem")}},
		{name: "ca file without certificates", cfg: Config{CAFile: junk}},
		{name: "port out of range", cfg: Config{Port: 70000}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil {
				t.Fatal("New accepted a bad config")
			}
		})
	}
}

func TestIssuedByConfiguredRoot(t *testing.T) {
	ca := transporttest.NewCA(t)
	srv := newServerTLS(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) },
		&tls.Config{Certificates: []tls.Certificate{ca.Leaf(t)}})
	cfg := srv.config(t)
	cfg.RootCAs = ca.Pool()
	s := open(t, cfg)
	if _, err := s.Fetch(context.Background(), fetchReq); !errors.Is(err, transport.ErrNoCommands) {
		t.Fatalf("Fetch: got %v, want ErrNoCommands", err)
	}
}

func TestOldTLSRefused(t *testing.T) {
	srv := newServerTLS(t, func(http.ResponseWriter, *http.Request) {}, &tls.Config{MaxVersion: tls.VersionTLS11})
	tr, err := New(srv.config(t))
	if err != nil {
		t.Fatal(err)
	}
	if s, err := tr.Open(context.Background()); err == nil {
		_ = s.Close()
		t.Fatal("Open accepted TLS 1.1")
	}
}

func TestEscape(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{"abc-DEF_0.9~", "abc-DEF_0.9~"},
		{"2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z"},
		{"a b+c", "a%20b%2Bc"},
		{"é", "%C3%A9"},
		{"#?", "%23%3F"},
	} {
		if got := escape(tt.in); got != tt.want {
			t.Errorf("escape(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}
