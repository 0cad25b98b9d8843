// Package logging builds the daemon's zap logger: structured entries on stderr, or, when
// stderr is connected to journald, one native journal record per entry whose fields
// `journalctl` can select by (with the sd-daemon priority prefix on the stream as the
// fallback), and a helper that keeps secrets (JWT, tokens, key material) out of logs.
package logging

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	sdjournal "github.com/coreos/go-systemd/v22/journal"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// Formats accepted in Config.Format.
const (
	FormatAuto    = "auto"
	FormatJSON    = "json"
	FormatConsole = "console"
)

// Config selects the logger's level, encoding and destination. The zero value logs at info
// level to stderr in the "auto" format.
type Config struct {
	// Level is debug, info, warn or error; empty means info.
	Level string
	// Format is auto, json or console; empty means auto. Auto picks journald's native
	// protocol when Writer is the journal stream (console lines without a timestamp on that
	// stream when the native socket refuses an entry), console lines with a timestamp on a
	// terminal, and JSON otherwise (files and pipes feed log collectors). An explicit json
	// or console under journald writes those lines to the stream, each with its priority.
	Format string
	// Writer receives the entries; nil means os.Stderr. Journald is detected only when
	// Writer is an *os.File whose device and inode match JOURNAL_STREAM.
	Writer io.Writer
	// Env reads the environment; nil means os.Getenv. Tests inject JOURNAL_STREAM here.
	Env func(string) string
	// Atomic, when set (zap.NewAtomicLevel()), is the level the logger filters by: New
	// sets it to Level, and later SetLevel calls change the running logger (SIGHUP reload).
	Atomic zap.AtomicLevel
	// JournalFields are added to every native journal record (e.g. PROVISIOND_MODEM_PORT):
	// what identifies this daemon's entries among several instances. Other outputs leave
	// them out.
	JournalFields map[string]string

	// send replaces journal.Send in tests.
	send sendFunc
}

// ParseLevel maps a configured level name onto zap's level; empty means info.
func ParseLevel(s string) (zapcore.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return zapcore.DebugLevel, nil
	case "", "info":
		return zapcore.InfoLevel, nil
	case "warn", "warning":
		return zapcore.WarnLevel, nil
	case "error":
		return zapcore.ErrorLevel, nil
	}
	return 0, fmt.Errorf("logging: level %q: %w", s, ErrBadLevel)
}

// New builds a logger from cfg. The logger is safe for concurrent use.
func New(cfg Config) (*zap.Logger, error) {
	lvl, err := ParseLevel(cfg.Level)
	if err != nil {
		return nil, err
	}
	atomic := cfg.Atomic
	if atomic == (zap.AtomicLevel{}) {
		atomic = zap.NewAtomicLevel()
	}
	atomic.SetLevel(lvl)

	w := cfg.Writer
	if w == nil {
		w = os.Stderr
	}
	env := cfg.Env
	if env == nil {
		env = os.Getenv
	}
	file, _ := w.(*os.File)
	journal := file != nil && IsJournalStream(file, env("JOURNAL_STREAM"))

	format := strings.ToLower(cfg.Format)
	native := journal && (format == "" || format == FormatAuto)
	switch format {
	case "", FormatAuto:
		if journal || (file != nil && isTerminal(file)) {
			format = FormatConsole
		} else {
			format = FormatJSON
		}
	case FormatJSON, FormatConsole:
	default:
		return nil, fmt.Errorf("logging: format %q: %w", cfg.Format, ErrBadFormat)
	}

	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	encCfg.EncodeDuration = zapcore.StringDurationEncoder
	if format == FormatConsole {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
	}
	if journal {
		// journald records the time of each entry; a second timestamp is noise.
		encCfg.TimeKey = zapcore.OmitKey
	}
	var enc zapcore.Encoder
	if format == FormatJSON {
		enc = zapcore.NewJSONEncoder(encCfg)
	} else {
		enc = zapcore.NewConsoleEncoder(encCfg)
	}

	out := writeSyncer(w)
	var core zapcore.Core
	if journal {
		core = &journalCore{LevelEnabler: atomic, enc: enc, out: out}
		if native {
			send := cfg.send
			if send == nil {
				send = sdjournal.Send
			}
			core = &nativeCore{LevelEnabler: atomic, send: send, ident: identifier(),
				static: cfg.JournalFields, fallback: core}
		}
	} else {
		core = zapcore.NewCore(enc, out, atomic)
	}
	return zap.New(core,
		zap.AddCaller(),
		// Error entries report operational failures (a refused reload, a lost modem) whose
		// stack says nothing; only DPanic and worse are bugs worth a stack trace.
		zap.AddStacktrace(zapcore.DPanicLevel),
		zap.ErrorOutput(out),
	), nil
}

// IsJournalStream reports whether f is the stream journald handed to the service, as named by
// the JOURNAL_STREAM value "<device>:<inode>" (systemd.exec(5)). Comparing device and inode
// rather than trusting the variable alone matters: a child whose stderr was redirected
// inherits JOURNAL_STREAM but no longer writes to journald.
func IsJournalStream(f *os.File, journalStream string) bool {
	devStr, inoStr, ok := strings.Cut(journalStream, ":")
	if !ok {
		return false
	}
	dev, err1 := strconv.ParseUint(devStr, 10, 64)
	ino, err2 := strconv.ParseUint(inoStr, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && uint64(st.Ino) == ino
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// writeSyncer adapts w for zap. fsync on a pipe or socket (stderr under journald or a
// supervisor) fails with EINVAL; that is not a logging failure, so it is ignored.
func writeSyncer(w io.Writer) zapcore.WriteSyncer {
	if f, ok := w.(*os.File); ok {
		return fileSyncer{f}
	}
	return zapcore.AddSync(w)
}

type fileSyncer struct{ *os.File }

func (f fileSyncer) Sync() error {
	err := f.File.Sync()
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		return nil
	}
	return err
}
