package simcloud

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/pion/logging"
	"github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/pkg/runner/periodic"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// CoAP resource paths (docs/protocol.md §2.2).
const (
	pathAuth     = "/p/auth-jwt"
	pathCommands = "/p/cmd"
	pathResponse = "/p/rsp"
)

// coapIdle closes a DTLS session with no traffic for this long. The device keeps one session
// per attempt and may spend minutes executing a batch between fetch and upload.
const coapIdle = 10 * time.Minute

// newCoAP binds the DTLS listener and builds the CoAP server. The listener authenticates with
// the CA-signed server certificate, does not ask for a client certificate (the device
// authenticates with its JWT), and offers DTLS Connection IDs so a client that advertises
// CID support keeps its session across a NAT rebinding.
func (s *Server) newCoAP() (*coapnet.DTLSListener, *server.Server, error) {
	lf := &logging.DefaultLoggerFactory{
		Writer:          logWriter{s.logf},
		DefaultLogLevel: logging.LogLevelWarn,
		ScopeLevels:     map[string]logging.LogLevel{},
	}
	ln, err := coapnet.NewDTLSListener("udp", s.cfg.CoAPAddr, coapnet.NewDTLSServerOptions(
		s.dtlsCertificate(),
		piondtls.WithConnectionIDGenerator(piondtls.RandomCIDGenerator(8)),
		piondtls.WithLoggerFactory(lf),
	))
	if err != nil {
		return nil, nil, fmt.Errorf("simcloud: listen coap %s: %w", s.cfg.CoAPAddr, err)
	}
	router := mux.NewRouter()
	router.SetErrorHandler(func(err error) { s.logf("simcloud: coap router: %v", err) })
	for path, h := range map[string]mux.HandlerFunc{
		pathAuth:     s.coapAuth,
		pathCommands: s.coapFetch,
		pathResponse: s.coapUpload,
	} {
		if err := router.Handle(path, s.delayCoAP(h)); err != nil {
			ln.Close()
			return nil, nil, fmt.Errorf("simcloud: coap route %s: %w", path, err)
		}
	}
	srv := dtls.NewServer(
		options.WithMux(router),
		// go-coap's default error handler prints to stdout.
		options.WithErrors(func(err error) { s.logf("simcloud: coap: %v", err) }),
		// The default runner's goroutine outlives Stop by seconds; this one ends on Close.
		options.WithPeriodicRunner(periodic.New(s.stop, time.Second)),
		options.WithBlockwise(true, blockwise.SZX1024, 30*time.Second),
		options.WithInactivityMonitor(coapIdle, func(cc *udpclient.Conn) { cc.Close() }),
	)
	return ln, srv, nil
}

// coapAuth serves POST /p/auth-jwt: the payload is the JWT (Content-Format 60 as the device
// sends it, or text/plain). Success binds the DTLS session to the device and answers 2.01
// with Max-Age = session lifetime. Re-authentication on the same session is allowed.
func (s *Server) coapAuth(w mux.ResponseWriter, r *mux.Message) {
	if _, ok := s.coapStart(w, r, codes.POST, OpAuth); !ok {
		return
	}
	body, err := r.ReadBody()
	if err != nil {
		coapError(w, codes.BadRequest, err)
		return
	}
	uuid, err := s.authorize(string(body))
	if err != nil {
		s.logf("simcloud: coap auth: %v", err)
		coapError(w, codes.Unauthorized, err)
		return
	}
	q := coapQueries(r)
	mver, _ := q("mver")
	cver, _ := q("cver")
	cc := w.Conn()
	s.mu.Lock()
	if _, bound := s.sessions[cc]; !bound {
		cc.AddOnClose(func() {
			s.mu.Lock()
			delete(s.sessions, cc)
			s.mu.Unlock()
		})
	}
	s.sessions[cc] = uuid
	if d := s.devices[uuid]; d != nil {
		d.lastSeen = s.now()
		if mver != "" || cver != "" {
			d.mver, d.cver = mver, cver
		}
	}
	s.mu.Unlock()
	if err := w.SetResponse(codes.Created, message.TextPlain, nil); err != nil {
		s.logf("simcloud: coap auth: %v", err)
		return
	}
	w.Message().SetOptionUint32(message.MaxAge, uint32(s.cfg.SessionLifetime/time.Second))
}

