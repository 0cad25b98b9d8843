package coaptransport

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"go.uber.org/goleak"

	"github.com/provisiond/provisiond/internal/rootca"
	"github.com/provisiond/provisiond/internal/transport"
	"github.com/provisiond/provisiond/internal/transport/transporttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testJWT = transporttest.JWT

var fetchReq = transporttest.FetchRequest()

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

func TestRoundOnTheWire(t *testing.T) {
	srv := newCoAPServer(t, serverOpts{})
	batch := []byte{0x81, 0x84, 0x61, 0x31, 0x00, 0x62, 0x41, 0x54}
	srv.handle(cmdPath, func(request) reply { return reply{Code: codes.Content, Body: batch} })
	s := open(t, srv.config())
	ctx := context.Background()

	req := fetchReq
	req.After = "c0ffee-42"
	got, err := s.Fetch(ctx, req)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if !bytes.Equal(got, batch) {
		t.Fatalf("Fetch: got %x, want %x", got, batch)
	}
	resp := []byte{0x81, 0x84, 0x61, 0x31, 0x18, 0x64, 0x00, 0x60}
	if err := s.Upload(ctx, transport.UploadRequest{JWT: testJWT, Body: resp}); err != nil {
		t.Fatalf("Upload: %v", err)
	}

	want := []request{
		{Method: codes.POST, Path: "/p/auth-jwt", Queries: []string{"mver=mfw_nrf9161_2.0.1", "cver=0.1.0"},
			ContentFormat: int(message.AppCBOR), Block2: -1, Body: []byte(testJWT)},
		// Block2 NUM=0 M=0 SZX=6 (1024 bytes): the device's preferred block size.
		{Method: codes.GET, Path: "/p/cmd", Queries: []string{"after=c0ffee-42", "rxMaxSize=1024", "txMaxSize=2048", "limit=10"},
			ContentFormat: -1, Block2: 6},
		{Method: codes.POST, Path: "/p/rsp", ContentFormat: int(message.AppCBOR), Block2: -1, Body: resp},
	}
	if seen := srv.seen(); !reflect.DeepEqual(seen, want) {
		t.Errorf("requests:\n got %+v\nwant %+v", seen, want)
	}
	st := s.Stats()
	if st.Handshakes != 1 || st.Requests != 3 || st.BytesSent == 0 || st.DatagramsSent < 6 || st.DatagramsReceived < 6 {
		t.Errorf("stats: got %+v", st)
	}
}

func TestEmptyCursorIsSent(t *testing.T) {
	srv := newCoAPServer(t, serverOpts{})
	s := open(t, srv.config())
	if _, err := s.Fetch(context.Background(), transport.FetchRequest{JWT: testJWT}); !errors.Is(err, transport.ErrNoCommands) {
		t.Fatalf("Fetch: got %v, want ErrNoCommands", err)
	}
	seen := srv.seen()
	want := [][]string{{"mver=", "cver="}, {"after=", "rxMaxSize=1024", "txMaxSize=2048", "limit=10"}}
	for i, w := range want {
		if !reflect.DeepEqual(seen[i].Queries, w) {
			t.Errorf("request %d queries: got %q, want %q", i, seen[i].Queries, w)
		}
	}
}

