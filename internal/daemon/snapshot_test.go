package daemon

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/transport"
)

// A reload during an attempt must not give it the new config with the old transport (or the
// reverse): the attempt keeps the pair it started with and the next one takes the new pair.
func TestReloadSwapsConfigAndTransportTogether(t *testing.T) {
	cfgA := testConfig()
	cfgA.ClientVersion = "A"
	h := newHarness(t, cfgA, nil, nil)

	var mu sync.Mutex
	seen := map[string][]string{} // transport → client versions of its fetches
	dial := func(name string, onDial func()) DialFunc {
		return func(ctx context.Context) (Session, error) {
			if onDial != nil {
				onDial()
			}
			s, err := h.cloud.Dial(ctx)
			if err != nil {
				return nil, err
			}
			return &taggedSession{Session: s, record: func(req transport.FetchRequest) {
				mu.Lock()
				seen[name] = append(seen[name], req.ClientVersion)
				mu.Unlock()
			}}, nil
		}
	}
	cfgB := testConfig()
	cfgB.ClientVersion = "B"
	// The reload lands while the first attempt is connecting: after it took its config.
	reload := func() {
		if err := h.d.Reconfigure(cfgB, dial("B", nil)); err != nil {
			t.Error(err)
		}
	}
	if err := h.d.Reconfigure(cfgA, dial("A", reload)); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := h.d.RunOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for name, versions := range seen {
		for _, v := range versions {
			if v != name {
				t.Errorf("transport %s carried a fetch of config %s", name, v)
			}
		}
	}
	if len(seen["A"]) == 0 || len(seen["B"]) == 0 {
		t.Errorf("fetches per transport %v, want the first attempt on A and the second on B", seen)
	}
}

type taggedSession struct {
	Session
	record func(transport.FetchRequest)
}

func (s *taggedSession) Fetch(ctx context.Context, req transport.FetchRequest) ([]byte, error) {
	s.record(req)
	return s.Session.Fetch(ctx, req)
}

// Status names the failing command of the last attempt and its error, also when the attempt
// ended as NO_COMMANDS after reporting it, and the progress is gone once the attempt is over.
func TestStatusShowsFailedCommand(t *testing.T) {
	h := rowHarness(t, nil, func(m *fakeModem) { m.replies["AT%B="] = reply{final: "+CME ERROR: 518"} })
	h.cloud.push(t, at("a", "%A", ""), at("b", "%B", ""), at("c", "%C", ""))
	var beats []time.Duration
	h.d.deps.Heartbeat = func(quiet time.Duration) { beats = append(beats, quiet) }
	if _, err := h.d.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := h.d.Status()
	if st.Progress != nil {
		t.Errorf("progress after the attempt: %+v", st.Progress)
	}
	la := st.LastAttempt
	if la == nil || la.FailedCommand == nil {
		t.Fatalf("last attempt %+v: no failed command", la)
	}
	if f := la.FailedCommand; f.CorrelationID != "b" || f.Command != "AT%B" || f.Error != "+CME ERROR: 518" {
		t.Errorf("failed command %+v, want b AT%%B +CME ERROR: 518", *f)
	}
	// Every step of the attempt told the heartbeat how long it may take.
	if len(beats) < 4 {
		t.Errorf("%d heartbeats during an attempt of two commands, want one per step", len(beats))
	}
}
