package logging

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// FieldPrefix starts the name of every journal field the daemon adds from a log field:
// the zap field "device_uuid" becomes PROVISIOND_DEVICE_UUID, so
// `journalctl PROVISIOND_EVENT=DONE` selects entries by what they are about.
const FieldPrefix = "PROVISIOND_"

// messageKey names the field Message returns; zap encoders never see it (SkipType).
const messageKey = "\x00journal-message"

// journalMessage is what Message carries to the native journal core.
type journalMessage struct {
	id, text string
}

// Message returns a field that gives an entry, in the journal only, a MESSAGE_ID and a
// sentence an operator reads as MESSAGE instead of the entry's terse message. id is 32
// lowercase hex digits, fixed for one kind of entry, so that `journalctl -x` can show the
// catalog text filed under it. The console and JSON outputs leave the field out: their
// entries keep the message and fields they have always had.
func Message(id, text string) zap.Field {
	return zap.Field{Key: messageKey, Type: zapcore.SkipType, Interface: journalMessage{id: id, text: text}}
}

// sendFunc sends one entry over journald's native protocol (journal.Send).
type sendFunc func(message string, priority journal.Priority, vars map[string]string) error

// nativeCore writes each entry as one journal record over journald's native socket: MESSAGE,
// PRIORITY, the caller as CODE_FILE/CODE_LINE/CODE_FUNC and every log field as its own
// PROVISIOND_* field. When the socket refuses an entry (journald restarting, a socket the
// sandbox hides) the entry goes to the stream fallback instead of being lost.
type nativeCore struct {
	zapcore.LevelEnabler
	send     sendFunc
	ident    string
	static   map[string]string // added to every record
	fields   []zapcore.Field   // from With
	fallback zapcore.Core
}

func (c *nativeCore) With(fields []zapcore.Field) zapcore.Core {
	clone := *c
	clone.fields = append(append([]zapcore.Field(nil), c.fields...), fields...)
	clone.fallback = c.fallback.With(fields)
	return &clone
}

func (c *nativeCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *nativeCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	message, vars := c.record(ent, fields)
	if err := c.send(message, journal.Priority(Priority(ent.Level)), vars); err != nil {
		return c.fallback.Write(ent, fields)
	}
	return nil
}

func (c *nativeCore) Sync() error { return c.fallback.Sync() }

// record builds the MESSAGE and the other fields of ent.
func (c *nativeCore) record(ent zapcore.Entry, fields []zapcore.Field) (string, map[string]string) {
	vars := make(map[string]string, len(c.static)+len(fields)+6)
	for k, v := range c.static {
		vars[k] = v
	}
	if c.ident != "" {
		vars["SYSLOG_IDENTIFIER"] = c.ident
	}
	if ent.Caller.Defined {
		vars["CODE_FILE"] = ent.Caller.File
		vars["CODE_LINE"] = strconv.Itoa(ent.Caller.Line)
		if ent.Caller.Function != "" {
			vars["CODE_FUNC"] = ent.Caller.Function
		}
	}
	if ent.LoggerName != "" {
		vars[FieldPrefix+"LOGGER"] = ent.LoggerName
	}

	var msg *journalMessage
	enc := zapcore.NewMapObjectEncoder()
	all := append(append([]zapcore.Field(nil), c.fields...), fields...)
	for _, f := range all {
		if f.Key == messageKey && f.Type == zapcore.SkipType {
			if m, ok := f.Interface.(journalMessage); ok {
				msg = &m
			}
			continue
		}
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var extra []string
	for _, k := range keys {
		v := fieldText(enc.Fields[k])
		vars[FieldName(k)] = v
		if k != "error" {
			extra = append(extra, k+"="+quoteIfNeeded(v))
		}
	}

	var message string
	if msg != nil {
		message = msg.text
		vars["MESSAGE_ID"] = msg.id
	} else {
		// An entry without a sentence of its own: its message, the error that explains it,
		// and the other fields in key=value form, so `journalctl` without -o verbose still
		// shows what it is about.
		message = ent.Message
		if e, ok := enc.Fields["error"]; ok {
			message += ": " + fieldText(e)
		}
		if len(extra) > 0 {
			message += " (" + strings.Join(extra, " ") + ")"
		}
	}
	if ent.Stack != "" {
		message += "\n" + ent.Stack
	}
	return message, vars
}

// FieldName is the journal field a log field named key is filed under: FieldPrefix and the
// key in upper case, with every character journald does not allow in a field name (it takes
// A-Z, 0-9 and _) turned into _.
func FieldName(key string) string {
	var b strings.Builder
	b.WriteString(FieldPrefix)
	for _, r := range strings.ToUpper(key) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// fieldText renders a value a zapcore.MapObjectEncoder collected as journal field text.
func fieldText(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano)
	case time.Duration:
		return v.String()
	case fmt.Stringer:
		return v.String()
	case map[string]any, []any:
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Sprint(v)
		}
		return string(b)
	}
	return fmt.Sprint(v)
}

func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\n\"=") {
		return strconv.Quote(s)
	}
	return s
}

// identifier is the SYSLOG_IDENTIFIER of native entries: the program's name, as journald
// takes it for stream entries.
func identifier() string {
	if len(os.Args) == 0 {
		return ""
	}
	return filepath.Base(os.Args[0])
}

// MessageOf returns the MESSAGE_ID and sentence of a field made by Message; ok is false for
// any other field. Tests read what the journal would get from an observed entry with it.
func MessageOf(f zapcore.Field) (id, text string, ok bool) {
	if f.Key != messageKey || f.Type != zapcore.SkipType {
		return "", "", false
	}
	m, ok := f.Interface.(journalMessage)
	return m.id, m.text, ok
}
