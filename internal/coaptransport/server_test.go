package coaptransport

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/pkg/runner/periodic"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/provisiond/provisiond/internal/transport/transporttest"
)

// request is what the test server saw of one (reassembled) request.
type request struct {
	Method        codes.Code
	Path          string
	Queries       []string
	ContentFormat int // -1 when absent
	Block2        int // the Block2 option's value, -1 when absent
	Body          []byte
}

// reply is a test handler's answer.
type reply struct {
	Code codes.Code
	Body []byte
	// Close makes the server drop the DTLS session instead of answering.
	Close bool
}

// coapServer is an in-process CoAP/DTLS server with one handler per resource.
type coapServer struct {
	ca   *transporttest.CA
	addr string

	mu       sync.Mutex
	handlers map[string]func(request) reply // by path; guarded by mu
	requests []request                      // guarded by mu
	sessions int                            // DTLS sessions accepted; guarded by mu
}

type serverOpts struct {
	cid          bool // give clients a Connection ID
	sessionStore bool // allow resumption
}

func newCoAPServer(t *testing.T, so serverOpts) *coapServer {
	t.Helper()
	s := &coapServer{ca: transporttest.NewCA(t), handlers: map[string]func(request) reply{}}
	s.handlers[authPath] = func(request) reply { return reply{Code: codes.Created} }
	s.handlers[cmdPath] = func(request) reply { return reply{Code: codes.Content} }
	s.handlers[rspPath] = func(request) reply { return reply{Code: codes.Changed} }

	dtlsOpts := []piondtls.ServerOption{
		piondtls.WithCertificates(s.ca.Leaf(t)),
		piondtls.WithLoggerFactory(silentLoggers()),
	}
	if so.cid {
		dtlsOpts = append(dtlsOpts, piondtls.WithConnectionIDGenerator(piondtls.RandomCIDGenerator(8)))
	}
	if so.sessionStore {
		dtlsOpts = append(dtlsOpts, piondtls.WithSessionStore(&sessionStore{m: map[string]piondtls.Session{}}))
	}
	l, err := coapnet.NewDTLSListener("udp", "127.0.0.1:0", coapnet.NewDTLSServerOptions(dtlsOpts...))
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.Addr().String()

	router := mux.NewRouter()
	for _, p := range []string{authPath, cmdPath, rspPath} {
		if err := router.Handle(p, mux.HandlerFunc(s.serve)); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	srv := coapdtls.NewServer(
		options.WithMux(router),
		options.WithErrors(func(error) {}),
		options.WithPeriodicRunner(periodic.New(stop, 50*time.Millisecond)),
		options.WithOnNewConn(func(*udpclient.Conn) {
			s.mu.Lock()
			s.sessions++
			s.mu.Unlock()
		}),
	)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
		close(stop)
	})
	return s
}

func (s *coapServer) serve(w mux.ResponseWriter, r *mux.Message) {
	req := request{Method: r.Code(), ContentFormat: -1, Block2: -1}
	if v, err := r.Options().GetUint32(message.Block2); err == nil {
		req.Block2 = int(v)
	}
	req.Path, _ = r.Path()
	req.Queries, _ = r.Queries()
	if cf, err := r.ContentFormat(); err == nil {
		req.ContentFormat = int(cf)
	}
	if r.Body() != nil {
		req.Body, _ = r.ReadBody()
	}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	h := s.handlers[req.Path]
	s.mu.Unlock()
	rep := h(req)
	if rep.Close {
		_ = w.Conn().Close()
		return
	}
	var body *bytes.Reader
	if rep.Body != nil {
		body = bytes.NewReader(rep.Body)
	}
	if body == nil {
		_ = w.SetResponse(rep.Code, message.TextPlain, nil)
		return
	}
	_ = w.SetResponse(rep.Code, message.AppCBOR, body)
}

func (s *coapServer) handle(path string, h func(request) reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers[path] = h
}

func (s *coapServer) seen() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]request(nil), s.requests...)
}

func (s *coapServer) sessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions
}

func (s *coapServer) port() int { return s.udpAddr().Port }

func (s *coapServer) udpAddr() *net.UDPAddr {
	a, _ := net.ResolveUDPAddr("udp", s.addr)
	return a
}

// target is the server as the shared open-failure cases see it.
func (s *coapServer) target() transporttest.Target {
	return transporttest.Target{Hostname: "127.0.0.1", Port: s.port(), RootCAs: s.ca.Pool(), Timeout: 5 * time.Second}
}

func (s *coapServer) config() Config {
	return Config{Hostname: "127.0.0.1", Port: s.port(), RootCAs: s.ca.Pool(), Timeout: 5 * time.Second}
}

// relay forwards datagrams between clients and a server. It can black-hole traffic, change
// its upstream source port (a NAT rebinding) and records the first byte of every datagram
// it forwards upstream (the DTLS record content type).
type relay struct {
	pc       net.PacketConn
	upstream *net.UDPAddr

	drop atomic.Bool

	mu      sync.Mutex
	client  net.Addr     // last client; guarded by mu
	up      *net.UDPConn // guarded by mu
	upTypes []byte       // guarded by mu
	wg      sync.WaitGroup
	closed  atomic.Bool
}

func newRelay(t *testing.T, upstream *net.UDPAddr) *relay {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{pc: pc, upstream: upstream}
	if err := r.rebind(); err != nil {
		t.Fatal(err)
	}
	r.wg.Add(1)
	go r.down()
	t.Cleanup(r.close)
	return r
}

func (r *relay) port() int { return r.pc.LocalAddr().(*net.UDPAddr).Port }

// rebind opens a new upstream socket, so the server sees the client at a new address.
func (r *relay) rebind() error {
	up, err := net.DialUDP("udp", nil, r.upstream)
	if err != nil {
		return err
	}
	r.mu.Lock()
	old := r.up
	r.up = up
	r.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	r.wg.Add(1)
	go r.upLoop(up)
	return nil
}

// down forwards client → server.
func (r *relay) down() {
	defer r.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, from, err := r.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if r.drop.Load() {
			continue
		}
		r.mu.Lock()
		r.client = from
		up := r.up
		if n > 0 {
			r.upTypes = append(r.upTypes, buf[0])
		}
		r.mu.Unlock()
		_, _ = up.Write(buf[:n])
	}
}

// upLoop forwards server → client for one upstream socket.
func (r *relay) upLoop(up *net.UDPConn) {
	defer r.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, err := up.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ICMP errors on a connected socket
		}
		if r.drop.Load() {
			continue
		}
		r.mu.Lock()
		client := r.client
		r.mu.Unlock()
		if client != nil {
			_, _ = r.pc.WriteTo(buf[:n], client)
		}
	}
}

func (r *relay) contentTypes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.upTypes...)
}

func (r *relay) close() {
	if r.closed.Swap(true) {
		return
	}
	_ = r.pc.Close()
	r.mu.Lock()
	up := r.up
	r.mu.Unlock()
	_ = up.Close()
	r.wg.Wait()
}
