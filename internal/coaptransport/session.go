package coaptransport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	coapconfig "github.com/plgd-dev/go-coap/v3/options/config"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/provisiond/provisiond/internal/transport"
)

// Resource paths (docs/protocol.md §2.2).
const (
	authPath = "/p/auth-jwt"
	cmdPath  = "/p/cmd"
	rspPath  = "/p/rsp"
)

const (
	// tick drives go-coap's retransmissions and expirations; its default runner sleeps 4 s
	// between checks and outlives Close.
	tick = 100 * time.Millisecond
	// closeWait bounds how long Close waits for the CoAP reader to stop.
	closeWait = 5 * time.Second
)

// Session is one DTLS session for one provisioning attempt. Fetch and Upload are meant to be
// called from one goroutine, one at a time; Stats may be called from any goroutine. Close
// ends the session, stops every goroutine it started and must not race with a running request.
type Session struct {
	t     *Transport
	cc    *udpclient.Conn
	meter transport.Meter

	stop      chan struct{} // closed by Close; ends the periodic runner
	wg        sync.WaitGroup
	closeOnce sync.Once
	closed    atomic.Bool

	// rxLimit bounds the reassembled Block2 payload of the fetch in progress (0: none), and
	// abort ends that fetch; set by Fetch, read by the CoAP reader goroutine (capBlock2).
	rxLimit atomic.Int64
	abort   atomic.Pointer[context.CancelCauseFunc]

	// Owned by the goroutine calling Fetch/Upload.
	authJWT    string // the JWT the service accepted last on this session, "" if none
	mver, cver string // as sent on the last authentication
}

// runner is go-coap's periodic runner: one goroutine per session, stopped by Close.
func (s *Session) runner(f func(now time.Time) bool) {
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case now := <-t.C:
				if !f(now) {
					return
				}
			}
		}
	}()
}

func (s *Session) onError(err error) {
	if s.t.cfg.OnError != nil {
		s.t.cfg.OnError(err)
	}
}

// Stats returns what the session has spent so far.
func (s *Session) Stats() transport.Stats { return s.meter.Stats() }

// Close sends close_notify, closes the socket and waits for the session's goroutines.
// It is safe to call more than once.
func (s *Session) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		err = s.cc.Close()
		select {
		case <-s.cc.Done():
		case <-time.After(closeWait):
		}
		close(s.stop)
		s.wg.Wait()
	})
	if err != nil {
		return fmt.Errorf("coap close: %w", err)
	}
	return nil
}

// Fetch runs one round's fetch: POST /p/auth-jwt with req.JWT (the device re-authenticates at
// the start of every round, docs/protocol.md §2.4), then GET /p/cmd. It returns the CBOR payload of
// 2.05, an error matching transport.ErrNoCommands for an empty 2.05, and otherwise a
// *transport.StatusError (inside a *transport.RxTooSmallError when the service names the
// rxMaxSize the next command needs) or a network error classified by transport.Classify.
func (s *Session) Fetch(ctx context.Context, req transport.FetchRequest) ([]byte, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("coap fetch: %w", ErrClosed)
	}
	req = req.WithDefaults()
	if err := s.auth(ctx, req.JWT, req.ModemVersion, req.ClientVersion); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.t.cfg.Timeout)
	defer cancel()
	rctx, abort := context.WithCancelCause(rctx)
	defer abort(nil)
	s.rxLimit.Store(int64(req.RxMaxSize))
	s.abort.Store(&abort)
	defer func() { s.rxLimit.Store(0); s.abort.Store(nil) }()
	s.meter.Request()
	resp, err := s.cc.Get(rctx, cmdPath,
		query("after", req.After),
		query("rxMaxSize", strconv.Itoa(req.RxMaxSize)),
		query("txMaxSize", strconv.Itoa(req.TxMaxSize)),
		query("limit", strconv.Itoa(req.Limit)),
		s.t.block2,
	)
	if err != nil {
		if cause := context.Cause(rctx); errors.Is(cause, transport.ErrTooLarge) {
			return nil, fmt.Errorf("coap fetch: %w", cause)
		}
		return nil, s.netErr(ctx, "fetch", err)
	}
	defer s.cc.ReleaseMessage(resp)
	if resp.Code() != codes.Content {
		return nil, transport.FetchStatusError(statusError("fetch", resp), req.RxMaxSize)
	}
	body, err := readBody(resp, req.RxMaxSize)
	if err != nil {
		return nil, fmt.Errorf("coap fetch: %w", err)
	}
	if len(body) == 0 {
		return nil, &transport.StatusError{Transport: "coap", Op: "fetch", Code: codeString(codes.Content),
			Kind: transport.ErrNoCommands, Detail: "empty payload"}
	}
	return body, nil
}

