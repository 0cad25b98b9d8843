package simcloud

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"

	"github.com/provisiond/provisiond/internal/proto"
)

// finishedUpload is a valid upload for any device: an ack to an id the service ignores.
var finishedUpload = []byte{0x81, 0x82, 0x61, 0x78, 0x18, 0x66}

func TestHTTPFaults(t *testing.T) {
	type step struct {
		op     string // OpFetch or OpUpload
		status int    // 0: the connection must fail without a status
		check  func(t *testing.T, body []byte)
	}
	decodeErr := func(limit int, want error) func(*testing.T, []byte) {
		return func(t *testing.T, body []byte) {
			if _, err := proto.DecodeCommands(body, limit); !errors.Is(err, want) {
				t.Errorf("decode = %v, want %v", err, want)
			}
		}
	}
	tests := []struct {
		name   string
		faults []Fault
		steps  []step
	}{
		{name: "busy twice then normal", faults: []Fault{{Kind: FaultBusy, Count: 2}},
			steps: []step{{op: OpFetch, status: 500}, {op: OpUpload, status: 500}, {op: OpFetch, status: 200}}},
		{name: "busy 503", faults: []Fault{{Kind: FaultBusy, HTTPStatus: 503, Count: 1}},
			steps: []step{{op: OpFetch, status: 503}, {op: OpFetch, status: 200}}},
		{name: "busy narrowed to upload", faults: []Fault{{Kind: FaultBusy, Op: OpUpload}},
			steps: []step{{op: OpFetch, status: 200}, {op: OpUpload, status: 500}, {op: OpUpload, status: 500}}},
		{name: "busy narrowed to coap", faults: []Fault{{Kind: FaultBusy, Transport: TransportCoAP}},
			steps: []step{{op: OpFetch, status: 200}, {op: OpUpload, status: 200}}},
		{name: "slow", faults: []Fault{{Kind: FaultSlow, Delay: 10 * time.Millisecond, Count: 1}},
			steps: []step{{op: OpFetch, status: 200}}},
		{name: "slow and busy", faults: []Fault{{Kind: FaultSlow, Delay: time.Millisecond, Count: 1}, {Kind: FaultBusy, Count: 1}},
			steps: []step{{op: OpFetch, status: 500}, {op: OpFetch, status: 200}}},
		{name: "drop", faults: []Fault{{Kind: FaultDrop, Count: 2}},
			steps: []step{{op: OpFetch}, {op: OpUpload}, {op: OpFetch, status: 200}}},
		{name: "malformed", faults: []Fault{{Kind: FaultMalformedCBOR, Count: 1}},
			steps: []step{{op: OpFetch, status: 200, check: decodeErr(10, proto.ErrMalformed)}, {op: OpFetch, status: 200, check: decodeErr(10, nil)}}},
		{name: "non-canonical", faults: []Fault{{Kind: FaultNonCanonical, Count: 1}},
			steps: []step{{op: OpFetch, status: 200, check: func(t *testing.T, b []byte) {
				if b[0] != 0x9f || b[len(b)-1] != 0xff {
					t.Errorf("batch %x is not an indefinite-length array", b)
				}
				decodeErr(10, nil)(t, b) // accepted, as the device's decoder accepts it
			}}}},
		{name: "too many", faults: []Fault{{Kind: FaultTooMany, Count: 1}},
			steps: []step{{op: OpFetch, status: 200, check: func(t *testing.T, b []byte) {
				decodeErr(5, proto.ErrTooMany)(t, b)
				if cmds, err := proto.DecodeCommands(b, 20); err != nil || len(cmds) != 6 {
					t.Errorf("decode = %d commands, %v; want 6", len(cmds), err)
				}
			}}}},
		{name: "unauthorized", faults: []Fault{{Kind: FaultUnauthorized, Count: 1}},
			steps: []step{{op: OpUpload, status: 401}, {op: OpUpload, status: 200}}},
		{name: "fail next two uploads", faults: []Fault{{Kind: FaultFailUpload, Count: 2}},
			steps: []step{{op: OpFetch, status: 200}, {op: OpUpload, status: 500}, {op: OpUpload, status: 500}, {op: OpUpload, status: 200}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, Config{})
			dev := claimedDevice(t, s)
			if _, err := s.Enqueue(dev.uuid, atReq(0, 0), atReq(1, 0)); err != nil {
				t.Fatal(err)
			}
			if err := s.SetFault(tc.faults...); err != nil {
				t.Fatal(err)
			}
			h := newHTTPDevice(t, s, dev)
			uploads := 0
			for i, st := range tc.steps {
				var status int
				var body []byte
				var err error
				if st.op == OpFetch {
					status, body, err = h.do(http.MethodGet, "/v1/provisioning/commands?after=&limit=5", dev.jwt(t), nil)
				} else {
					status, body, err = h.do(http.MethodPost, "/v1/provisioning/response", dev.jwt(t), finishedUpload)
					if status == 200 {
						uploads++
					}
				}
				if st.status == 0 {
					if err == nil {
						t.Errorf("step %d: got status %d, want a dropped connection", i, status)
					}
					continue
				}
				if err != nil || status != st.status {
					t.Fatalf("step %d (%s): %d %v, want %d", i, st.op, status, err, st.status)
				}
				if st.check != nil {
					st.check(t, body)
				}
			}
			ups, _ := s.Responses(dev.uuid)
			if len(ups) != uploads {
				t.Errorf("%d uploads recorded, want %d (refused ones are not)", len(ups), uploads)
			}
		})
	}
}