func TestCodeMapping(t *testing.T) {
	type step int
	const (
		auth step = iota
		fetch
		upload
	)
	tests := []struct {
		name   string
		step   step
		code   codes.Code
		body   []byte
		want   error // nil: success
		detail string
	}{
		{name: "auth 4.01 not claimed", step: auth, code: codes.Unauthorized, want: transport.ErrNotClaimed},
		{name: "auth 4.03 treated as not claimed", step: auth, code: codes.Forbidden, want: transport.ErrNotClaimed},
		{name: "auth 4.00 bad request", step: auth, code: codes.BadRequest, body: []byte("bad jwt"), want: transport.ErrBadRequest, detail: "bad jwt"},
		{name: "auth 4.06 bad request", step: auth, code: codes.NotAcceptable, want: transport.ErrBadRequest},
		{name: "auth 4.04 unsupported", step: auth, code: codes.NotFound, want: transport.ErrUnsupported},
		{name: "auth 5.00 busy", step: auth, code: codes.InternalServerError, want: transport.ErrBusy},
		{name: "auth 5.03 busy", step: auth, code: codes.ServiceUnavailable, want: transport.ErrBusy},
		{name: "auth 2.04 is the wrong success", step: auth, code: codes.Changed, want: transport.ErrUnsupported},
		{name: "fetch 2.05 with payload", step: fetch, code: codes.Content, body: []byte{0x80}},
		{name: "fetch 2.05 empty means no commands", step: fetch, code: codes.Content, want: transport.ErrNoCommands, detail: "empty payload"},
		{name: "fetch 4.01 not claimed", step: fetch, code: codes.Unauthorized, want: transport.ErrNotClaimed},
		{name: "fetch 5.03 busy", step: fetch, code: codes.ServiceUnavailable, want: transport.ErrBusy},
		{name: "fetch 2.01 is the wrong success", step: fetch, code: codes.Created, want: transport.ErrUnsupported},
		{name: "fetch 2.00 unsupported", step: fetch, code: codes.Code(64), want: transport.ErrUnsupported},
		{name: "upload 2.04 success", step: upload, code: codes.Changed},
		{name: "upload 2.01 is the wrong success", step: upload, code: codes.Created, want: transport.ErrUnsupported},
		{name: "upload 4.00 bad request", step: upload, code: codes.BadRequest, want: transport.ErrBadRequest},
		{name: "upload 5.00 busy", step: upload, code: codes.InternalServerError, want: transport.ErrBusy},
	}
	paths := map[step]string{auth: authPath, fetch: cmdPath, upload: rspPath}
	ops := map[step]string{auth: "auth", fetch: "fetch", upload: "upload"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newCoAPServer(t, serverOpts{})
			srv.handle(paths[tt.step], func(request) reply { return reply{Code: tt.code, Body: tt.body} })
			s := open(t, srv.config())
			var err error
			switch tt.step {
			case auth, fetch:
				var got []byte
				got, err = s.Fetch(context.Background(), fetchReq)
				if err == nil && !bytes.Equal(got, tt.body) {
					t.Fatalf("Fetch: got %x, want %x", got, tt.body)
				}
			case upload:
				err = s.Upload(context.Background(), transport.UploadRequest{JWT: testJWT, Body: []byte{0x80}})
			}
			if tt.want == nil {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				return
			}
			var se *transport.StatusError
			if !errors.Is(err, tt.want) || !errors.As(err, &se) {
				t.Fatalf("got %v, want %v in a StatusError", err, tt.want)
			}
			if se.Transport != "coap" || se.Op != ops[tt.step] || se.Code != codeString(tt.code) || se.Detail != tt.detail {
				t.Errorf("StatusError: got %+v", se)
			}
		})
	}
}

