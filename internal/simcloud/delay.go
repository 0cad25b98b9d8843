package simcloud

import (
	"context"
	"crypto/tls"
	"net/http"
	"slices"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/mux"
)

// Round trips of a full handshake, counted from the first packet the client sends until it
// can send its first request: TCP (1) + TLS 1.3 (1) or TLS 1.2 (2); DTLS 1.2 with the
// HelloVerifyRequest cookie exchange (1) + the two flights of the handshake (2). See
// docs/simulators.md, "Network delay".
const (
	rttTLS13Handshake = 2
	rttTLS12Handshake = 3
	rttDTLSHandshake  = 3
)

// requestDelay is what one request costs the client beyond its bytes: a round trip and the
// service's processing time.
func (s *Server) requestDelay() time.Duration { return s.cfg.RTT + s.cfg.Processing }

// pause sleeps d unless ctx ends first.
func pause(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// delayHTTP holds every HTTPS request for requestDelay before it is served.
func (s *Server) delayHTTP(next http.Handler) http.Handler {
	if s.requestDelay() <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pause(r.Context(), s.requestDelay())
		next.ServeHTTP(w, r)
	})
}

// delayCoAP holds every CoAP request for requestDelay before it is served.
func (s *Server) delayCoAP(next mux.HandlerFunc) mux.HandlerFunc {
	if s.requestDelay() <= 0 {
		return next
	}
	return func(w mux.ResponseWriter, r *mux.Message) {
		pause(r.Context(), s.requestDelay())
		next(w, r)
	}
}

// delayTLSHandshake adds the handshake's round trips (rttTLS13Handshake or rttTLS12Handshake,
// by what the client offers) once per TLS handshake, when the server reads the ClientHello.
func (s *Server) delayTLSHandshake(cfg *tls.Config) *tls.Config {
	if s.cfg.RTT <= 0 {
		return cfg
	}
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		n := rttTLS12Handshake
		if slices.Contains(hello.SupportedVersions, tls.VersionTLS13) {
			n = rttTLS13Handshake
		}
		pause(hello.Context(), time.Duration(n)*s.cfg.RTT)
		return nil, nil
	}
	return cfg
}

// dtlsCertificate is the DTLS server's certificate option: with an RTT, the certificate is
// handed out through a callback that first waits rttDTLSHandshake round trips, once per
// handshake (pion asks for it when it answers the cookie-bearing ClientHello).
func (s *Server) dtlsCertificate() piondtls.ServerOption {
	if s.cfg.RTT <= 0 {
		return piondtls.WithCertificates(s.ca.server)
	}
	cert := s.ca.server
	return piondtls.WithGetCertificate(func(*piondtls.ClientHelloInfo) (*tls.Certificate, error) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-s.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		pause(ctx, time.Duration(rttDTLSHandshake)*s.cfg.RTT)
		return &cert, nil
	})
}
