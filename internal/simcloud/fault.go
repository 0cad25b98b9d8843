package simcloud

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// FaultKind names an injected failure.
type FaultKind string

// Fault kinds. Unless Fault.Op narrows it, a kind applies to the operations listed.
const (
	// FaultBusy answers HTTP 500 (HTTPStatus overrides, e.g. 503) or CoAP 5.03 (CoAPCode
	// overrides). Any operation.
	FaultBusy FaultKind = "busy"
	// FaultSlow waits Delay before handling the request normally (combines with another
	// fault). Any operation.
	FaultSlow FaultKind = "slow"
	// FaultDrop gives no answer: HTTP closes the connection without a status; CoAP sends no
	// response (only the empty ACK go-coap gives a confirmable request), so the client waits
	// until its timeout. Any operation.
	FaultDrop FaultKind = "drop"
	// FaultMalformedCBOR serves a truncated batch that is not valid CBOR. Fetch only; a fetch
	// with nothing queued still gets "no commands".
	FaultMalformedCBOR FaultKind = "malformed-cbor"
	// FaultNonCanonical serves the real next batch with an indefinite-length outer array,
	// which a canonical decoder refuses. Fetch only.
	FaultNonCanonical FaultKind = "non-canonical"
	// FaultTooMany serves limit+1 commands (the queued ones padded with filler FINISHED
	// commands). Fetch only.
	FaultTooMany FaultKind = "too-many"
	// FaultUnauthorized answers HTTP 401 / CoAP 4.01 whatever the JWT. Any operation.
	FaultUnauthorized FaultKind = "unauthorized"
	// FaultFailUpload refuses an upload without recording it: HTTP 500 / CoAP 5.00 unless
	// HTTPStatus / CoAPCode say otherwise. Upload only.
	FaultFailUpload FaultKind = "fail-upload"
)

// Transports and operations a fault can be narrowed to.
const (
	TransportHTTP = "http"
	TransportCoAP = "coap"

	OpAuth   = "auth" // CoAP POST /p/auth-jwt
	OpFetch  = "fetch"
	OpUpload = "upload"
)

// Fault is one fault-injection rule. Faults changed with SetFault take effect on the next
// request; a request that matches several gets every Slow delay and the first other fault.
type Fault struct {
	Kind FaultKind
	// Count is how many matching requests the fault affects; 0 means until replaced.
	Count int
	// Transport narrows the fault to TransportHTTP or TransportCoAP; empty means both.
	Transport string
	// Op narrows the fault to OpAuth, OpFetch or OpUpload; empty means every op the kind
	// applies to.
	Op string
	// Delay is the wait of FaultSlow.
	Delay time.Duration
	// HTTPStatus overrides the status of FaultBusy / FaultFailUpload.
	HTTPStatus int
	// CoAPCode overrides the code of FaultBusy / FaultFailUpload.
	CoAPCode codes.Code
}

func (k FaultKind) ops() []string {
	switch k {
	case FaultMalformedCBOR, FaultNonCanonical, FaultTooMany:
		return []string{OpFetch}
	case FaultFailUpload:
		return []string{OpUpload}
	}
	return []string{OpAuth, OpFetch, OpUpload}
}

func (f Fault) validate() error {
	switch f.Kind {
	case FaultBusy, FaultSlow, FaultDrop, FaultMalformedCBOR, FaultNonCanonical, FaultTooMany,
		FaultUnauthorized, FaultFailUpload:
	default:
		return fmt.Errorf("simcloud: fault kind %q: %w", f.Kind, ErrInvalid)
	}
	if f.Count < 0 || f.Delay < 0 {
		return fmt.Errorf("simcloud: fault %s: negative count or delay: %w", f.Kind, ErrInvalid)
	}
	if f.Transport != "" && f.Transport != TransportHTTP && f.Transport != TransportCoAP {
		return fmt.Errorf("simcloud: fault %s: transport %q: %w", f.Kind, f.Transport, ErrInvalid)
	}
	if f.Op != "" && !slices.Contains(f.Kind.ops(), f.Op) {
		return fmt.Errorf("simcloud: fault %s does not apply to op %q: %w", f.Kind, f.Op, ErrInvalid)
	}
	if f.HTTPStatus != 0 && (f.HTTPStatus < 100 || f.HTTPStatus > 599) {
		return fmt.Errorf("simcloud: fault %s: http status %d: %w", f.Kind, f.HTTPStatus, ErrInvalid)
	}
	return nil
}

