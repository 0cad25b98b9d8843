package daemon

import (
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/provisiond/provisiond/internal/logging"
	"github.com/provisiond/provisiond/internal/status"
)

// Event is one of the device library's 13 provisioning events (docs/protocol.md §8).
type Event = status.EventName

// The events, named as in the device library.
const (
	EventStart                  Event = "START"
	EventStop                   Event = "STOP"
	EventDone                   Event = "DONE"
	EventFailed                 Event = "FAILED"
	EventNoCommands             Event = "NO_COMMANDS"
	EventFailedTooManyCommands  Event = "FAILED_TOO_MANY_COMMANDS"
	EventFailedDeviceNotClaimed Event = "FAILED_DEVICE_NOT_CLAIMED"
	EventFailedWrongRootCA      Event = "FAILED_WRONG_ROOT_CA"
	EventFailedNoValidDatetime  Event = "FAILED_NO_VALID_DATETIME"
	EventNeedLTEDeactivated     Event = "NEED_LTE_DEACTIVATED"
	EventNeedLTEActivated       Event = "NEED_LTE_ACTIVATED"
	EventScheduledProvisioning  Event = "SCHEDULED_PROVISIONING"
	EventFatalError             Event = "FATAL_ERROR"
)

// Events lists every event, in the device library's order.
func Events() []Event {
	return []Event{EventStart, EventStop, EventDone, EventFailed, EventNoCommands,
		EventFailedTooManyCommands, EventFailedDeviceNotClaimed, EventFailedWrongRootCA,
		EventFailedNoValidDatetime, EventNeedLTEDeactivated, EventNeedLTEActivated,
		EventScheduledProvisioning, EventFatalError}
}

// messageIDs are the journal MESSAGE_IDs of the events: fixed for good, because the
// journal catalog (deploy/journal/provisiond.catalog) files its explanations under them and
// operators filter by them (`journalctl MESSAGE_ID=…`).
var messageIDs = map[Event]string{
	EventStart:                  "3d0423bbb0c443b8b7f1f364416cc702",
	EventStop:                   "657b427be3fd4530a637f8c1212e0ded",
	EventDone:                   "e2798497742146649f5c774d53a96294",
	EventFailed:                 "ba60a5d6edd340158158a2b6beb31008",
	EventNoCommands:             "5917006ccfe040c5b9e47458966946f3",
	EventFailedTooManyCommands:  "5e4942020f82409d930d91acf5ca773f",
	EventFailedDeviceNotClaimed: "40026b738e8a401293e9e91f2a5292dc",
	EventFailedWrongRootCA:      "5c541f26782645e6a9c80f36239ebe9d",
	EventFailedNoValidDatetime:  "4402e1a50c5e407fa15660dca3d56286",
	EventNeedLTEDeactivated:     "2d02cafd75ce4999b34bbd609f6eb5fe",
	EventNeedLTEActivated:       "3c21260be8f444fb9779329b438f4395",
	EventScheduledProvisioning:  "a886e1ebcb724dfc8e19faf229485afd",
	EventFatalError:             "4f37f6787c0f480ca7244b7cd6263ca8",
}

// MessageID is the journal MESSAGE_ID of ev (32 hex digits), empty for an unknown event.
func MessageID(ev Event) string { return messageIDs[ev] }

// EventRecord is one event as kept for Status and passed to hooks.
type EventRecord struct {
	Time          time.Time  `json:"time"`
	Event         Event      `json:"event"`
	Attempt       int        `json:"attempt,omitempty"`
	Reason        string     `json:"reason,omitempty"`
	CorrelationID string     `json:"correlation_id,omitempty"`
	NextAttempt   *time.Time `json:"next_attempt,omitempty"`
}

// eventInfo is what an emit call knows beyond the event itself.
type eventInfo struct {
	attempt int
	reason  string
	cursor  string
	next    time.Time
	token   string // attestation token, FAILED_DEVICE_NOT_CLAIMED only; never logged in full
	// executed and failed count the attempt's commands (DONE and NO_COMMANDS).
	executed, failed int
}

// sentence is the journal MESSAGE of ev: what happened, in words an operator reads, with the
// event's name first so it stands out in `journalctl -u provisiond`.
func (info eventInfo) sentence(ev Event) string {
	var detail string
	switch ev {
	case EventStart:
		detail = "attempt " + strconv.Itoa(info.attempt) + " started"
	case EventStop:
		detail = "attempt " + strconv.Itoa(info.attempt) + " ended"
	case EventDone:
		detail = commands(info.executed) + " executed"
		if info.failed > 0 {
			detail += ", " + strconv.Itoa(info.failed) + " answered with an error"
		}
	case EventNoCommands:
		detail = "the service had no commands for this device"
		if info.failed > 0 {
			detail = commands(info.executed) + " executed, " + strconv.Itoa(info.failed) + " answered with an error"
		}
	case EventFailed:
		detail = "the attempt failed"
	case EventFailedTooManyCommands:
		detail = "the service's commands do not fit the receive buffer or the batch limit"
	case EventFailedDeviceNotClaimed:
		detail = "the service does not know the device as claimed; claim it with its attestation token (provisiond token)"
	case EventFailedWrongRootCA:
		detail = "the service's certificate is not trusted"
	case EventFailedNoValidDatetime:
		detail = "the modem has no valid date and time to sign its token with"
	case EventNeedLTEDeactivated:
		detail = "taking the modem offline (CFUN=4) to run commands"
	case EventNeedLTEActivated:
		detail = "the modem's saved functional mode is restored"
	case EventScheduledProvisioning:
		detail = "next attempt at " + info.next.UTC().Format(time.RFC3339)
	case EventFatalError:
		detail = "provisioning cannot run"
	}
	if info.reason != "" {
		detail += ": " + info.reason
	}
	return strings.TrimSpace("provisioning " + string(ev) + ": " + detail)
}