func TestAuthentication(t *testing.T) {
	srv := newCoAPServer(t, serverOpts{})
	srv.handle(cmdPath, func(request) reply { return reply{Code: codes.Content, Body: []byte{0x80}} })
	s := open(t, srv.config())
	ctx := context.Background()
	steps := []struct {
		name string
		do   func() error
		want []string // paths the step puts on the wire
	}{
		{name: "a pending outbox goes first and authenticates with its own versions",
			do: func() error {
				return s.Upload(ctx, transport.UploadRequest{JWT: "jwt-1", Body: []byte{0x80}, ModemVersion: "m1", ClientVersion: "c1"})
			},
			want: []string{"/p/auth-jwt mver=m1 cver=c1", "/p/rsp"}},
		{name: "every round re-authenticates",
			do:   func() error { _, err := s.Fetch(ctx, fetchReq); return err },
			want: []string{"/p/auth-jwt mver=mfw_nrf9161_2.0.1 cver=0.1.0", "/p/cmd"}},
		{name: "an upload with the accepted JWT does not",
			do:   func() error { return s.Upload(ctx, transport.UploadRequest{JWT: testJWT, Body: []byte{0x80}}) },
			want: []string{"/p/rsp"}},
		{name: "a new JWT is authenticated with the last versions",
			do:   func() error { return s.Upload(ctx, transport.UploadRequest{JWT: "jwt-2", Body: []byte{0x80}}) },
			want: []string{"/p/auth-jwt mver=mfw_nrf9161_2.0.1 cver=0.1.0", "/p/rsp"}},
	}
	for _, st := range steps {
		before := len(srv.seen())
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		var got []string
		for _, r := range srv.seen()[before:] {
			line := r.Path
			if r.Path == authPath {
				for _, q := range r.Queries {
					line += " " + q
				}
			}
			got = append(got, line)
		}
		if !reflect.DeepEqual(got, st.want) {
			t.Errorf("%s:\n got %q\nwant %q", st.name, got, st.want)
		}
	}
	if n := s.Stats().Handshakes; n != 1 {
		t.Errorf("handshakes: got %d, want 1", n)
	}
}

func TestFailedAuthIsRepeated(t *testing.T) {
	srv := newCoAPServer(t, serverOpts{})
	var busy atomic.Bool
	busy.Store(true)
	srv.handle(authPath, func(request) reply {
		if busy.Load() {
			return reply{Code: codes.ServiceUnavailable}
		}
		return reply{Code: codes.Created}
	})
	s := open(t, srv.config())
	ctx := context.Background()
	if _, err := s.Fetch(ctx, fetchReq); !errors.Is(err, transport.ErrBusy) {
		t.Fatalf("Fetch: got %v, want ErrBusy", err)
	}
	busy.Store(false)
	// The JWT was refused, so the upload must authenticate again.
	if err := s.Upload(ctx, transport.UploadRequest{JWT: testJWT, Body: []byte{0x80}}); err != nil {
		t.Fatalf("Upload: %v", err)
	}
	if seen := srv.seen(); len(seen) != 3 || seen[1].Path != authPath {
		t.Errorf("requests: got %+v, want auth, auth, rsp", seen)
	}
}

func TestBlockwise(t *testing.T) {
	srv := newCoAPServer(t, serverOpts{})
	big := bytes.Repeat([]byte("0123456789abcdef"), 200) // 3200 bytes
	srv.handle(cmdPath, func(request) reply { return reply{Code: codes.Content, Body: big} })
	cfg := srv.config()
	cfg.BlockSize = 256
	s := open(t, cfg)
	ctx := context.Background()

	// 3200 bytes in 256-byte blocks is 13 exchanges: the server uses the block size the GET
	// asks for, and the client splits its upload the same way.
	const blocks = 13
	req := fetchReq
	req.RxMaxSize = 4096
	before := s.Stats().DatagramsSent
	got, err := s.Fetch(ctx, req)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if !bytes.Equal(got, big) {
		t.Fatalf("Fetch: got %d bytes, want the %d-byte batch reassembled", len(got), len(big))
	}
	if n := s.Stats().DatagramsSent - before; n != 1+blocks {
		t.Errorf("datagrams sent for auth and Block2 fetch: got %d, want %d", n, 1+blocks)
	}
	before = s.Stats().DatagramsSent
	if err := s.Upload(ctx, transport.UploadRequest{JWT: testJWT, Body: big}); err != nil {
		t.Fatalf("Upload: %v", err)
	}
	if n := s.Stats().DatagramsSent - before; n != blocks {
		t.Errorf("datagrams sent for the Block1 upload: got %d, want %d", n, blocks)
	}
	seen := srv.seen()
	if last := seen[len(seen)-1]; last.Path != rspPath || !bytes.Equal(last.Body, big) {
		t.Errorf("upload: server got %d bytes, want %d", len(last.Body), len(big))
	}

	req.RxMaxSize = 3199
	if _, err := s.Fetch(ctx, req); !errors.Is(err, transport.ErrTooLarge) {
		t.Fatalf("Fetch over rxMaxSize: got %v, want ErrTooLarge", err)
	}
}

