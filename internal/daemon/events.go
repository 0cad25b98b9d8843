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
	failed  bool   // a command failed in this attempt: a normal outcome is logged as a warning
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

	fields := []zap.Field{zap.String("event", string(ev))}
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
	if info.failed && level < zapcore.WarnLevel {
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
