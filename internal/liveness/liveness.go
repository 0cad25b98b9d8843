// Package liveness tells whether the daemon's loops still do their work, so that the systemd
// watchdog is fed only while they do. A goroutine that pings on its own proves nothing but
// that it runs; here each loop (the scheduler, the AT conversation, the control server)
// reports itself, and the watchdog asks Check before each ping.
//
// A part reports Beat when it made progress or is idle and responsive, Stuck when it runs but
// its work is wedged (a write to the modem that never returns), and Pause when it is not
// expected to report at all (no modem is open). A part that neither beats within its allowed
// silence nor is paused counts as wedged.
package liveness

import (
	"fmt"
	"strings"
	"sync"
	"time"
)

// Monitor collects the parts' reports. It is safe for concurrent use.
type Monitor struct {
	now   func() time.Time
	mu    sync.Mutex
	parts []*Part
}

// New returns a monitor reading time from now (nil: time.Now).
func New(now func() time.Time) *Monitor {
	if now == nil {
		now = time.Now
	}
	return &Monitor{now: now}
}

// Part registers a part that must beat at least every silence while it is active. It starts
// paused: nothing is expected of it until its first Beat.
func (m *Monitor) Part(name string, silence time.Duration) *Part {
	p := &Part{m: m, name: name, silence: silence}
	m.mu.Lock()
	m.parts = append(m.parts, p)
	m.mu.Unlock()
	return p
}

// Part is one reporting loop.
type Part struct {
	m       *Monitor
	name    string
	silence time.Duration

	// Guarded by m.mu.
	active bool
	last   time.Time
	quiet  time.Duration // allowed silence after the last beat
	stuck  string
}

// Beat reports progress or responsive idleness; the next report is due within the part's
// silence.
func (p *Part) Beat() { p.BeatWithin(p.silence) }

// BeatWithin is Beat for a part about to start one step that may take up to d (a command to
// the modem, a request to the service) without reporting in between.
func (p *Part) BeatWithin(d time.Duration) {
	now := p.m.now()
	p.m.mu.Lock()
	p.active, p.last, p.quiet, p.stuck = true, now, max(d, p.silence), ""
	p.m.mu.Unlock()
}

// Stuck reports that the part still runs but its work is wedged, and why.
func (p *Part) Stuck(why string) {
	p.m.mu.Lock()
	p.active, p.stuck = true, why
	p.m.mu.Unlock()
}

// Pause reports that nothing is expected of the part until its next Beat.
func (p *Part) Pause() {
	p.m.mu.Lock()
	p.active, p.stuck = false, ""
	p.m.mu.Unlock()
}

// Error names the parts that are wedged.
type Error struct {
	Problems []string // "<part>: <why>"
}

func (e *Error) Error() string { return "wedged: " + strings.Join(e.Problems, "; ") }

// Check returns nil when every active part beat within its allowed silence and none is
// stuck, else an *Error.
func (m *Monitor) Check() error {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var problems []string
	for _, p := range m.parts {
		switch {
		case !p.active:
		case p.stuck != "":
			problems = append(problems, p.name+": "+p.stuck)
		case now.Sub(p.last) > p.quiet:
			problems = append(problems, fmt.Sprintf("%s: no report for %s (allowed %s)",
				p.name, now.Sub(p.last).Round(time.Second), p.quiet))
		}
	}
	if len(problems) > 0 {
		return &Error{Problems: problems}
	}
	return nil
}
