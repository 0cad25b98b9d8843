package daemon

import (
	"fmt"
	"time"
)

// Scheduler states reported by Status.
const (
	StateStarting        = "starting"
	StateIdle            = "idle"
	StateProvisioning    = "provisioning"
	StateWaitingForModem = "waiting_for_modem"
	StateBackoff         = "backoff"
)

// Status is a snapshot of the daemon for `provisiond status`.
type Status struct {
	State           string         `json:"state"`
	LastAttempt     *AttemptStatus `json:"last_attempt,omitempty"`
	NextAttempt     *time.Time     `json:"next_attempt,omitempty"`
	DeviceUUID      string         `json:"device_uuid,omitempty"`
	ModemVersion    string         `json:"modem_version,omitempty"`
	Cursor          string         `json:"cursor"`
	OutboxPending   int            `json:"outbox_pending"`
	IntervalSeconds int64          `json:"interval_seconds"`
	BackoffSeconds  int64          `json:"backoff_seconds,omitempty"`
	Attempts        int            `json:"attempts"`
	Events          []EventRecord  `json:"events"`
}

// AttemptStatus describes the last finished attempt.
type AttemptStatus struct {
	Number   int       `json:"number"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Event    Event     `json:"event"`
	Reason   string    `json:"reason,omitempty"`
	Executed int       `json:"executed"`
	Failed   int       `json:"failed"`
}

// statusState is the part of Status kept under Daemon.mu.
type statusState struct {
	state         string
	last          *AttemptStatus
	next          time.Time
	deviceUUID    string
	modemVersion  string
	cursor        string
	outboxPending int
	backoff       time.Duration
	attempts      int
	events        eventRing
}

// Status returns a snapshot; safe for concurrent use.
func (d *Daemon) Status() Status {
	interval := d.Interval()
	d.mu.Lock()
	defer d.mu.Unlock()
	s := Status{
		State:           d.status.state,
		DeviceUUID:      d.status.deviceUUID,
		ModemVersion:    d.status.modemVersion,
		Cursor:          d.status.cursor,
		OutboxPending:   d.status.outboxPending,
		IntervalSeconds: int64(interval),
		BackoffSeconds:  int64(d.status.backoff / time.Second),
		Attempts:        d.status.attempts,
		Events:          d.status.events.list(),
	}
	if d.status.last != nil {
		last := *d.status.last
		s.LastAttempt = &last
	}
	if !d.status.next.IsZero() {
		next := d.status.next
		s.NextAttempt = &next
	}
	return s
}

// Interval returns the interval between scheduled attempts in seconds: the store's
// <prefix>/interval-sec when set and valid, else Config.Interval.
func (d *Daemon) Interval() int {
	return int(d.interval(d.config()) / time.Second)
}

func (d *Daemon) setState(state string) {
	d.mu.Lock()
	d.status.state = state
	d.mu.Unlock()
}

func (d *Daemon) setCursorStatus(cursor string, ob *outbox) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.status.cursor = cursor
	d.status.outboxPending = 0
	if ob != nil {
		d.status.outboxPending = len(ob.Responses)
	}
}

// notifyText is the one-line summary passed to Deps.Notify after an attempt; backoff is the
// delay before next when the scheduler is backing off (0 for a normal interval).
func notifyText(res Result, next time.Time, backoff time.Duration) string {
	s := fmt.Sprintf("last attempt: %s (%d executed, %d failed)", res.Event, res.Executed, res.Failed)
	if res.Reason != "" {
		s += ": " + res.Reason
	}
	if !next.IsZero() {
		s += "; next " + next.UTC().Format(time.RFC3339)
		if backoff > 0 {
			s += " (backing off " + backoff.String() + ")"
		}
	}
	return s
}
