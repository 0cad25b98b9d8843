package simcloud

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// maxUploadBytes bounds an uploaded response batch. The device's TX buffer is 2–4 KiB.
const maxUploadBytes = 64 << 10

// routes is the HTTPS handler: device side and owner side.
func (s *Server) routes() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET /v1/provisioning/commands", s.handleFetch)
	m.HandleFunc("POST /v1/provisioning/response", s.handleUpload)
	s.ownerRoutes(m)
	return m
}

// handleFetch serves GET /v1/provisioning/commands (docs/protocol.md §1.2).
func (s *Server) handleFetch(w http.ResponseWriter, r *http.Request) {
	uuid, plan, ok := s.httpDevice(w, r, OpFetch)
	if !ok {
		return
	}
	p, err := parseFetchParams(queryLookup(r.URL.Query()))
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	body, err := s.fetch(uuid, p, plan.batchMode(), httpOverhead, 1)
	var small *rxTooSmallError
	switch {
	case errors.As(err, &small):
		writeError(w, http.StatusBadRequest, err)
		return
	case errors.Is(err, ErrNotClaimed):
		writeError(w, http.StatusUnauthorized, err)
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, err)
		return
	case len(body) == 0:
		w.Header()["Date"] = nil
		w.WriteHeader(http.StatusNoContent)
		return
	}
	h := w.Header()
	h["Date"] = nil // not sent, so that httpOverhead is exact
	h.Set("Content-Type", "application/cbor")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

// httpOverhead is the size of everything around a 200 body of n bytes in the answer
// handleFetch writes: status line, Content-Type, Content-Length, a "Connection: close" the
// server adds when the client asked for it (counted always), and the blank line. The device
// must fit all of it into rxMaxSize−1 bytes (docs/protocol.md §1.2).
func httpOverhead(n int) int {
	return len("HTTP/1.1 200 OK\r\n") +
		len("Content-Type: application/cbor\r\n") +
		len("Content-Length: \r\n") + len(strconv.Itoa(n)) +
		len("Connection: close\r\n") +
		len("\r\n")
}

// handleUpload serves POST /v1/provisioning/response (docs/protocol.md §1.3).
func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	uuid, _, ok := s.httpDevice(w, r, OpUpload)
	if !ok {
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/cbor" {
			writeError(w, http.StatusUnsupportedMediaType, fmt.Errorf("content type %q, want application/cbor", ct))
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxUploadBytes))
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("read body: %w", err))
		return
	}
	if err := s.upload(uuid, TransportHTTP, body); err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, ErrNotClaimed) {
			status = http.StatusUnauthorized
		}
		writeError(w, status, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// httpDevice begins a device request: the faults injected for op, then the bearer JWT (401 if
// it does not authenticate a device). It reports whether the handler goes on; if not, the
// request has been answered or dropped.
func (s *Server) httpDevice(w http.ResponseWriter, r *http.Request, op string) (string, faultPlan, bool) {
	plan := s.takeFaults(TransportHTTP, op)
	if !s.httpFaults(w, r, plan) {
		return "", plan, false
	}
	uuid, err := s.authorize(bearer(r))
	if err != nil {
		s.logf("simcloud: https %s: %v", op, err)
		writeError(w, http.StatusUnauthorized, err)
		return "", plan, false
	}
	return uuid, plan, true
}

// httpFaults applies the faults a request matched; it reports whether to go on.
func (s *Server) httpFaults(w http.ResponseWriter, r *http.Request, p faultPlan) bool {
	if !s.sleep(r.Context(), p.delay) {
		dropHTTP(w)
		return false
	}
	f := p.terminal
	if f == nil {
		return true
	}
	switch f.Kind {
	case FaultBusy, FaultFailUpload, FaultUnauthorized:
		writeError(w, f.httpStatus(), fmt.Errorf("injected fault %s", f.Kind))
		return false
	case FaultDrop:
		dropHTTP(w)
		return false
	}
	return true // fetch faults shape the body later
}

// dropHTTP closes the connection without writing a status line.
func dropHTTP(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // the server closes the connection and logs nothing
	}
	conn.Close()
}

func bearer(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// queryLookup adapts url.Values to parseFetchParams.
func queryLookup(v url.Values) func(string) (string, bool) {
	return func(k string) (string, bool) {
		vs, ok := v[k]
		if !ok || len(vs) == 0 {
			return "", false
		}
		return vs[0], true
	}
}

// parseFetchParams reads after, rxMaxSize, txMaxSize, limit, mver and cver. Missing sizes
// mean no bound, a missing limit the device default (10); present ones must be positive
// decimal integers.
func parseFetchParams(get func(string) (string, bool)) (fetchParams, error) {
	p := fetchParams{limit: 10}
	p.after, _ = get("after")
	p.mver, _ = get("mver")
	p.cver, _ = get("cver")
	for _, f := range []struct {
		name string
		dst  *int
	}{{"rxMaxSize", &p.rxMaxSize}, {"txMaxSize", &p.txMaxSize}, {"limit", &p.limit}} {
		v, ok := get(f.name)
		if !ok {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return fetchParams{}, fmt.Errorf("query %s=%q: want a positive integer: %w", f.name, v, ErrInvalid)
		}
		*f.dst = n
	}
	return p, nil
}

// apiError is the JSON error body of both APIs, like the real service's {code, message}.
type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, apiError{Code: status, Message: err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"code":500,"message":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
