// Package atmodem is an AT command client for nRF91 modems over any io.ReadWriter (a serial
// port opened with OpenPort, a pty, a test fake).
//
// One loop goroutine owns the conversation: it runs one command at a time, tells response
// lines from unsolicited result codes (URCs) and command echo, and enforces each command's
// deadline. A reader goroutine only turns bytes into lines and a writer goroutine only
// writes whole commands, so a blocked read or write never stalls the deadline handling.
//
// # Late answers
//
// A command that times out may still be answered later. Its late answer must not be taken
// for the next command's, so the client counts the timed-out exchanges still on the wire:
//   - while idle, arriving lines are drained, and each final result settles one of them;
//   - if a command arrives while some are unsettled, the client first sends a harmless read
//     (a probe: AT+CMEE?, AT+CFUN? or AT+CGSN=1) and waits for a final result that follows
//     the probe's own information line (+CMEE: …). The modem answers in order, so everything
//     before it (late answers, their final results) is discarded, and after it the line is
//     in step again. The probe differs from the timed-out command and from the previous
//     unanswered probe, so neither of their late answers can pass for this probe's.
//
// A new client starts unsynchronised: the port's previous user (a process killed while the
// modem still worked on its command) may have answers on the way. Its first command is
// preceded by a probe as above, and until a probe's own answer has come, final results that
// arrive while idle settle nothing. Should the previous user's answers include a probe's
// (it was itself resynchronising) and be taken for this client's, the probe answers that
// follow are recognised in the next command's answer by their information line (+CMEE:,
// +CFUN:, +CGSN:, %SHORTSWVER:, when the command has no such answer of its own) and
// discarded, also when that line came while idle and only its final result comes with the
// next command.
//
// A first command that is a constant read, AT%SHORTSWVER or AT+CGSN=1, is its own opening
// probe and needs none before it: everything before its own information line is a late
// answer and discarded, and its final result after that line ends the resynchronisation.
// Its answer can only be taken from a previous user that sent the same read, and then says
// the same (firmware version and IMEI do not change while the modem runs); its own answer
// then follows and is discarded as above. Reads whose value can change (+CMEE?, +CFUN?)
// are probed first: a late answer could predate a change. Both the probe and the constant
// read rely on the previous user sending nothing but probes while an answer is due, as this
// client does: a command it sent straight after an unanswered read of the same kind would
// be answered after the one taken, where nothing tells it from the next command's answer.
//
// The probe runs within the new command's deadline; if it gets no answer the command fails
// with ErrTimeout and the count grows by one. MaxTimeouts timeouts in a row (10 by default,
// as in ModemManager) mean the device is gone: ErrPortLost. A cancelled context is not a
// timeout, but a command cancelled after it was written is unsettled like one.
package atmodem

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero values of Config.
const (
	DefaultCommandTimeout = 10 * time.Second
	DefaultLongTimeout    = 60 * time.Second
	DefaultMaxCommandLen  = 4096
	DefaultMaxTimeouts    = 10
	// DefaultMaxResponseLen bounds one command's information lines. The longest legitimate
	// answers are a few KiB (a %CMNG certificate read, +CLAC's command list); 64 KiB leaves
	// room for those many times over while a runaway modem cannot fill the heap.
	DefaultMaxResponseLen = 64 << 10
	DefaultHeartbeatEvery = 5 * time.Second
)

// Config configures a Client. The zero value is valid.
type Config struct {
	// LineEnding terminates commands: "crlf" (default), "cr" or "lf".
	LineEnding string
	// CommandTimeout bounds a command when ctx has no earlier deadline. Default 10s.
	CommandTimeout time.Duration
	// LongTimeout replaces CommandTimeout for slow commands: %KEYGEN, %KEYINJECT, +CFUN
	// writes and %CMNG writes/deletes. Default 60s.
	LongTimeout time.Duration
	// MaxCommandLen is the longest command accepted, terminator included (the modem's AT
	// buffer). Default 4096.
	MaxCommandLen int
	// MaxTimeouts is how many commands in a row may time out before the port counts as lost.
	// Default 10.
	MaxTimeouts int
	// MaxResponseLen bounds the information lines kept for one command, in bytes (each line
	// counted with its "\r\n"). Lines past it are discarded up to the final result, which
	// keeps the conversation in step, and the command fails with a *ResponseTooLongError.
	// Default DefaultMaxResponseLen.
	MaxResponseLen int
	// OnURC, if set, receives every unsolicited line. It runs on the client's loop goroutine:
	// it must return quickly and must not call the Client.
	OnURC func(line string)
	// Heartbeat, if set, is called on the loop goroutine when the loop starts, every
	// HeartbeatEvery (default 5s) and once when it ends. It gets nil while the conversation
	// works (idle, or a command within its timeout), an error wrapping ErrWedged while a write
	// to the port has not returned within its command's timeout, and at the end why the loop
	// stopped (ErrClosed or ErrPortLost). It must return quickly and must not call the Client.
	Heartbeat      func(error)
	HeartbeatEvery time.Duration
}