func commands(n int) string {
	if n == 1 {
		return "1 command"
	}
	return strconv.Itoa(n) + " commands"
}

// emit logs ev, keeps it for Status and queues the hooks.
func (d *Daemon) emit(ev Event, info eventInfo) {
	info.reason = cleanText(info.reason) // it reaches status output, logs and hook environments
	rec := EventRecord{Time: d.now(), Event: ev, Attempt: info.attempt, Reason: info.reason, CorrelationID: info.cursor}
	if !info.next.IsZero() {
		next := info.next
		rec.NextAttempt = &next
	}
	d.mu.Lock()
	d.status.events.push(rec)
	uuid := d.status.deviceUUID
	cfg := d.cfg
	hooks := d.hooks
	d.mu.Unlock()

	fields := []zap.Field{logging.Message(MessageID(ev), info.sentence(ev)), zap.String("event", string(ev))}
	if info.attempt > 0 {
		fields = append(fields, zap.Int("attempt", info.attempt))
	}
	if info.cursor != "" {
		fields = append(fields, zap.String("correlation_id", info.cursor))
	}
	if uuid != "" {
		fields = append(fields, zap.String("device_uuid", uuid))
	}
	if info.reason != "" {
		fields = append(fields, zap.String("reason", info.reason))
	}
	if rec.NextAttempt != nil {
		fields = append(fields, zap.Time("next_attempt", *rec.NextAttempt))
	}
	if info.token != "" {
		fields = append(fields, logging.Secret("attestation_token", info.token))
	}
	level := eventLevel(ev)
	if info.failed > 0 && level < zapcore.WarnLevel {
		level = zapcore.WarnLevel // NO_COMMANDS or DONE after a failed command is no success
	}
	if ce := d.log.Check(level, "provisioning event"); ce != nil {
		ce.Write(fields...)
	}

	if hooks != nil && cfg.HooksDir != "" {
		hooks.enqueue(hookJob{dir: cfg.HooksDir, timeout: cfg.HookTimeout, env: eventEnv(rec, uuid, info.token), event: ev})
	}
}

func eventLevel(ev Event) zapcore.Level {
	switch ev {
	case EventFatalError:
		return zapcore.ErrorLevel
	case EventFailed, EventFailedTooManyCommands, EventFailedDeviceNotClaimed, EventFailedWrongRootCA,
		EventFailedNoValidDatetime:
		return zapcore.WarnLevel
	}
	return zapcore.InfoLevel
}

// eventEnv is the environment hooks get, on top of the daemon's own. Every value is made one
// line without control characters: the reason and correlation id come from the modem or the
// service, and a NUL in any variable makes exec refuse to start the hook.
func eventEnv(rec EventRecord, uuid, token string) []string {
	next := ""
	if rec.NextAttempt != nil {
		next = rec.NextAttempt.UTC().Format(time.RFC3339)
	}
	vars := [][2]string{
		{"PROVISIOND_EVENT", string(rec.Event)},
		{"PROVISIOND_TIME", rec.Time.UTC().Format(time.RFC3339)},
		{"PROVISIOND_REASON", rec.Reason},
		{"PROVISIOND_DEVICE_UUID", uuid},
		{"PROVISIOND_CORRELATION_ID", rec.CorrelationID},
		{"PROVISIOND_ATTEMPT", strconv.Itoa(rec.Attempt)},
		{"PROVISIOND_NEXT_ATTEMPT", next},
	}
	if token != "" {
		// Hooks run as the daemon's user from a root-owned folder; the token is what an
		// owner needs to claim the device, so a hook may forward it.
		vars = append(vars, [2]string{"PROVISIOND_ATTESTATION_TOKEN", token})
	}
	env := make([]string, 0, len(vars))
	for _, v := range vars {
		env = append(env, v[0]+"="+envValue(v[1]))
	}
	return env
}

// envValue drops what cannot or should not be in an environment variable's value: NUL and
// the other control characters.
func envValue(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
}

// eventRing keeps the last eventRingSize events.
type eventRing struct {
	buf  [eventRingSize]EventRecord
	next int
	n    int
}

func (r *eventRing) push(e EventRecord) {
	r.buf[r.next] = e
	r.next = (r.next + 1) % len(r.buf)
	if r.n < len(r.buf) {
		r.n++
	}
}

// list returns the events oldest first.
func (r *eventRing) list() []EventRecord {
	out := make([]EventRecord, 0, r.n)
	start := (r.next - r.n + len(r.buf)) % len(r.buf)
	for i := range r.n {
		out = append(out, r.buf[(start+i)%len(r.buf)])
	}
	return out
}
