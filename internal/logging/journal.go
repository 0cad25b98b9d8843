package logging

import (
	"bytes"

	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
)

// Priority returns the syslog priority journald files an entry of level l under: the <N>
// prefix of sd-daemon(3). DPanic, panic and fatal are all "critical".
func Priority(l zapcore.Level) int {
	switch {
	case l <= zapcore.DebugLevel:
		return 7
	case l == zapcore.InfoLevel:
		return 6
	case l == zapcore.WarnLevel:
		return 4
	case l == zapcore.ErrorLevel:
		return 3
	default:
		return 2
	}
}

// journalCore writes entries for journald's stdout/stderr stream: every line starts with the
// entry's priority prefix. Each line becomes its own journal entry, so the lines of a
// multi-line entry (a console stack trace) each get the prefix too and keep the entry's
// priority instead of falling back to the unit's default.
type journalCore struct {
	zapcore.LevelEnabler
	enc zapcore.Encoder
	out zapcore.WriteSyncer
}

func (c *journalCore) With(fields []zapcore.Field) zapcore.Core {
	enc := c.enc.Clone()
	for _, f := range fields {
		f.AddTo(enc)
	}
	return &journalCore{LevelEnabler: c.LevelEnabler, enc: enc, out: c.out}
}

func (c *journalCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *journalCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	buf, err := c.enc.EncodeEntry(ent, fields)
	if err != nil {
		return err
	}
	defer buf.Free()
	out := prefixLines(buf.Bytes(), Priority(ent.Level))
	defer out.Free()
	if _, err := c.out.Write(out.Bytes()); err != nil {
		return err
	}
	if ent.Level > zapcore.ErrorLevel {
		// The process may be about to exit; same rule as zap's own ioCore.
		return c.out.Sync()
	}
	return nil
}

func (c *journalCore) Sync() error { return c.out.Sync() }

var linePool = buffer.NewPool()

// prefixLines returns b with "<prio>" at the start of each line.
func prefixLines(b []byte, prio int) *buffer.Buffer {
	out := linePool.Get()
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line = b[:i+1]
		}
		b = b[len(line):]
		out.AppendByte('<')
		out.AppendInt(int64(prio))
		out.AppendByte('>')
		_, _ = out.Write(line)
	}
	return out
}