func (f Fault) matches(transport, op string) bool {
	return (f.Transport == "" || f.Transport == transport) &&
		(f.Op == "" || f.Op == op) && slices.Contains(f.Kind.ops(), op)
}

func (f Fault) httpStatus() int {
	switch {
	case f.HTTPStatus != 0:
		return f.HTTPStatus
	case f.Kind == FaultUnauthorized:
		return http.StatusUnauthorized
	}
	return http.StatusInternalServerError
}

func (f Fault) coapCode() codes.Code {
	switch {
	case f.CoAPCode != 0:
		return f.CoAPCode
	case f.Kind == FaultUnauthorized:
		return codes.Unauthorized
	case f.Kind == FaultFailUpload:
		return codes.InternalServerError
	}
	return codes.ServiceUnavailable
}

// SetFault replaces the fault rules with faults; SetFault() clears them. Safe for concurrent
// use with requests in flight.
func (s *Server) SetFault(faults ...Fault) error {
	for _, f := range faults {
		if err := f.validate(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = slices.Clone(faults)
	return nil
}

// Faults returns the fault rules still in force, with their remaining counts.
func (s *Server) Faults() []Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.faults)
}

// faultPlan is what the faults matched by one request make the handler do.
type faultPlan struct {
	delay    time.Duration
	terminal *Fault // the first non-Slow fault, if any
}

// takeFaults consumes one use of every fault matching the request.
func (s *Server) takeFaults(transport, op string) faultPlan {
	s.mu.Lock()
	defer s.mu.Unlock()
	var p faultPlan
	kept := s.faults[:0]
	for _, f := range s.faults {
		if f.matches(transport, op) {
			if f.Kind == FaultSlow {
				p.delay += f.Delay
			} else if p.terminal == nil {
				g := f
				p.terminal = &g
			}
			if f.Count > 0 {
				f.Count--
				if f.Count == 0 {
					continue
				}
			}
		}
		kept = append(kept, f)
	}
	s.faults = kept
	return p
}

// batchMode returns how a fault changes a fetch answer.
func (p faultPlan) batchMode() batchMode {
	if p.terminal == nil {
		return batchNormal
	}
	switch p.terminal.Kind {
	case FaultMalformedCBOR:
		return batchMalformed
	case FaultNonCanonical:
		return batchNonCanonical
	case FaultTooMany:
		return batchTooMany
	}
	return batchNormal
}

type faultJSON struct {
	Kind       FaultKind `json:"kind"`
	Count      int       `json:"count,omitempty"`
	Transport  string    `json:"transport,omitempty"`
	Op         string    `json:"op,omitempty"`
	Delay      string    `json:"delay,omitempty"`
	HTTPStatus int       `json:"httpStatus,omitempty"`
	CoAPCode   string    `json:"coapCode,omitempty"`
}

// MarshalJSON writes Delay as a Go duration ("1.5s") and CoAPCode as "5.03".
func (f Fault) MarshalJSON() ([]byte, error) {
	j := faultJSON{Kind: f.Kind, Count: f.Count, Transport: f.Transport, Op: f.Op, HTTPStatus: f.HTTPStatus}
	if f.Delay != 0 {
		j.Delay = f.Delay.String()
	}
	if f.CoAPCode != 0 {
		j.CoAPCode = fmt.Sprintf("%d.%02d", f.CoAPCode>>5, f.CoAPCode&0x1f)
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads the form MarshalJSON writes.
func (f *Fault) UnmarshalJSON(b []byte) error {
	var j faultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	out := Fault{Kind: j.Kind, Count: j.Count, Transport: j.Transport, Op: j.Op, HTTPStatus: j.HTTPStatus}
	if j.Delay != "" {
		d, err := time.ParseDuration(j.Delay)
		if err != nil {
			return fmt.Errorf("fault delay: %w", err)
		}
		out.Delay = d
	}
	if j.CoAPCode != "" {
		c, err := parseCoAPCode(j.CoAPCode)
		if err != nil {
			return err
		}
		out.CoAPCode = c
	}
	*f = out
	return nil
}

func parseCoAPCode(s string) (codes.Code, error) {
	cls, det, ok := strings.Cut(s, ".")
	c, err1 := strconv.ParseUint(cls, 10, 3)
	d, err2 := strconv.ParseUint(det, 10, 5)
	if !ok || err1 != nil || err2 != nil || len(det) != 2 {
		return 0, fmt.Errorf("coap code %q (want c.dd): %w", s, ErrInvalid)
	}
	return codes.Code(c<<5 | d), nil
}