// Response is a command's answer.
type Response struct {
	// Lines are the information lines before the final result, without echo and URCs.
	Lines []string
	// Final is the final result line: OK, ERROR, +CME ERROR: <n> or +CMS ERROR: <n>.
	Final string
	// Raw is Lines and Final each followed by "\r\n": the modem's answer as the service
	// receives it, e.g. "%KEYGEN: \"<csr>.<cose>\"\r\nOK\r\n".
	Raw string
}

// Stats are counters of what the client discarded, for diagnostics.
type Stats struct {
	URCsDropped   uint64 // URCs not delivered because a subscriber's channel was full
	StaleLines    uint64 // lines of timed-out commands (and stray final results) discarded
	GarbageLines  uint64 // lines that contained invalid UTF-8 or control characters
	OverlongLines uint64 // lines longer than the line limit, discarded
	ExcessLines   uint64 // lines past a command's MaxResponseLen, discarded
	Timeouts      uint64 // commands that timed out
}

// Client is an AT command client. Its methods are safe for concurrent use; commands run one
// at a time in the order they arrive. A Client cannot be reused once Done is closed.
type Client struct {
	rw         io.ReadWriter
	cfg        Config
	terminator string
	cfgErr     error

	reqs      chan *request  // Command → loop
	events    chan readEvent // reader → loop
	writes    chan []byte    // loop → writer
	writeDone chan error     // writer → loop
	quit      chan struct{}  // closed by Close
	done      chan struct{}  // closed by the loop when it stops
	ioDone    chan struct{}  // closed when reader and writer have returned
	closeOnce sync.Once

	errMu    sync.Mutex
	err      error // why the client stopped: ErrClosed or ErrPortLost; set before done closes
	closeErr error // what closing the port returned

	subMu      sync.Mutex
	subs       map[*subscriber]struct{}
	subsClosed bool

	stats struct {
		urcsDropped, stale, garbage, overlong, excess, timeouts atomic.Uint64
	}

	// Only accessed from the loop goroutine.
	loopState
}

type request struct {
	ctx  context.Context
	cmd  string
	wire []byte
	name string
	long bool
	res  chan result // buffered; the loop sends exactly one result
}

type result struct {
	resp Response
	err  error
}

type readEvent struct {
	line     string
	overlong bool
	err      error
}

type subscriber struct {
	ch       chan string
	prefixes []string
}

// New starts a client on rw: a loop goroutine that owns the conversation, a reader and a
// writer goroutine. The client takes over rw: when it stops (Close, a lost port, too many
// timeouts) it closes rw if rw is an io.Closer, which is also the only way to end a Read in
// progress. If rw is not an io.Closer, the reader goroutine lives until its Read returns.
func New(rw io.ReadWriter, cfg Config) *Client {
	c := newState(rw, cfg)
	var ioWG sync.WaitGroup
	ioWG.Add(2)
	go func() { defer ioWG.Done(); c.readLoop() }()
	go func() { defer ioWG.Done(); c.writeLoop() }()
	go func() { ioWG.Wait(); close(c.ioDone) }()
	go c.loop()
	return c
}

// newState builds a client without starting its goroutines.
func newState(rw io.ReadWriter, cfg Config) *Client {
	c := &Client{
		rw:        rw,
		reqs:      make(chan *request),
		events:    make(chan readEvent, 64),
		writes:    make(chan []byte, 1),
		writeDone: make(chan error, 1),
		quit:      make(chan struct{}),
		done:      make(chan struct{}),
		ioDone:    make(chan struct{}),
		subs:      make(map[*subscriber]struct{}),
	}
	c.cfg, c.terminator, c.cfgErr = withDefaults(cfg)
	c.lastProbe = -1
	c.unsynced = true // see "Late answers" in the package doc
	return c
}

func withDefaults(cfg Config) (Config, string, error) {
	var err error
	term := "\r\n"
	switch strings.ToLower(cfg.LineEnding) {
	case "", "crlf":
	case "cr":
		term = "\r"
	case "lf":
		term = "\n"
	default:
		err = fmt.Errorf("atmodem: config: line ending %q (want crlf, cr or lf): %w", cfg.LineEnding, ErrInvalidArgument)
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = DefaultCommandTimeout
	}
	if cfg.LongTimeout <= 0 {
		cfg.LongTimeout = DefaultLongTimeout
	}
	if cfg.MaxCommandLen <= 0 {
		cfg.MaxCommandLen = DefaultMaxCommandLen
	}
	if cfg.MaxTimeouts <= 0 {
		cfg.MaxTimeouts = DefaultMaxTimeouts
	}
	if cfg.MaxResponseLen <= 0 {
		cfg.MaxResponseLen = DefaultMaxResponseLen
	}
	if cfg.HeartbeatEvery <= 0 {
		cfg.HeartbeatEvery = DefaultHeartbeatEvery
	}
	return cfg, term, err
}