// A service that streams a huge Block2 response must not make the client ask for (and hold)
// block after block: the fetch ends at the receive buffer.
func TestBlock2ReassemblyCapped(t *testing.T) {
	srv := newCoAPServer(t, serverOpts{})
	huge := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB: 256 blocks of 256 bytes
	srv.handle(cmdPath, func(request) reply { return reply{Code: codes.Content, Body: huge} })
	cfg := srv.config()
	cfg.BlockSize = 256
	s := open(t, cfg)
	req := fetchReq
	req.RxMaxSize = 1024
	before := s.Stats().DatagramsSent
	if _, err := s.Fetch(context.Background(), req); !errors.Is(err, transport.ErrTooLarge) {
		t.Fatalf("Fetch: got %v, want ErrTooLarge", err)
	}
	// The auth, then one GET per block: 1024 bytes are 4 blocks and the 5th goes past them.
	// Without the cap all 256 blocks are asked for and held.
	if n := s.Stats().DatagramsSent - before; n > 1+5 {
		t.Errorf("the client sent %d datagrams, want at most 6 for a 1024-byte receive buffer", n)
	}
	// The session stays usable.
	srv.handle(cmdPath, func(request) reply { return reply{Code: codes.Content, Body: huge[:1000]} })
	if got, err := s.Fetch(context.Background(), req); err != nil || len(got) != 1000 {
		t.Fatalf("Fetch after the refusal: %d bytes, %v", len(got), err)
	}
}

func TestOpenFailures(t *testing.T) {
	srv := newCoAPServer(t, serverOpts{})
	transporttest.RunOpenFailures(t, transporttest.OpenFailures(t, "udp", srv.target()), openTarget)
}

func TestOpenCancelled(t *testing.T) {
	hole, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hole.Close() })
	tr, err := New(Config{Hostname: "127.0.0.1", Port: hole.LocalAddr().(*net.UDPAddr).Port})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		buf := make([]byte, 2048)
		_, _, _ = hole.ReadFrom(buf) // the ClientHello is on its way
		cancel()
	}()
	_, err = tr.Open(ctx)
	if !errors.Is(err, context.Canceled) || errors.Is(err, transport.ErrTimeout) {
		t.Fatalf("Open: got %v, want context.Canceled only", err)
	}
}

func TestRequestTimeout(t *testing.T) {
	srv := newCoAPServer(t, serverOpts{})
	r := newRelay(t, srv.udpAddr())
	cfg := srv.config()
	cfg.Port = r.port()
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := transporttest.Open(t, tr.Open)
	// The short timeout is for the request only: the handshake under it would fail on a
	// loaded machine, and what is tested here is a server that stops answering.
	tr.cfg.Timeout = 300 * time.Millisecond
	r.drop.Store(true)
	_, err = s.Fetch(context.Background(), fetchReq)
	if !errors.Is(err, transport.ErrTimeout) || !transport.Backoff(err) {
		t.Fatalf("Fetch: got %v, want ErrTimeout", err)
	}
	if st := s.Stats(); st.DatagramsSent < 3 {
		t.Errorf("datagrams sent: got %d, want the request retransmitted", st.DatagramsSent)
	}
}

func TestCallerCancel(t *testing.T) {
	srv := newCoAPServer(t, serverOpts{})
	r := newRelay(t, srv.udpAddr())
	cfg := srv.config()
	cfg.Port = r.port()
	s := open(t, cfg)
	r.drop.Store(true)
	ctx := transporttest.CancelInFlight(t, s)
	_, err := s.Fetch(ctx, fetchReq)
	if !errors.Is(err, context.Canceled) || errors.Is(err, transport.ErrTimeout) {
		t.Fatalf("Fetch: got %v, want context.Canceled only", err)
	}
}

