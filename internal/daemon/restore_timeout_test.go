package daemon

import (
	"context"
	"sync"
	"testing"
	"time"
)

// deadlineModem is a fake modem that notes how much time each mode switch was given.
type deadlineModem struct {
	*fakeModem
	mu   sync.Mutex
	left []time.Duration // time.Until the switch's deadline; -1 without one
}

func (m *deadlineModem) SetFunctionalMode(ctx context.Context, mode int) error {
	left := time.Duration(-1)
	if dl, ok := ctx.Deadline(); ok {
		left = time.Until(dl)
	}
	m.mu.Lock()
	m.left = append(m.left, left)
	m.mu.Unlock()
	return m.fakeModem.SetFunctionalMode(ctx, mode)
}

// TestRestoreTimeoutBoundsTheRestore: putting the modem back after a batch, also while the
// daemon stops, gets Config.RestoreTimeout, shorter or longer than the default.
func TestRestoreTimeoutBoundsTheRestore(t *testing.T) {
	tests := []struct {
		name  string
		limit time.Duration
	}{
		{name: "shorter than the default", limit: 2 * time.Second},
		{name: "longer than the default", limit: 10 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := rowHarness(t, func(c *Config) { c.RestoreTimeout = tt.limit }, nil)
			m := &deadlineModem{fakeModem: h.m.open()}
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // a daemon that is stopping still restores the mode
			if err := h.d.restoreMode(ctx, m, 4, false); err != nil {
				t.Fatalf("restoreMode: %v", err)
			}
			if len(m.left) != 1 {
				t.Fatalf("%d mode switches, want 1", len(m.left))
			}
			// The deadline was set just before the switch: at most the limit away, and more
			// than half of it.
			if left := m.left[0]; left <= tt.limit/2 || left > tt.limit {
				t.Errorf("the restore was given %s, want up to %s", left, tt.limit)
			}
		})
	}
}