// Done is closed when the client stops: after Close, or when the port is lost.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is nil while the client runs, then why it stopped (matching ErrClosed or ErrPortLost).
func (c *Client) Err() error {
	select {
	case <-c.done:
	default:
		return nil
	}
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// Close stops the client and closes rw if it is an io.Closer. A command in flight fails
// with ErrClosed, and so does every later call. Close returns the port's Close error the
// first time, nil after.
func (c *Client) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		close(c.quit)
	})
	<-c.done
	if _, ok := c.rw.(io.Closer); ok {
		<-c.ioDone
	}
	if !first {
		return nil
	}
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.closeErr
}

// Stats returns the discard counters.
func (c *Client) Stats() Stats {
	return Stats{
		URCsDropped:   c.stats.urcsDropped.Load(),
		StaleLines:    c.stats.stale.Load(),
		GarbageLines:  c.stats.garbage.Load(),
		OverlongLines: c.stats.overlong.Load(),
		ExcessLines:   c.stats.excess.Load(),
		Timeouts:      c.stats.timeouts.Load(),
	}
}

// Command sends cmd (without terminator) and waits for its final result. It returns at the
// earlier of ctx's deadline and the default timeout for the command (Config.CommandTimeout,
// or LongTimeout for slow commands), or when ctx is cancelled. On ERROR, +CME ERROR and
// +CMS ERROR the Response is filled and the error is ErrError, *CMEError or *CMSError
// wrapped with the command name. Nothing is written when the command is too long
// (ErrCommandTooLong) or malformed (ErrInvalidCommand).
func (c *Client) Command(ctx context.Context, cmd string) (Response, error) {
	name := commandName(cmd)
	if c.cfgErr != nil {
		return Response{}, c.cfgErr
	}
	if err := checkCommand(cmd); err != nil {
		return Response{}, fmt.Errorf("atmodem: %s: %w", name, err)
	}
	wire := make([]byte, 0, len(cmd)+len(c.terminator))
	wire = append(append(wire, cmd...), c.terminator...)
	if len(wire) > c.cfg.MaxCommandLen {
		return Response{}, fmt.Errorf("atmodem: %s: %d bytes with terminator, limit %d: %w",
			name, len(wire), c.cfg.MaxCommandLen, ErrCommandTooLong)
	}
	req := &request{ctx: ctx, cmd: cmd, wire: wire, name: name, long: isLong(cmd), res: make(chan result, 1)}
	select {
	case c.reqs <- req:
	case <-c.done:
		return Response{}, fmt.Errorf("atmodem: %s: %w", name, c.Err())
	case <-ctx.Done():
		return Response{}, fmt.Errorf("atmodem: %s: %w", name, ctx.Err())
	}
	r := <-req.res
	return r.resp, r.err
}

// isLong reports whether cmd is one of the slow commands that get Config.LongTimeout.
func isLong(cmd string) bool {
	u := strings.ToUpper(cmd)
	for _, p := range []string{"AT%KEYGEN", "AT%KEYINJECT", "AT+CFUN=", "AT%CMNG=0", "AT%CMNG=3"} {
		if strings.HasPrefix(u, p) {
			return true
		}
	}
	return false
}

// Subscribe returns a channel receiving the URCs that start with one of prefixes (all URCs
// if none), and a function that ends the subscription and closes the channel. Delivery
// never blocks the client: when the channel (64 lines) is full the URC is dropped and
// counted in Stats. The channel is also closed when the client stops.
func (c *Client) Subscribe(prefixes ...string) (<-chan string, func()) {
	s := &subscriber{ch: make(chan string, 64), prefixes: prefixes}
	c.subMu.Lock()
	defer c.subMu.Unlock()
	if c.subsClosed {
		close(s.ch)
		return s.ch, func() {}
	}
	c.subs[s] = struct{}{}
	return s.ch, func() {
		c.subMu.Lock()
		defer c.subMu.Unlock()
		if _, ok := c.subs[s]; ok {
			delete(c.subs, s)
			close(s.ch)
		}
	}
}

func (c *Client) deliverURC(line string) {
	if c.cfg.OnURC != nil {
		c.cfg.OnURC(line)
	}
	c.subMu.Lock()
	defer c.subMu.Unlock()
	for s := range c.subs {
		if !matchesAny(line, s.prefixes) {
			continue
		}
		select {
		case s.ch <- line:
		default:
			c.stats.urcsDropped.Add(1)
		}
	}
}