func TestServerDropsSession(t *testing.T) {
	srv := newCoAPServer(t, serverOpts{})
	srv.handle(cmdPath, func(request) reply { return reply{Close: true} })
	s := open(t, srv.config())
	_, err := s.Fetch(context.Background(), fetchReq)
	if !errors.Is(err, transport.ErrShutdown) {
		t.Fatalf("Fetch: got %v, want ErrShutdown", err)
	}
}

func TestConnectionID(t *testing.T) {
	const (
		appData = 23 // DTLS record content types
		cidData = 25
	)
	tests := []struct {
		name    string
		disable bool
		want    byte
	}{
		{name: "offered by default, so records carry the server's CID", want: cidData},
		{name: "disabled", disable: true, want: appData},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newCoAPServer(t, serverOpts{cid: true})
			r := newRelay(t, srv.udpAddr())
			cfg := srv.config()
			cfg.Port = r.port()
			cfg.DisableConnectionID = tt.disable
			s := open(t, cfg)
			if _, err := s.Fetch(context.Background(), fetchReq); !errors.Is(err, transport.ErrNoCommands) {
				t.Fatalf("Fetch: %v", err)
			}
			types := r.contentTypes()
			if last := types[len(types)-1]; last != tt.want {
				t.Fatalf("content type of the last record: got %d, want %d (all: %v)", last, tt.want, types)
			}
		})
	}
}

func TestNATRebindingWithCID(t *testing.T) {
	srv := newCoAPServer(t, serverOpts{cid: true})
	r := newRelay(t, srv.udpAddr())
	cfg := srv.config()
	cfg.Port = r.port()
	s := open(t, cfg)
	ctx := context.Background()
	if _, err := s.Fetch(ctx, fetchReq); !errors.Is(err, transport.ErrNoCommands) {
		t.Fatalf("Fetch: %v", err)
	}
	if err := r.rebind(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Fetch(ctx, fetchReq); !errors.Is(err, transport.ErrNoCommands) {
		t.Fatalf("Fetch after the client's address changed: %v", err)
	}
	if n := srv.sessionCount(); n != 1 {
		t.Errorf("server sessions: got %d, want 1", n)
	}
}

func TestSessionResumption(t *testing.T) {
	tests := []struct {
		name  string
		cache bool
		want  int // resumed handshakes over three attempts
	}{
		{name: "cache on", cache: true, want: 2},
		{name: "cache off", cache: false, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newCoAPServer(t, serverOpts{sessionStore: true})
			cfg := srv.config()
			cfg.SessionCache = tt.cache
			tr, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			resumed := transporttest.ResumedOver(t, 3, tr.Open)
			if resumed != tt.want {
				t.Errorf("resumed handshakes: got %d, want %d", resumed, tt.want)
			}
		})
	}
}

func TestCloseLeavesNothingBehind(t *testing.T) {
	srv := newCoAPServer(t, serverOpts{})
	// Open a first session so that the server's per-client goroutines exist before the snapshot.
	warm := open(t, srv.config())
	if _, err := warm.Fetch(context.Background(), fetchReq); !errors.Is(err, transport.ErrNoCommands) {
		t.Fatal(err)
	}
	_ = warm.Close()
	opt := goleak.IgnoreCurrent()

	tr, err := New(srv.config())
	if err != nil {
		t.Fatal(err)
	}
	s, err := tr.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Fetch(context.Background(), fetchReq); !errors.Is(err, transport.ErrNoCommands) {
		t.Fatal(err)
	}
	transporttest.CheckClosed(t, s, ErrClosed)
	goleak.VerifyNone(t, opt)
}