// coapFetch serves GET /p/cmd: 2.05 with the CBOR batch, or 2.05 with no payload when
// nothing is queued. go-coap splits a large batch with Block2 at the size the client asks.
func (s *Server) coapFetch(w mux.ResponseWriter, r *mux.Message) {
	uuid, plan, ok := s.coapDevice(w, r, codes.GET, OpFetch)
	if !ok {
		return
	}
	p, err := parseFetchParams(coapQueries(r))
	if err != nil {
		coapError(w, codes.BadRequest, err)
		return
	}
	body, err := s.fetch(uuid, p, plan.batchMode(), func(int) int { return 0 }, 0)
	var small *rxTooSmallError
	switch {
	case errors.As(err, &small):
		coapError(w, codes.BadRequest, err)
		return
	case errors.Is(err, ErrNotClaimed), errors.Is(err, ErrUnknownDevice):
		coapError(w, codes.Unauthorized, err)
		return
	case err != nil:
		coapError(w, codes.InternalServerError, err)
		return
	case len(body) == 0:
		if err := w.SetResponse(codes.Content, message.AppCBOR, nil); err != nil {
			s.logf("simcloud: coap fetch: %v", err)
		}
		return
	}
	if err := w.SetResponse(codes.Content, message.AppCBOR, bytes.NewReader(body)); err != nil {
		s.logf("simcloud: coap fetch: %v", err)
	}
}

// coapUpload serves POST /p/rsp: 2.04 on success, 4.00 for a batch that does not decode.
// go-coap reassembles a Block1 upload before this handler runs.
func (s *Server) coapUpload(w mux.ResponseWriter, r *mux.Message) {
	uuid, _, ok := s.coapDevice(w, r, codes.POST, OpUpload)
	if !ok {
		return
	}
	body, err := r.ReadBody()
	if err != nil {
		coapError(w, codes.BadRequest, err)
		return
	}
	if err := s.upload(uuid, TransportCoAP, body); err != nil {
		code := codes.BadRequest
		if errors.Is(err, ErrNotClaimed) || errors.Is(err, ErrUnknownDevice) {
			code = codes.Unauthorized
		}
		coapError(w, code, err)
		return
	}
	if err := w.SetResponse(codes.Changed, message.TextPlain, nil); err != nil {
		s.logf("simcloud: coap upload: %v", err)
	}
}

// coapStart begins every request: the method, then the faults injected for op. It reports
// whether the handler goes on; if not, the request has been answered, or is left unanswered on
// purpose.
func (s *Server) coapStart(w mux.ResponseWriter, r *mux.Message, method codes.Code, op string) (faultPlan, bool) {
	if r.Code() != method {
		coapError(w, codes.MethodNotAllowed, fmt.Errorf("use %v", method))
		return faultPlan{}, false
	}
	plan := s.takeFaults(TransportCoAP, op)
	return plan, s.coapFaults(w, r, plan)
}

// coapDevice begins a request to a resource behind authentication: coapStart, then the device
// the DTLS session authenticated as (4.01 if none).
func (s *Server) coapDevice(w mux.ResponseWriter, r *mux.Message, method codes.Code, op string) (string, faultPlan, bool) {
	plan, ok := s.coapStart(w, r, method, op)
	if !ok {
		return "", plan, false
	}
	uuid, ok := s.session(w.Conn())
	if !ok {
		coapError(w, codes.Unauthorized, errors.New("not authenticated: POST "+pathAuth+" first"))
	}
	return uuid, plan, ok
}

// session returns the device the DTLS session was authenticated as.
func (s *Server) session(cc mux.Conn) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	uuid, ok := s.sessions[cc]
	return uuid, ok
}

// coapFaults applies the faults a request matched; it reports whether to go on.
func (s *Server) coapFaults(w mux.ResponseWriter, r *mux.Message, p faultPlan) bool {
	if !s.sleep(r.Context(), p.delay) {
		return false // server closing: no answer
	}
	f := p.terminal
	if f == nil {
		return true
	}
	switch f.Kind {
	case FaultBusy, FaultFailUpload, FaultUnauthorized:
		coapError(w, f.coapCode(), fmt.Errorf("injected fault %s", f.Kind))
		return false
	case FaultDrop:
		return false // leaving the response unset sends nothing but the empty ACK
	}
	return true
}

// coapError answers with code and a short diagnostic payload (RFC 7252 §5.5.2).
func coapError(w mux.ResponseWriter, code codes.Code, err error) {
	msg := err.Error()
	if len(msg) > 200 {
		msg = msg[:200]
	}
	_ = w.SetResponse(code, message.TextPlain, strings.NewReader(msg))
}

// coapQueries returns a lookup over the Uri-Query options. Values are taken raw, as the
// device writes them ("after=<id>").
func coapQueries(r *mux.Message) func(string) (string, bool) {
	qs, _ := r.Queries() // no Uri-Query options is not an error here
	return func(k string) (string, bool) {
		for _, q := range qs {
			if name, v, ok := strings.Cut(q, "="); ok && name == k {
				return v, true
			} else if !ok && q == k {
				return "", true
			}
		}
		return "", false
	}
}