// Upload sends one batch of responses (POST /p/rsp, Block1 when larger than a block); success is
// 2.04 only. It authenticates first when the session has not yet accepted req.JWT: a pending
// outbox sent before any fetch, or a fresh JWT.
func (s *Session) Upload(ctx context.Context, req transport.UploadRequest) error {
	if s.closed.Load() {
		return fmt.Errorf("coap upload: %w", ErrClosed)
	}
	if s.authJWT == "" || s.authJWT != req.JWT {
		mver, cver := req.ModemVersion, req.ClientVersion
		if mver == "" {
			mver = s.mver
		}
		if cver == "" {
			cver = s.cver
		}
		if err := s.auth(ctx, req.JWT, mver, cver); err != nil {
			return err
		}
	}
	rctx, cancel := context.WithTimeout(ctx, s.t.cfg.Timeout)
	defer cancel()
	s.meter.Request()
	resp, err := s.cc.Post(rctx, rspPath, message.AppCBOR, bytes.NewReader(req.Body))
	if err != nil {
		return s.netErr(ctx, "upload", err)
	}
	defer s.cc.ReleaseMessage(resp)
	if resp.Code() != codes.Changed {
		return statusError("upload", resp)
	}
	return nil
}

// auth posts the JWT. The payload is the JWT's ASCII text, yet Content-Format 60 (CBOR), as the
// device sends it and the service expects (docs/protocol.md §2.2, §12.11).
func (s *Session) auth(ctx context.Context, jwt, mver, cver string) error {
	s.authJWT = ""
	rctx, cancel := context.WithTimeout(ctx, s.t.cfg.Timeout)
	defer cancel()
	s.meter.Request()
	resp, err := s.cc.Post(rctx, authPath, message.AppCBOR, strings.NewReader(jwt),
		query("mver", mver), query("cver", cver))
	if err != nil {
		return s.netErr(ctx, "auth", err)
	}
	defer s.cc.ReleaseMessage(resp)
	if resp.Code() != codes.Created {
		return statusError("auth", resp)
	}
	s.authJWT, s.mver, s.cver = jwt, mver, cver
	return nil
}

// query is one Uri-Query option. The value goes raw, as the device writes it: CoAP options
// carry bytes, so nothing needs escaping.
func query(name, value string) message.Option {
	return message.Option{ID: message.URIQuery, Value: []byte(name + "=" + value)}
}

// capBlock2 stands before go-coap's block-wise layer, which reassembles a Block2 response
// without any bound: a block (or a Size2 announcement) that takes the payload of the fetch in
// progress past its rxMaxSize ends the fetch and is dropped, so no further block is asked for
// and at most rxMaxSize plus one block is held. It runs on the CoAP reader goroutine.
func (s *Session) capBlock2(m *pool.Message, cc *udpclient.Conn, next coapconfig.HandlerFunc[*udpclient.Conn]) {
	if limit := s.rxLimit.Load(); limit > 0 && m.Code() >= codes.Created {
		if end, ok := block2End(m); ok && end > limit {
			if abort := s.abort.Load(); abort != nil {
				(*abort)(fmt.Errorf("payload of at least %d bytes, over rxMaxSize %d: %w", end, limit, transport.ErrTooLarge))
			}
			next = func(*responsewriter.ResponseWriter[*udpclient.Conn], *pool.Message) {}
		}
	}
	cc.ProcessReceivedMessageWithHandler(m, next)
}

