package simcloud

import (
	"crypto/tls"
	"errors"
	"testing"
	"time"
)

func TestNewRejectsNegativeDelay(t *testing.T) {
	for _, cfg := range []Config{{RTT: -time.Millisecond}, {Processing: -time.Millisecond}} {
		if _, err := New(cfg); !errors.Is(err, ErrInvalid) {
			t.Errorf("New(RTT %v, Processing %v) error = %v, want ErrInvalid", cfg.RTT, cfg.Processing, err)
		}
	}
}

// The delays are installed only when asked for, so the zero config serves exactly as before.
func TestDelayHooksOnlyWithDelay(t *testing.T) {
	for _, tt := range []struct {
		rtt, processing time.Duration
		wantTLSHook     bool
		wantRequestWait time.Duration
	}{
		{0, 0, false, 0},
		{50 * time.Millisecond, 0, true, 50 * time.Millisecond},
		{0, 5 * time.Millisecond, false, 5 * time.Millisecond},
		{300 * time.Millisecond, 5 * time.Millisecond, true, 305 * time.Millisecond},
	} {
		s := &Server{cfg: Config{RTT: tt.rtt, Processing: tt.processing}}
		cfg := s.delayTLSHandshake(&tls.Config{})
		if got := cfg.GetConfigForClient != nil; got != tt.wantTLSHook {
			t.Errorf("RTT %v: TLS handshake hook installed = %v, want %v", tt.rtt, got, tt.wantTLSHook)
		}
		if got := s.requestDelay(); got != tt.wantRequestWait {
			t.Errorf("RTT %v, Processing %v: requestDelay = %v, want %v", tt.rtt, tt.processing, got, tt.wantRequestWait)
		}
	}
}