func TestCoAPFaults(t *testing.T) {
	type step struct {
		op    string
		code  codes.Code // 0: no answer
		check func(t *testing.T, body []byte)
	}
	tests := []struct {
		name   string
		faults []Fault
		steps  []step
	}{
		{name: "busy auth", faults: []Fault{{Kind: FaultBusy, Count: 1}},
			steps: []step{{op: OpAuth, code: codes.ServiceUnavailable}, {op: OpAuth, code: codes.Created}}},
		{name: "busy fetch 5.00", faults: []Fault{{Kind: FaultBusy, Op: OpFetch, CoAPCode: codes.InternalServerError}},
			steps: []step{{op: OpAuth, code: codes.Created}, {op: OpFetch, code: codes.InternalServerError}}},
		{name: "unauthorized", faults: []Fault{{Kind: FaultUnauthorized, Op: OpAuth, Count: 1}},
			steps: []step{{op: OpAuth, code: codes.Unauthorized}, {op: OpAuth, code: codes.Created}, {op: OpFetch, code: codes.Content}}},
		{name: "slow", faults: []Fault{{Kind: FaultSlow, Delay: 10 * time.Millisecond}},
			steps: []step{{op: OpAuth, code: codes.Created}, {op: OpFetch, code: codes.Content}}},
		{name: "drop fetch", faults: []Fault{{Kind: FaultDrop, Op: OpFetch, Count: 1}},
			steps: []step{{op: OpAuth, code: codes.Created}, {op: OpFetch}, {op: OpFetch, code: codes.Content}}},
		{name: "malformed", faults: []Fault{{Kind: FaultMalformedCBOR, Count: 1}},
			steps: []step{{op: OpAuth, code: codes.Created}, {op: OpFetch, code: codes.Content, check: func(t *testing.T, b []byte) {
				if _, err := proto.DecodeCommands(b, 10); !errors.Is(err, proto.ErrMalformed) {
					t.Errorf("decode = %v, want ErrMalformed", err)
				}
			}}}},
		{name: "fail upload", faults: []Fault{{Kind: FaultFailUpload, Count: 1}},
			steps: []step{{op: OpAuth, code: codes.Created}, {op: OpUpload, code: codes.InternalServerError}, {op: OpUpload, code: codes.Changed}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, Config{})
			dev := claimedDevice(t, s)
			if _, err := s.Enqueue(dev.uuid, atReq(0, 0)); err != nil {
				t.Fatal(err)
			}
			if err := s.SetFault(tc.faults...); err != nil {
				t.Fatal(err)
			}
			c := newCoAPDevice(t, s, dev, blockwise.SZX1024)
			for i, st := range tc.steps {
				timeout := 20 * time.Second
				if st.code == 0 {
					timeout = 500 * time.Millisecond // the answer never comes; don't wait long
				}
				ctx, cancel := context.WithTimeout(t.Context(), timeout)
				var resp interface {
					Code() codes.Code
					ReadBody() ([]byte, error)
				}
				var err error
				switch st.op {
				case OpAuth:
					resp, err = c.cc.Post(ctx, pathAuth, 60, stringsReader(dev.jwt(t)))
				case OpFetch:
					resp, err = c.cc.Get(ctx, pathCommands, queries("after=", "limit=5")...)
				case OpUpload:
					resp, err = c.cc.Post(ctx, pathResponse, 60, bytesReader(finishedUpload))
				}
				cancel()
				if st.code == 0 {
					if err == nil {
						t.Errorf("step %d: got %v, want no answer", i, resp.Code())
					}
					continue
				}
				if err != nil || resp.Code() != st.code {
					t.Fatalf("step %d (%s): %v %v, want %v", i, st.op, resp, err, st.code)
				}
				if st.check != nil {
					b, _ := resp.ReadBody()
					st.check(t, b)
				}
			}
		})
	}
}

func TestSetFaultValidation(t *testing.T) {
	s, err := New(Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tests := []struct {
		name string
		f    Fault
		ok   bool
	}{
		{name: "busy", f: Fault{Kind: FaultBusy}, ok: true},
		{name: "unknown kind", f: Fault{Kind: "explode"}},
		{name: "negative count", f: Fault{Kind: FaultBusy, Count: -1}},
		{name: "fetch fault on upload", f: Fault{Kind: FaultTooMany, Op: OpUpload}},
		{name: "upload fault on auth", f: Fault{Kind: FaultFailUpload, Op: OpAuth}},
		{name: "bad transport", f: Fault{Kind: FaultBusy, Transport: "mqtt"}},
		{name: "bad status", f: Fault{Kind: FaultBusy, HTTPStatus: 42}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.SetFault(tc.f)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Errorf("SetFault = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestFaultJSON(t *testing.T) {
	in := `{"kind":"busy","count":3,"transport":"coap","op":"fetch","delay":"1.5s","httpStatus":503,"coapCode":"5.03"}`
	var f Fault
	if err := json.Unmarshal([]byte(in), &f); err != nil {
		t.Fatal(err)
	}
	want := Fault{Kind: FaultBusy, Count: 3, Transport: TransportCoAP, Op: OpFetch, Delay: 1500 * time.Millisecond, HTTPStatus: 503, CoAPCode: codes.ServiceUnavailable}
	if f != want {
		t.Errorf("decoded %+v, want %+v", f, want)
	}
	out, err := json.Marshal(f)
	if err != nil || string(out) != in {
		t.Errorf("encoded %s %v, want %s", out, err, in)
	}
	for _, bad := range []string{`{"kind":"busy","delay":"soon"}`, `{"kind":"busy","coapCode":"503"}`, `{"kind":"busy","coapCode":"5.3"}`} {
		if err := json.Unmarshal([]byte(bad), &f); err == nil {
			t.Errorf("%s decoded without error", bad)
		}
	}
}