// block2End is how far into the whole payload a Block2 response reaches: the end of its
// block, or the size its Size2 option announces if larger. ok is false without Block2.
func block2End(m *pool.Message) (int64, bool) {
	v, err := m.GetOptionUint32(message.Block2)
	if err != nil {
		return 0, false
	}
	szx, num, _, err := blockwise.DecodeBlockOption(v)
	if err != nil {
		return 0, false
	}
	end := num * szx.Size()
	if n, err := m.BodySize(); err == nil {
		end += n
	}
	if size2, err := m.GetOptionUint32(message.Size2); err == nil {
		end = max(end, int64(size2))
	}
	return end, true
}

// readBody reads the (reassembled) payload, refusing one over limit.
func readBody(m *pool.Message, limit int) ([]byte, error) {
	body := m.Body()
	if body == nil {
		return nil, nil
	}
	data, err := io.ReadAll(io.LimitReader(body, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("read payload: %w", err)
	}
	if len(data) > limit {
		return nil, fmt.Errorf("payload over rxMaxSize %d: %w", limit, transport.ErrTooLarge)
	}
	return data, nil
}

// statusError maps a response code that is not the step's success code (docs/protocol.md §2.3).
func statusError(op string, m *pool.Message) *transport.StatusError {
	return &transport.StatusError{
		Transport: "coap",
		Op:        op,
		Code:      codeString(m.Code()),
		Kind:      codeKind(m.Code()),
		Detail:    transport.ReadDetail(m.Body()),
	}
}

// codeKind is the table of docs/protocol.md §2.3. Any success code on the wrong step (2.00, or 2.05
// to an upload) is "unsupported", as for the device.
func codeKind(c codes.Code) error {
	switch c {
	case codes.Unauthorized:
		return transport.ErrNotClaimed
	case codes.Forbidden:
		// The device library calls 4.03 a generic failure. The HTTP side of the same service has
		// answered unclaimed devices with 403 (docs/protocol.md §12.7), and both transports should lead
		// the daemon to the same event, so 4.03 counts as "not claimed" here too.
		return transport.ErrNotClaimed
	case codes.BadRequest, codes.NotAcceptable:
		return transport.ErrBadRequest
	case codes.InternalServerError, codes.ServiceUnavailable:
		return transport.ErrBusy
	default:
		return transport.ErrUnsupported
	}
}

// codeString writes a code the way CoAP documents do: "4.01".
func codeString(c codes.Code) string {
	return fmt.Sprintf("%d.%02d", uint8(c)>>5, uint8(c)&0x1f)
}

// netErr classifies a request failure. A request cut short because the session ended (the
// server's close_notify, a socket error) shows up as a cancelled connection context; unless the
// caller cancelled, that is "connection closed without a status".
func (s *Session) netErr(ctx context.Context, op string, err error) error {
	if ctx.Err() == nil && s.cc.Context().Err() != nil {
		return fmt.Errorf("coap %s: %w: %w", op, transport.ErrShutdown, err)
	}
	return wrapNetErr(ctx, op, err)
}

// wrapNetErr prefixes a network failure with its step and, when recognised, its sentinel.
// The caller's own cancellation is passed through unclassified.
func wrapNetErr(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("coap %s: %w", op, ctx.Err())
	}
	if kind := transport.Classify(err); kind != nil {
		return fmt.Errorf("coap %s: %w: %w", op, kind, err)
	}
	return fmt.Errorf("coap %s: %w", op, err)
}
