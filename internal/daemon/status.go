package daemon

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/status"
	"github.com/provisiond/provisiond/internal/transport"
)

// Scheduler states reported by Status.
const (
	StateStarting        = status.StateStarting
	StateIdle            = status.StateIdle
	StateProvisioning    = status.StateProvisioning
	StateWaitingForModem = status.StateWaitingForModem
	StateBackoff         = status.StateBackoff
)

// Status is a snapshot of the daemon: the contract of package status.
type Status = status.Daemon

// AttemptStatus describes the last finished attempt.
type AttemptStatus = status.Attempt

// statusState is the part of Status kept under Daemon.mu.
type statusState struct {
	state         string
	progress      *status.Progress
	failed        *status.FailedCommand // the first failed command of the running attempt
	last          *AttemptStatus
	next          time.Time
	deviceUUID    string
	modemVersion  string
	cursor        string
	outboxPending int
	backoff       time.Duration
	attempts      int
	outcomes      map[status.EventName]int
	executed      int
	failedCmds    int
	traffic       transport.Stats // summed over the attempts since start
	lastSuccess   time.Time
	events        eventRing
}

// Status returns a snapshot; safe for concurrent use.
func (d *Daemon) Status() Status {
	interval := d.Interval()
	d.mu.Lock()
	defer d.mu.Unlock()
	s := Status{
		Port:             d.cfg.Port,
		State:            d.status.state,
		DeviceUUID:       d.status.deviceUUID,
		ModemVersion:     d.status.modemVersion,
		Cursor:           d.status.cursor,
		OutboxPending:    d.status.outboxPending,
		IntervalSeconds:  int64(interval),
		BackoffSeconds:   int64(d.status.backoff / time.Second),
		Attempts:         d.status.attempts,
		CommandsExecuted: d.status.executed,
		CommandsFailed:   d.status.failedCmds,

		HandshakesTotal:    d.status.traffic.Handshakes,
		RequestsTotal:      d.status.traffic.Requests,
		BytesSentTotal:     d.status.traffic.BytesSent,
		BytesReceivedTotal: d.status.traffic.BytesReceived,
	}
	if len(d.status.outcomes) > 0 {
		s.Outcomes = make(map[status.EventName]int, len(d.status.outcomes))
		for k, v := range d.status.outcomes {
			s.Outcomes[k] = v
		}
	}
	if !d.status.lastSuccess.IsZero() {
		t := d.status.lastSuccess
		s.LastSuccess = &t
	}
	for _, e := range d.status.events.list() {
		s.Events = append(s.Events, status.Event(e))
	}
	if s.Events == nil {
		s.Events = []status.Event{}
	}
	if s.State == StateWaitingForModem {
		s.WaitingFor = d.waitingForModem()
	}
	if p := d.status.progress; p != nil {
		pc := *p
		s.Progress = &pc
	}
	if d.status.last != nil {
		last := *d.status.last
		if f := last.FailedCommand; f != nil {
			fc := *f
			last.FailedCommand = &fc
		}
		s.LastAttempt = &last
	}
	if !d.status.next.IsZero() {
		next := d.status.next
		s.NextAttempt = &next
	}
	return s
}

// waitingForModem says what the daemon waits for while the modem is missing. Called with
// d.mu held.
func (d *Daemon) waitingForModem() string {
	if d.cfg.Port == "" {
		return "the modem"
	}
	return "the modem on " + d.cfg.Port
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

// step records what the running attempt does now, and tells the heartbeat that the step may
// take up to Deps.MaxStep.
func (d *Daemon) step(what string) {
	d.beat(d.deps.MaxStep)
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.status.progress
	if p == nil || p.Attempt != d.status.attempts {
		// The first step of an attempt.
		p = &status.Progress{Attempt: d.status.attempts, Started: d.now()}
		d.status.progress = p
		d.status.failed = nil
	}
	p.Step = what
	p.Command, p.Commands, p.CorrelationID = 0, 0, ""
}

// beginBatch records that a batch of n commands is about to run.
func (d *Daemon) beginBatch(n int) {
	d.step("executing commands")
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.status.progress; p != nil {
		p.Batch++
		p.Commands = n
	}
}

// commandProgress records that command i (1-based) of the batch starts.
func (d *Daemon) commandProgress(i int, cmd proto.Command) {
	d.beat(d.deps.MaxStep)
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.status.progress; p != nil {
		p.Command, p.CorrelationID = i, cmd.ID
	}
}

// endProgress ends the running attempt's progress; it returns the first failed command the
// attempt reported, for its outcome.
func (d *Daemon) endProgress() *status.FailedCommand {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.status.progress = nil
	f := d.status.failed
	d.status.failed = nil
	return f
}

// noteFailedCommand keeps the first failed command of the attempt for Status and the log.
func (d *Daemon) noteFailedCommand(cmds []proto.Command, r record) {
	fc := &status.FailedCommand{CorrelationID: r.ID, Command: "command", Error: failureText(r)}
	for _, c := range cmds {
		if c.ID != r.ID {
			continue
		}
		switch c.Kind {
		case proto.KindAT:
			fc.Command = "AT" + c.SetCommand
		case proto.KindConfig:
			fc.Command = "config"
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.status.failed == nil {
		d.status.failed = fc
	}
}

// failureText is a failed record as a person reads it: the modem's answer on one line, or
// the CME error code.
func failureText(r record) string {
	if msg := strings.Join(strings.Fields(r.Msg), " "); msg != "" {
		return truncate(msg, 200)
	}
	if r.CME != 0 {
		return "+CME ERROR: " + strconv.FormatUint(r.CME, 10)
	}
	return "failed"
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
