package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/provisiond/provisiond/internal/transport"
)

// TestAttemptTraffic follows each attempt's session counts into the status: the finished
// attempt carries its own, an attempt that fails after connecting carries what it spent before
// failing, one that never connected carries none, and the daemon's totals add them up.
func TestAttemptTraffic(t *testing.T) {
	h := newHarness(t, testConfig(), nil, nil)
	h.d.running.Store(true) // drive attempts directly, as Run does
	if err := h.d.loadState(h.d.config()); err != nil {
		t.Fatal(err)
	}
	if err := h.d.onModemOpen(context.Background(), h.m); err != nil {
		t.Fatal(err)
	}
	defer h.d.closeModem(h.m)

	// lastSession is what the session of the attempt that just ended counted.
	lastSession := func() transport.Stats {
		t.Helper()
		h.cloud.mu.Lock()
		n := len(h.cloud.sessions)
		h.cloud.mu.Unlock()
		if n == 0 {
			t.Fatal("no session was dialled")
		}
		return h.cloud.sessions[n-1].Stats()
	}
	check := func(what string, wantEvent Event, want, total transport.Stats) {
		t.Helper()
		st := h.d.Status()
		a := st.LastAttempt
		if a == nil || a.Event != wantEvent {
			t.Fatalf("%s: last attempt %+v, want %s", what, a, wantEvent)
		}
		got := transport.Stats{Handshakes: a.Handshakes, ResumedHandshakes: a.ResumedHandshakes, Requests: a.Requests,
			BytesSent: a.BytesSent, BytesReceived: a.BytesReceived}
		want.DatagramsSent, want.DatagramsReceived = 0, 0
		if got != want {
			t.Errorf("%s: attempt traffic %+v, want the session's %+v", what, got, want)
		}
		gotTotal := transport.Stats{Handshakes: st.HandshakesTotal, Requests: st.RequestsTotal,
			BytesSent: st.BytesSentTotal, BytesReceived: st.BytesReceivedTotal}
		if gotTotal != total {
			t.Errorf("%s: totals %+v, want %+v", what, gotTotal, total)
		}
	}
	add := func(a, b transport.Stats) transport.Stats {
		return transport.Stats{Handshakes: a.Handshakes + b.Handshakes, Requests: a.Requests + b.Requests,
			BytesSent: a.BytesSent + b.BytesSent, BytesReceived: a.BytesReceived + b.BytesReceived}
	}

	h.cloud.push(t, at("a", "%A", ""), config("c", "provisioning/x", "1"), finished("f"))
	if o := h.d.attempt(context.Background()); o.res.Event != EventDone {
		t.Fatalf("first attempt = %+v, want DONE", o.res)
	}
	first := lastSession()
	if first.Handshakes != 1 || first.Requests != 2 || first.BytesSent == 0 || first.BytesReceived == 0 {
		t.Fatalf("the first session counted %+v, want a handshake, a fetch and an upload with bytes", first)
	}
	check("done", EventDone, first, first)

	// The upload fails: the attempt ends FAILED after the session spent a fetch and an upload.
	h.cloud.push(t, at("b", "%B", ""), finished("g"))
	h.cloud.uploadErrs = []error{fmt.Errorf("fake upload: %w", transport.ErrShutdown)}
	if o := h.d.attempt(context.Background()); o.res.Event != EventFailed || !errors.Is(o.res.Err, transport.ErrShutdown) {
		t.Fatalf("second attempt = %+v, want FAILED by the dropped upload", o.res)
	}
	second := lastSession()
	if second.Requests != 2 || second.BytesSent == 0 {
		t.Fatalf("the second session counted %+v, want a fetch and an upload", second)
	}
	total := add(first, second)
	check("failed after connecting", EventFailed, second, total)

	// No session at all: nothing spent, nothing added.
	h.cloud.mu.Lock()
	h.cloud.dialErr = fmt.Errorf("fake dial: %w", transport.ErrConnect)
	h.cloud.mu.Unlock()
	if o := h.d.attempt(context.Background()); o.res.Event != EventFailed || o.res.Traffic != (transport.Stats{}) {
		t.Fatalf("third attempt = %+v, want FAILED with no traffic", o.res)
	}
	check("never connected", EventFailed, transport.Stats{}, total)

	// The JSON names are the contract: an attempt without traffic leaves them out, the totals
	// are always there.
	b, err := json.Marshal(h.d.Status())
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"handshakes_total", "requests_total", "bytes_sent_total", "bytes_received_total"} {
		if v, ok := raw[k].(float64); !ok || v == 0 {
			t.Errorf("status JSON %s = %v, want a non-zero number", k, raw[k])
		}
	}
	last, _ := raw["last_attempt"].(map[string]any)
	for _, k := range []string{"handshakes", "requests", "bytes_sent", "bytes_received"} {
		if _, ok := last[k]; ok {
			t.Errorf("status JSON last_attempt.%s = %v for an attempt that never connected, want it left out", k, last[k])
		}
	}
}
