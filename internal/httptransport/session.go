package httptransport

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/provisiond/provisiond/internal/transport"
)

// drainMax bounds reading the rest of a response that is not a batch of commands: draining a
// little more than the diagnostic excerpt lets the keep-alive connection be reused.
const drainMax = 64 << 10

// Session is one provisioning attempt over one keep-alive TLS connection. Fetch and Upload are
// meant to be called from one goroutine, one at a time; Stats may be called from any goroutine.
// Close ends the attempt and must not race with a running Fetch or Upload.
type Session struct {
	t     *Transport
	rt    *http.Transport
	meter transport.Meter

	mu     sync.Mutex
	spare  net.Conn // the connection Open set up, handed to the first dial; guarded by mu
	closed bool     // guarded by mu
}

// dialTLS is the http.Transport's dialer: the connection made by Open first, then a new one
// (counted as another handshake) only if the server dropped it.
func (s *Session) dialTLS(ctx context.Context, _, _ string) (net.Conn, error) {
	s.mu.Lock()
	conn, closed := s.spare, s.closed
	s.spare = nil
	s.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if conn != nil {
		return conn, nil
	}
	return s.t.dialTLS(ctx, &s.meter)
}

// Stats returns what the session has spent so far.
func (s *Session) Stats() transport.Stats { return s.meter.Stats() }

// Close closes the connection. It is safe to call more than once.
func (s *Session) Close() error {
	s.mu.Lock()
	conn := s.spare
	s.spare, s.closed = nil, true
	s.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
	s.rt.CloseIdleConnections()
	return nil
}

// Fetch asks for the next batch of commands (GET /v1/provisioning/commands). It returns the
// CBOR body of a 200 answer, an error matching transport.ErrNoCommands for 204, and otherwise
// a *transport.StatusError (inside a *transport.RxTooSmallError when the service names the
// rxMaxSize the next command needs) or a network error classified by transport.Classify. A
// body larger than req.RxMaxSize is refused with transport.ErrTooLarge without being read to
// its end.
func (s *Session) Fetch(ctx context.Context, req transport.FetchRequest) ([]byte, error) {
	req = req.WithDefaults()
	ctx, cancel := context.WithTimeout(ctx, s.t.cfg.Timeout)
	defer cancel()
	hreq, err := s.newRequest(ctx, http.MethodGet, commandsPath, fetchQuery(req), req.JWT, nil)
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Accept", "application/cbor")
	// net/http can hand back a response that raced in while it was tearing down a cancelled
	// request; ctx is checked again once the body is read, so a caller that has given up never
	// sees a success it no longer waits for.
	resp, err := s.roundTrip(hreq)
	if err != nil {
		return nil, wrapNetErr("fetch", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, transport.FetchStatusError(statusError("fetch", resp), req.RxMaxSize)
	}
	if resp.ContentLength > int64(req.RxMaxSize) {
		// Closing without draining discards the connection; a refused batch ends the
		// attempt anyway, so reading it all just to keep the connection is not worth it.
		return nil, fmt.Errorf("http fetch: body of %d bytes, rxMaxSize %d: %w",
			resp.ContentLength, req.RxMaxSize, transport.ErrTooLarge)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(req.RxMaxSize)+1))
	if err != nil {
		return nil, wrapNetErr("fetch", err)
	}
	if len(body) > req.RxMaxSize {
		return nil, fmt.Errorf("http fetch: body over rxMaxSize %d: %w", req.RxMaxSize, transport.ErrTooLarge)
	}
	if err := ctx.Err(); err != nil {
		return nil, wrapNetErr("fetch", err)
	}
	return body, nil
}

// Upload sends one batch of responses (POST /v1/provisioning/response). Only 200 is success
// (docs/protocol.md §1.3, §12.20): any other status, 201 and 204 included, is a *transport.StatusError.
func (s *Session) Upload(ctx context.Context, req transport.UploadRequest) error {
	ctx, cancel := context.WithTimeout(ctx, s.t.cfg.Timeout)
	defer cancel()
	hreq, err := s.newRequest(ctx, http.MethodPost, responsePath, "", req.JWT, req.Body)
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/cbor")
	hreq.Header.Set("Accept", "*/*")
	resp, err := s.roundTrip(hreq)
	if err != nil {
		return wrapNetErr("upload", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError("upload", resp)
	}
	drain(resp.Body)
	if err := ctx.Err(); err != nil {
		// The service may have stored these results, but a caller that has given up must not
		// be told it may drop them: they stay in the outbox and go up again on the next
		// attempt (docs/design.md, "the durable outbox"), as after any failed upload.
		return wrapNetErr("upload", err)
	}
	return nil
}

func (s *Session) newRequest(ctx context.Context, method, path, rawQuery, jwt string, body []byte) (*http.Request, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("http: %w", ErrClosed)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	target := "https://" + s.t.addr + path
	if rawQuery != "" {
		target += "?" + rawQuery
	}
	hreq, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, fmt.Errorf("http: build request: %w", err)
	}
	// The device sends the bare host name (docs/protocol.md §1.2), whatever the port.
	hreq.Host = s.t.cfg.Hostname
	hreq.Header.Set("Authorization", "Bearer "+jwt)
	hreq.Header.Set("User-Agent", s.t.cfg.UserAgent)
	return hreq, nil
}