// TestNothingOnStdout runs a session through a dropped session and a handshake failure, which
// go-coap would print on stdout and pion on stderr with their default settings.
func TestNothingOnStdout(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = w, w
	restore := func() { os.Stdout, os.Stderr = stdout, stderr }
	defer restore()

	srv := newCoAPServer(t, serverOpts{})
	srv.handle(cmdPath, func(request) reply { return reply{Close: true} })
	var reported atomic.Int64
	cfg := srv.config()
	cfg.OnError = func(error) { reported.Add(1) }
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := tr.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = s.Fetch(context.Background(), fetchReq)
	_ = s.Close()
	cfg.RootCAs = transporttest.NewCA(t).Pool()
	if tr, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Open(context.Background()); err == nil {
		t.Fatal("Open with the wrong roots succeeded")
	}

	restore()
	_ = w.Close()
	out := make([]byte, 4096)
	n, _ := r.Read(out)
	_ = r.Close()
	if n > 0 {
		t.Errorf("stdout/stderr: got %q, want nothing", out[:n])
	}
	t.Logf("errors reported through OnError: %d", reported.Load())
}

func TestNew(t *testing.T) {
	dir := t.TempDir()

	t.Run("defaults", func(t *testing.T) {
		tr, err := New(Config{})
		if err != nil {
			t.Fatal(err)
		}
		got := tr.Config()
		if got.Hostname != DefaultHostname || got.Port != 5684 || got.Timeout != 30*time.Second ||
			got.BlockSize != 1024 || got.SessionCache || got.DisableConnectionID {
			t.Errorf("defaults: got %+v", got)
		}
		if tr.addr != "coap.nrfcloud.com:5684" {
			t.Errorf("address: got %s", tr.addr)
		}
	})
	t.Run("default roots are the nRF Cloud CoAP root", func(t *testing.T) {
		tr, err := New(Config{})
		if err != nil {
			t.Fatal(err)
		}
		want := x509.NewCertPool()
		if !want.AppendCertsFromPEM([]byte(rootca.NRFCloudCoAP)) {
			t.Fatal("rootca.NRFCloudCoAP: no certificate")
		}
		if !tr.roots.Equal(want) {
			t.Error("default roots are not exactly rootca.NRFCloudCoAP")
		}
	})
	t.Run("ca file is used", func(t *testing.T) {
		srv := newCoAPServer(t, serverOpts{})
		cfg := srv.config()
		cfg.RootCAs, cfg.CAFile = nil, transporttest.CertFile(t, srv.ca.Cert)
		if _, err := open(t, cfg).Fetch(context.Background(), fetchReq); !errors.Is(err, transport.ErrNoCommands) {
			t.Fatalf("Fetch: got %v, want ErrNoCommands", err)
		}
	})
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{name: "missing ca file", cfg: Config{CAFile: filepath.Join(dir, "nope.pem")}},
		{name: "port out of range", cfg: Config{Port: -1}},
		{name: "block size not a power of two", cfg: Config{BlockSize: 1000}},
		{name: "block size too large", cfg: Config{BlockSize: 2048}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil {
				t.Fatal("New accepted a bad config")
			}
		})
	}
}

// TestWrongRootCARepeated: the server's certificate is from another CA. pion/dtls may end
// such a handshake with the server's answer to the client's alert (a DecodeError alert; with
// Connection IDs on, most handshakes do) rather than the x509 error; Open must say
// ErrWrongRootCA every time all the same.
func TestWrongRootCARepeated(t *testing.T) {
	srv := newCoAPServer(t, serverOpts{cid: true})
	cfg := srv.config()
	cfg.RootCAs = transporttest.NewCA(t).Pool()
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		s, err := tr.Open(context.Background())
		if err == nil {
			_ = s.Close()
			t.Fatalf("handshake %d: Open succeeded with the roots of another CA", i)
		}
		if !errors.Is(err, transport.ErrWrongRootCA) {
			t.Fatalf("handshake %d: Open: got %v, want ErrWrongRootCA", i, err)
		}
	}
}
