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
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// Outcomes of a fetch or upload. Transports wrap one of these (usually inside a *StatusError)
// so callers can pick the provisioning event and the retry policy with errors.Is.
var (
	// ErrNoCommands means the service has nothing queued (HTTP 204, CoAP 2.05 with an empty payload).
	ErrNoCommands = errors.New("no commands")
	// ErrNotClaimed means the service does not know the device as claimed (HTTP 401/403,
	// CoAP 4.01/4.03; see the transports for why 403 counts, docs/protocol.md §12.7).
	ErrNotClaimed = errors.New("device not claimed")
	// ErrBadRequest means the service rejected the request (HTTP 400, CoAP 4.00/4.06).
	ErrBadRequest = errors.New("bad request")
	// ErrBusy means the service is overloaded (HTTP 500/503, CoAP 5.00/5.03); back off.
	ErrBusy = errors.New("service busy")
	// ErrUnsupported is any other status the protocol does not expect at this step.
	ErrUnsupported = errors.New("unexpected status")
	// ErrTimeout means no answer arrived within the configured timeout; back off.
	ErrTimeout = errors.New("timed out")
	// ErrWrongRootCA means the server's certificate did not verify against the configured roots.
	ErrWrongRootCA = errors.New("server certificate not trusted")
	// ErrDNS means the service's host name did not resolve.
	ErrDNS = errors.New("host name lookup failed")
	// ErrTooLarge means the answer is larger than the advertised rxMaxSize.
	ErrTooLarge = errors.New("response larger than rxMaxSize")
	// ErrShutdown means the connection closed before a status arrived.
	ErrShutdown = errors.New("connection closed without a status")
	// ErrConnect means no connection or (D)TLS session could be set up for a reason other than
	// DNS, a timeout or an untrusted certificate: refused, unreachable, a TLS alert from the peer.
	ErrConnect = errors.New("connection failed")
)

// StatusError is a protocol status that is not the success code of its step.
type StatusError struct {
	// Transport is "http" or "coap".
	Transport string
	// Op names the step: "auth", "fetch" or "upload".
	Op string
	// Code is the status as the transport writes it: "401", "4.01", "5.03".
	Code string
	// Kind is one of the sentinel errors of this package.
	Kind error
	// Detail is a short excerpt of the body or diagnostic payload, if any.
	Detail string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%s %s: status %s: %v", e.Transport, e.Op, e.Code, e.Kind)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Unwrap lets errors.Is match the Kind sentinel.
func (e *StatusError) Unwrap() error { return e.Kind }

// DetailLen bounds the excerpt of a diagnostic body kept in StatusError.Detail.
const DetailLen = 200

// ReadDetail reads at most DetailLen bytes of a diagnostic body (nil: none) and keeps their
// ASCII printable part, trimmed, for StatusError.Detail: the service's text ends up in the log.
func ReadDetail(body io.Reader) string {
	if body == nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(body, DetailLen))
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, string(b)))
}

// ClientError reports whether the status is a refusal of the request (HTTP 4xx, CoAP 4.xx)
// other than "not authorised" (401/403, 4.01/4.03), which has its own event.
func (e *StatusError) ClientError() bool {
	switch e.Code {
	case "401", "403", "4.01", "4.03":
		return false
	}
	c := e.Code
	if len(c) == 4 && c[1] == '.' { // CoAP "4.04"
		c = c[:1] + c[2:]
	}
	return len(c) == 3 && c[0] == '4' && isDigit(c[1]) && isDigit(c[2])
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// RxTooSmallError means the service refused a fetch because its next command does not fit
// the rxMaxSize asked for, and named the size that would. It wraps the refusal's
// *StatusError, so errors.Is(err, ErrBadRequest) still holds for a 400.
type RxTooSmallError struct {
	// RxMaxSize is the size the refused fetch asked for.
	RxMaxSize int
	// Need is the size the service named, always more than RxMaxSize.
	Need int
	// Status is the refusal.
	Status *StatusError
}

func (e *RxTooSmallError) Error() string { return e.Status.Error() }

// Unwrap exposes the status refusal.
func (e *RxTooSmallError) Unwrap() error { return e.Status }

// rxNeedPattern finds the size a refusal names. nrfcloudsim writes "rxMaxSize 1024 too small:
// the next command needs 1349 bytes"; the wording of the real service is not documented, so
// any "needs / requires [at least] N bytes" in a text that names rxMaxSize counts.
var rxNeedPattern = regexp.MustCompile(`(?i)\b(?:needs?|requires?|required)\s+(?:at\s+least\s+)?(\d{1,9})\s*bytes?\b`)

// FetchStatusError returns st, or st inside an *RxTooSmallError when it is a client error
// whose text names rxMaxSize and a size larger than rxMaxSize, the size the fetch asked for.
func FetchStatusError(st *StatusError, rxMaxSize int) error {
	if !st.ClientError() || !strings.Contains(strings.ToLower(st.Detail), "rxmaxsize") {
		return st
	}
	m := rxNeedPattern.FindStringSubmatch(st.Detail)
	if m == nil {
		return st
	}
	need, err := strconv.Atoi(m[1])
	if err != nil || need <= rxMaxSize {
		return st
	}
	return &RxTooSmallError{RxMaxSize: rxMaxSize, Need: need, Status: st}
}

// Backoff reports whether err is an outcome after which the scheduler backs off instead of
// waiting a normal interval: busy or timeout (as the device library), and any other refusal of
// the request but 401/403. The device retries those every interval for ever; the host backs
// off from what the service keeps refusing.
func Backoff(err error) bool {
	if errors.Is(err, ErrBusy) || errors.Is(err, ErrTimeout) || errors.Is(err, ErrBadRequest) {
		return true
	}
	var st *StatusError
	return errors.As(err, &st) && st.ClientError()
}

// Classify names the sentinel of a network-level failure (not a protocol status): ErrDNS,
// ErrTimeout, ErrWrongRootCA, ErrConnect or ErrShutdown. It returns nil for errors it does not
// recognise and for a cancelled context, which is the caller's decision and not a transport outcome.
// Transports wrap both: fmt.Errorf("http fetch: %w: %w", kind, err).
func Classify(err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return nil
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return ErrDNS
	}
	if isCertError(err) {
		return ErrWrongRootCA
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return ErrTimeout
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return ErrTimeout
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) {
		return ErrShutdown
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) || errors.Is(err, syscall.ECONNREFUSED) {
		return ErrConnect
	}
	var alertErr tls.AlertError
	if errors.As(err, &alertErr) {
		return ErrConnect
	}
	return nil
}

// isCertError reports whether err says the peer's certificate chain did not verify. Both
// crypto/tls and pion/dtls surface the crypto/x509 error types.
func isCertError(err error) bool {
	var (
		unknown   x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		hostname  x509.HostnameError
		verifyErr *tls.CertificateVerificationError
		sysRoots  x509.SystemRootsError
	)
	return errors.As(err, &unknown) || errors.As(err, &invalid) || errors.As(err, &hostname) ||
		errors.As(err, &verifyErr) || errors.As(err, &sysRoots)
}
