package daemon

import (
	"strconv"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/provisiond/provisiond/internal/logging"
	"github.com/provisiond/provisiond/internal/status"
)

// Event is one of the device library's 13 provisioning events (protocol.md §8).
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
}

// emit logs ev, keeps it for Status and queues the hooks.
func (d *Daemon) emit(ev Event, info eventInfo) {
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
	if ce := d.log.Check(eventLevel(ev), "provisioning event"); ce != nil {
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

// eventEnv is the environment hooks get, on top of the daemon's own.
func eventEnv(rec EventRecord, uuid, token string) []string {
	env := []string{
		"PROVISIOND_EVENT=" + string(rec.Event),
		"PROVISIOND_TIME=" + rec.Time.UTC().Format(time.RFC3339),
		"PROVISIOND_REASON=" + rec.Reason,
		"PROVISIOND_DEVICE_UUID=" + uuid,
		"PROVISIOND_CORRELATION_ID=" + rec.CorrelationID,
		"PROVISIOND_ATTEMPT=" + strconv.Itoa(rec.Attempt),
	}
	next := ""
	if rec.NextAttempt != nil {
		next = rec.NextAttempt.UTC().Format(time.RFC3339)
	}
	env = append(env, "PROVISIOND_NEXT_ATTEMPT="+next)
	if token != "" {
		// Hooks run as the daemon's user from a root-owned folder; the token is what an
		// owner needs to claim the device, so a hook may forward it.
		env = append(env, "PROVISIOND_ATTESTATION_TOKEN="+token)
	}
	return env
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