func matchesAny(line string, prefixes []string) bool {
	if len(prefixes) == 0 {
		return true
	}
	for _, p := range prefixes {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return false
}

// readLoop turns the port's bytes into lines for the loop. It is the only reader of rw.
func (c *Client) readLoop() {
	buf := make([]byte, 4096)
	var sp lineSplitter
	zeroReads := 0
	send := func(ev readEvent) bool {
		select {
		case c.events <- ev:
			return true
		case <-c.done:
			return false
		}
	}
	for {
		n, err := c.rw.Read(buf)
		if !c.split(&sp, buf[:n], send) {
			return
		}
		if err != nil {
			send(readEvent{err: err})
			return
		}
		if n > 0 {
			zeroReads = 0
			continue
		}
		// A serial port with a read timeout returns (0, nil) when idle; one that keeps
		// doing so at once must not make this loop spin.
		zeroReads++
		if zeroReads > 1 {
			t := time.NewTimer(min(time.Duration(zeroReads)*time.Millisecond, 100*time.Millisecond))
			select {
			case <-t.C:
			case <-c.done:
				t.Stop()
				return
			}
		}
	}
}

// lineSplitter is the reader's partial line. Lines end at CR or LF; empty lines vanish.
type lineSplitter struct {
	line       []byte
	discarding bool // inside an overlong line, until its terminator
	max        int  // longest line kept; 0 means maxLineLen (tests use less)
}

// split feeds p through sp and emits each complete line (sanitized) and each overlong line.
// It stops early, returning false, when emit does.
func (c *Client) split(sp *lineSplitter, p []byte, emit func(readEvent) bool) bool {
	for _, b := range p {
		switch {
		case b == '\r' || b == '\n':
			if sp.discarding {
				sp.discarding = false
				continue
			}
			if len(sp.line) == 0 {
				continue
			}
			s, dirty := sanitizeLine(sp.line)
			sp.line = sp.line[:0]
			if dirty {
				c.stats.garbage.Add(1)
			}
			if s != "" && !emit(readEvent{line: s}) {
				return false
			}
		case sp.discarding:
		case len(sp.line) >= maxLineLen || (sp.max > 0 && len(sp.line) >= sp.max):
			sp.discarding = true
			sp.line = sp.line[:0]
			c.stats.overlong.Add(1)
			if !emit(readEvent{overlong: true}) {
				return false
			}
		default:
			sp.line = append(sp.line, b)
		}
	}
	return true
}

// writeLoop writes whole commands. It is the only writer of rw.
func (c *Client) writeLoop() {
	for {
		select {
		case b := <-c.writes:
			err := writeFull(c.rw, b)
			select {
			case c.writeDone <- err:
			case <-c.done:
				return
			}
		case <-c.done:
			return
		}
	}
}

// writeFull writes all of b even when w makes short writes.
func writeFull(w io.Writer, b []byte) error {
	stalls := 0
	for len(b) > 0 {
		n, err := w.Write(b)
		if n < 0 || n > len(b) {
			return fmt.Errorf("write returned %d: %w", n, io.ErrShortWrite)
		}
		b = b[n:]
		if err != nil {
			return err
		}
		if n == 0 {
			if stalls++; stalls > 100 {
				return io.ErrShortWrite
			}
			continue
		}
		stalls = 0
	}
	return nil
}

// errorForFinal turns a final result line into the command's error (nil for OK).
func errorForFinal(kind finalKind, final string) error {
	switch kind {
	case finalError:
		return ErrError
	case finalCME:
		return &CMEError{Code: parseFinalCode(strings.TrimPrefix(final, "+CME ERROR:")), Raw: final}
	case finalCMS:
		return &CMSError{Code: parseFinalCode(strings.TrimPrefix(final, "+CMS ERROR:")), Raw: final}
	}
	return nil
}

// buildResponse joins lines and final the way the modem library hands them on.
func buildResponse(lines []string, final string) Response {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	b.WriteString(final)
	b.WriteString("\r\n")
	return Response{Lines: lines, Final: final, Raw: b.String()}
}

// stop records why the client stops and closes the port. Only the loop calls it.
func (c *Client) stop(why error) {
	var closeErr error
	if cl, ok := c.rw.(io.Closer); ok {
		closeErr = cl.Close()
	}
	c.errMu.Lock()
	c.err = why
	c.closeErr = closeErr
	c.errMu.Unlock()
	c.subMu.Lock()
	c.subsClosed = true
	for s := range c.subs {
		delete(c.subs, s)
		close(s.ch)
	}
	c.subMu.Unlock()
	close(c.done)
}
