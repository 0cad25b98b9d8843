// Package status is the typed contract of the daemon's status: what the engine reports, what
// the control socket sends as JSON on GET /v1/status, and what `provisiond status` (and any
// dashboard over several instances) reads. It depends on nothing of the daemon, so readers
// need not import the engine.
//
// The JSON names are an interface users script against: add fields, never rename or remove.
package status

import "time"

// Scheduler states in Daemon.State.
const (
	StateStarting        = "starting"
	StateIdle            = "idle"
	StateProvisioning    = "provisioning"
	StateWaitingForModem = "waiting_for_modem"
	StateBackoff         = "backoff"
)

// Daemon is a snapshot of one daemon (one modem).
type Daemon struct {
	// Instance is the systemd template instance (provisiond@<instance>), "" for the plain unit.
	Instance string `json:"instance,omitempty"`
	// Version is the daemon's version.
	Version string `json:"version,omitempty"`
	// Port is the modem's serial device.
	Port string `json:"port,omitempty"`
	// State is one of the State* constants.
	State string `json:"state"`
	// WaitingFor says what the daemon waits for before it can work, e.g. "the modem on
	// /dev/ttyACM0"; empty when it waits for nothing.
	WaitingFor string `json:"waiting_for,omitempty"`
	// Progress is the attempt running now, nil between attempts.
	Progress    *Progress  `json:"progress,omitempty"`
	LastAttempt *Attempt   `json:"last_attempt,omitempty"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	DeviceUUID  string     `json:"device_uuid,omitempty"`
	// ModemVersion is the modem firmware's short version.
	ModemVersion string `json:"modem_version,omitempty"`
	// Cursor is the correlation id of the last command processed.
	Cursor string `json:"cursor"`
	// OutboxPending is how many results wait for upload.
	OutboxPending   int   `json:"outbox_pending"`
	IntervalSeconds int64 `json:"interval_seconds"`
	// BackoffSeconds is the current backoff after a busy or timed-out attempt, 0 when none.
	BackoffSeconds int64 `json:"backoff_seconds,omitempty"`
	// Attempts counts the attempts since start.
	Attempts int `json:"attempts"`
	// Outcomes counts the attempts since start by the event they ended with.
	Outcomes map[EventName]int `json:"outcomes,omitempty"`
	// CommandsExecuted and CommandsFailed count the commands since start: all executed, and
	// those of them the modem or the settings store refused.
	CommandsExecuted int `json:"commands_executed"`
	CommandsFailed   int `json:"commands_failed"`
	// LastSuccess is when the last attempt that Succeeded finished.
	LastSuccess *time.Time `json:"last_success,omitempty"`
	// HandshakesTotal, RequestsTotal, BytesSentTotal and BytesReceivedTotal add up the wire
	// cost of the attempts since start (see the fields of the same names in Attempt).
	HandshakesTotal    int     `json:"handshakes_total"`
	RequestsTotal      int     `json:"requests_total"`
	BytesSentTotal     int64   `json:"bytes_sent_total"`
	BytesReceivedTotal int64   `json:"bytes_received_total"`
	Events             []Event `json:"events"`
}

// Progress is where the running attempt is.
type Progress struct {
	Attempt int       `json:"attempt"`
	Started time.Time `json:"started"`
	// Step is what the attempt does now: "fetching commands", "executing commands"…
	Step string `json:"step"`
	// Batch counts the batches of this attempt (1 for the first); 0 before the first.
	Batch int `json:"batch,omitempty"`
	// Command is the 1-based index of the command being executed among Commands of the batch.
	Command  int `json:"command,omitempty"`
	Commands int `json:"commands,omitempty"`
	// CorrelationID is the id of the command being executed.
	CorrelationID string `json:"correlation_id,omitempty"`
}

// Attempt is the outcome of a finished attempt.
type Attempt struct {
	Number   int       `json:"number"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Event is how it ended: DONE, NO_COMMANDS, FAILED…
	Event    EventName `json:"event"`
	Reason   string    `json:"reason,omitempty"`
	Executed int       `json:"executed"`
	Failed   int       `json:"failed"`
	// FailedCommand is the command that failed in this attempt, if one did. An attempt can
	// end as NO_COMMANDS after reporting a failed command: this says which.
	FailedCommand *FailedCommand `json:"failed_command,omitempty"`
	// What the attempt cost on the wire, counted by its session with the service: all zero
	// when it ended before connecting. Handshakes counts full and resumed (D)TLS handshakes,
	// ResumedHandshakes those of them that resumed a cached session; Requests the HTTP
	// requests or CoAP exchanges; the bytes include the TLS/DTLS framing.
	Handshakes        int   `json:"handshakes,omitempty"`
	ResumedHandshakes int   `json:"resumed_handshakes,omitempty"`
	Requests          int   `json:"requests,omitempty"`
	BytesSent         int64 `json:"bytes_sent,omitempty"`
	BytesReceived     int64 `json:"bytes_received,omitempty"`
}

// Succeeded reports whether the attempt ended well: DONE, or NO_COMMANDS without a command
// that failed on the way.
func (a *Attempt) Succeeded() bool {
	return (a.Event == "DONE" || a.Event == "NO_COMMANDS") && a.Failed == 0 && a.FailedCommand == nil
}

// FailedCommand is a command the modem or the settings store refused.
type FailedCommand struct {
	CorrelationID string `json:"correlation_id"`
	// Command is the AT command's name (e.g. "AT%KEYGEN") or "config"; its parameters are
	// left out, as they may hold key material.
	Command string `json:"command"`
	// Error is what was reported to the service: the CME error code and/or the message.
	Error string `json:"error"`
}

// EventName is one of the device library's provisioning events: START, STOP, DONE, FAILED,
// NO_COMMANDS, FAILED_DEVICE_NOT_CLAIMED…
type EventName string

// Event is one of the daemon's recent events.
type Event struct {
	Time          time.Time  `json:"time"`
	Event         EventName  `json:"event"`
	Attempt       int        `json:"attempt,omitempty"`
	Reason        string     `json:"reason,omitempty"`
	CorrelationID string     `json:"correlation_id,omitempty"`
	NextAttempt   *time.Time `json:"next_attempt,omitempty"`
}