// roundTrip sends one request without following redirects: a 3xx is just another
// unexpected status, as for the device.
func (s *Session) roundTrip(req *http.Request) (*http.Response, error) {
	s.meter.Request()
	return s.rt.RoundTrip(req)
}

// fetchQuery builds the query by hand, because the parameter order is part of the wire
// format (docs/protocol.md §1.2) and url.Values would sort it. An empty cursor is sent as "after=".
func fetchQuery(r transport.FetchRequest) string {
	var b strings.Builder
	b.WriteString("after=")
	b.WriteString(escape(r.After))
	b.WriteString("&rxMaxSize=")
	b.WriteString(strconv.Itoa(r.RxMaxSize))
	b.WriteString("&txMaxSize=")
	b.WriteString(strconv.Itoa(r.TxMaxSize))
	b.WriteString("&mver=")
	b.WriteString(escape(r.ModemVersion))
	b.WriteString("&cver=")
	b.WriteString(escape(r.ClientVersion))
	b.WriteString("&limit=")
	b.WriteString(strconv.Itoa(r.Limit))
	return b.String()
}

// escape percent-encodes only what cannot stand raw in a query value. The device inserts values
// unencoded; for the characters real ids and versions use (letters, digits, "-._~:") the bytes
// are the same, and a value holding '&', '=', '#', '+', '%' or a space stays one parameter.
func escape(v string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if isQuerySafe(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

func isQuerySafe(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~:@/!$'()*,;", c) >= 0
}

// statusError maps a non-success status (docs/protocol.md §1.4) and keeps a short, printable
// excerpt of the body for the log.
func statusError(op string, resp *http.Response) *transport.StatusError {
	detail := transport.ReadDetail(resp.Body)
	drain(resp.Body)
	return &transport.StatusError{
		Transport: "http",
		Op:        op,
		Code:      strconv.Itoa(resp.StatusCode),
		Kind:      statusKind(op, resp.StatusCode),
		Detail:    detail,
	}
}

// statusKind is the table of docs/protocol.md §1.4 as the daemon needs it.
func statusKind(op string, code int) error {
	switch code {
	case http.StatusNoContent:
		if op == "fetch" {
			return transport.ErrNoCommands
		}
		return transport.ErrUnsupported
	case http.StatusBadRequest:
		return transport.ErrBadRequest
	case http.StatusUnauthorized:
		return transport.ErrNotClaimed
	case http.StatusForbidden:
		// The device library maps 403 to a generic failure since Oct 2025, but the real service
		// has answered an unclaimed device with 403 "wrong auth credentials" (docs/protocol.md §12.7).
		// Treating it as not claimed shows the owner the attestation token to claim with; if
		// the guess is wrong, the cost is one misleading hint, while the other way round an
		// unclaimed gateway would fail with no hint at all.
		return transport.ErrNotClaimed
	case http.StatusInternalServerError, http.StatusServiceUnavailable:
		// The device backs off on 500 only; 503 means the same thing to any HTTP client, so the
		// host backs off on both, as it does on CoAP 5.00 and 5.03 (docs/design.md).
		return transport.ErrBusy
	default:
		return transport.ErrUnsupported
	}
}

// drain reads what is left of a body, up to a bound, so the connection can be reused.
func drain(r io.Reader) { _, _ = io.Copy(io.Discard, io.LimitReader(r, drainMax)) }

// wrapNetErr prefixes a network failure with its step and, when recognised, its sentinel.
func wrapNetErr(op string, err error) error {
	if kind := transport.Classify(err); kind != nil {
		return fmt.Errorf("http %s: %w: %w", op, kind, err)
	}
	return fmt.Errorf("http %s: %w", op, err)
}
