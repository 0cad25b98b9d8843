package simmodem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// session is one served stream. Its read loop (one goroutine) frames and executes
// commands in order; URCs from timers and the storm goroutine share the line through wmu,
// one whole line at a time, so they can land between the lines of an answer.
type session struct {
	m      *Modem
	rw     io.ReadWriter
	wmu    sync.Mutex // serialises writes; guards out
	out    pacer
	in     pacer // owned by the read loop
	cutFn  func()
	cut    atomic.Bool
	framer framer // owned by the read loop
}

// reply is the answer to one command before framing.
type reply struct {
	lines []string
	final string // "OK" or "ERROR"; ignored when cme >= 0
	cme   int    // -1: none; otherwise a CME error code
	after []string
}

func okReply(lines ...string) reply { return reply{lines: lines, final: "OK", cme: -1} }
func errReply() reply               { return reply{final: "ERROR", cme: -1} }
func cmeReply(code int) reply       { return reply{cme: code} }

// Serve runs the AT engine on rw until ctx is cancelled (returns ctx.Err()), rw reports EOF
// (returns nil), a read or write fails (returns the error), or an UnplugDuring fault cuts the
// line (returns ErrUnplugged). On cancellation, a rw with SetDeadline (net.Conn, a
// non-blocking *os.File) is unblocked and Serve waits for its goroutine; otherwise Serve
// returns at once and the goroutine ends when the caller closes rw.
func (m *Modem) Serve(ctx context.Context, rw io.ReadWriter) error {
	return m.serve(ctx, rw, nil)
}

func (m *Modem) serve(ctx context.Context, rw io.ReadWriter, cutFn func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &session{m: m, rw: rw, cutFn: cutFn}
	rate := float64(m.cfg.Baud) / 10
	s.out.rate, s.in.rate = rate, rate
	s.framer = framer{mode: m.cfg.LineEnding, max: m.cfg.MaxCommandLen}
	m.mu.Lock()
	m.sessions[s] = struct{}{}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.sessions, s)
		m.mu.Unlock()
	}()

	var wg sync.WaitGroup
	wg.Go(func() { s.stormLoop(ctx) })
	defer func() {
		cancel()
		wg.Wait()
	}()

	errc := make(chan error, 1)
	go func() { errc <- s.readLoop(ctx) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		if d, ok := rw.(interface{ SetDeadline(time.Time) error }); ok && d.SetDeadline(time.Now()) == nil {
			<-errc
		}
		return ctx.Err()
	}
}

func (s *session) readLoop(ctx context.Context) error {
	if b := s.m.cfg.Banner; b != "" {
		if err := s.writeLine(ctx, b, lineResp); err != nil {
			return s.ioErr(ctx, "write", err)
		}
	}
	buf := make([]byte, 512)
	for {
		n, err := s.rw.Read(buf)
		if n > 0 {
			s.m.mu.Lock()
			s.m.stats.BytesIn += int64(n)
			s.m.mu.Unlock()
			if perr := s.in.wait(ctx, n); perr != nil {
				return perr
			}
			for _, b := range buf[:n] {
				cmd, state := s.framer.feed(b)
				if state == frameNone {
					continue
				}
				if xerr := s.execute(ctx, cmd, state == frameTooLong); xerr != nil {
					return s.ioErr(ctx, "write", xerr)
				}
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) && !s.cut.Load() {
				return nil
			}
			return s.ioErr(ctx, "read", err)
		}
	}
}

// ioErr names why the loop ended: our own cut, cancellation, or the stream's error.
func (s *session) ioErr(ctx context.Context, op string, err error) error {
	switch {
	case s.cut.Load():
		return ErrUnplugged
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, ErrUnplugged):
		return err
	}
	return fmt.Errorf("simmodem: %s: %w", op, err)
}

// execute runs one framed command and writes its answer.
func (s *session) execute(ctx context.Context, raw string, tooLong bool) error {
	m := s.m
	m.mu.Lock()
	if len(m.log) >= maxCommandLog {
		m.log = append(m.log[:0], m.log[len(m.log)-maxCommandLog/2:]...)
	}
	m.log = append(m.log, raw)
	m.stats.Commands++
	echo := m.echo && m.dropEcho == 0
	if m.echo && m.dropEcho > 0 {
		m.dropEcho--
	}
	m.mu.Unlock()
	if echo {
		if err := s.writeLine(ctx, raw, lineResp); err != nil {
			return err
		}
	}
	if err := m.waitStall(ctx); err != nil {
		return err
	}
	if err := sleepCtx(ctx, m.cfg.Latency+m.cfg.Timing.For(raw)); err != nil {
		return err
	}
	var r reply
	if tooLong {
		r = errReply()
	} else if code, ok := m.injectedCME(raw); ok {
		r = cmeReply(code)
	} else {
		r = m.handle(raw)
	}
	return s.writeReply(ctx, raw, r)
}

func (m *Modem) waitStall(ctx context.Context) error {
	m.mu.Lock()
	ch := m.stallCh
	m.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *Modem) injectedCME(raw string) (int, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for p, code := range m.cmeFor {
		if hasPrefixFold(raw, p) {
			return code, true
		}
	}
	return 0, false
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

type lineKind int

const (
	lineResp lineKind = iota
	lineURC
	lineGarbage
)

type outLine struct {
	text string
	kind lineKind
}

// writeReply frames r like the modem ("<line>\r\n" per line, then the final result line),
// adding the configured garbage and storm lines, and cuts the line half way through when
// an UnplugDuring fault matches.
func (s *session) writeReply(ctx context.Context, raw string, r reply) error {
	m := s.m
	m.mu.Lock()
	final := r.final
	if r.cme >= 0 {
		final = "ERROR"
		if m.cmee == 1 {
			final = fmt.Sprintf("+CME ERROR: %d", r.cme)
		}
	}
	if final != "OK" {
		m.stats.Errors++
	}
	garbage, storm := m.garbage, m.stormRate > 0
	unplug := m.unplugNext != "" && hasPrefixFold(raw, m.unplugNext)
	if unplug {
		m.unplugNext = ""
	}
	m.mu.Unlock()

	var out []outLine
	for range garbage {
		out = append(out, outLine{garbageLine(), lineGarbage})
	}
	for _, l := range append(r.lines, final) {
		if storm {
			out = append(out, outLine{stormURC(commandName(raw)), lineURC})
		}
		out = append(out, outLine{l, lineResp})
	}
	for range garbage {
		out = append(out, outLine{garbageLine(), lineGarbage})
	}
	if unplug {
		return s.writeCut(ctx, out)
	}
	for _, l := range out {
		if err := s.writeLine(ctx, l.text, l.kind); err != nil {
			return err
		}
	}
	for _, u := range r.after {
		if err := s.writeLine(ctx, u, lineURC); err != nil {
			return err
		}
	}
	return nil
}

// writeCut writes the first half of an answer and then unplugs.
func (s *session) writeCut(ctx context.Context, out []outLine) error {
	var b strings.Builder
	for _, l := range out {
		b.WriteString(l.text + "\r\n")
	}
	half := []byte(b.String())[:b.Len()/2]
	s.wmu.Lock()
	err := s.writeRawLocked(ctx, half)
	s.wmu.Unlock()
	if err != nil {
		return err
	}
	s.unplug()
	return ErrUnplugged
}

// unplug cuts this session's line.
func (s *session) unplug() {
	if s.cut.Swap(true) {
		return
	}
	s.m.mu.Lock()
	s.m.stats.Unplugged++
	s.m.mu.Unlock()
	if s.cutFn != nil {
		s.cutFn()
		return
	}
	// A plain stream: wake a read blocked on it, if it has deadlines.
	if d, ok := s.rw.(interface{ SetDeadline(time.Time) error }); ok {
		_ = d.SetDeadline(time.Now())
	}
}

// writeLine writes one line and its CR LF as a unit.
func (s *session) writeLine(ctx context.Context, text string, kind lineKind) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.cut.Load() {
		return ErrUnplugged
	}
	if err := s.writeRawLocked(ctx, []byte(text+"\r\n")); err != nil {
		return err
	}
	s.m.mu.Lock()
	switch kind {
	case lineURC:
		s.m.stats.URCs++
	case lineGarbage:
		s.m.stats.Garbage++
	}
	s.m.mu.Unlock()
	return nil
}

// writeRawLocked writes b at the line rate, in SplitWrites pieces if set. wmu is held.
func (s *session) writeRawLocked(ctx context.Context, b []byte) error {
	s.m.mu.Lock()
	split := s.m.splitWrites
	s.m.mu.Unlock()
	chunk := len(b)
	if s.out.rate > 0 {
		chunk = min(chunk, 64) // pace in small steps so the rate holds within a line
	}
	if split > 0 {
		chunk = min(chunk, split)
	}
	for len(b) > 0 {
		n := min(chunk, len(b))
		if err := s.out.wait(ctx, n); err != nil {
			return err
		}
		w, err := s.rw.Write(b[:n])
		s.m.mu.Lock()
		s.m.stats.BytesOut += int64(w)
		s.m.mu.Unlock()
		if err != nil {
			return err
		}
		b = b[n:]
		if split > 0 && len(b) > 0 {
			if err := sleepCtx(ctx, 200*time.Microsecond); err != nil {
				return err
			}
		}
	}
	return nil
}

// emitURC writes an unsolicited line to every served stream.
func (m *Modem) emitURC(line string) {
	for _, s := range m.liveSessions() {
		_ = s.writeLine(context.Background(), line, lineURC) // a dead stream just misses it
	}
}

// liveSessions returns the streams served right now; the caller works on them without m.mu,
// as their writes may block.
func (m *Modem) liveSessions() []*session {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Collect(maps.Keys(m.sessions))
}

// stormLoop emits storm URCs at the configured rate while the session lives.
func (s *session) stormLoop(ctx context.Context) {
	for {
		s.m.mu.Lock()
		rate, changed := s.m.stormRate, s.m.stormCh
		s.m.mu.Unlock()
		if rate == 0 {
			select {
			case <-ctx.Done():
				return
			case <-changed:
				continue
			}
		}
		t := time.NewTicker(time.Second / time.Duration(rate))
	tick:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-changed:
				break tick
			case <-t.C:
				if s.writeLine(ctx, stormURC(""), lineURC) != nil {
					t.Stop()
					return
				}
			}
		}
		t.Stop()
	}
}

// stormURC picks a plausible unsolicited line whose prefix differs from the running
// command's name, so a client that matches URCs against the pending command can still tell
// them apart. None of them answers a command.
func stormURC(cmdName string) string {
	urcs := [...]string{
		`+CSCON: 1`,
		`%CESQ: 54,2,18,3`,
		`+CSCON: 0`,
		`%XTIME: "","62117002104480","00"`,
		`+CEREG: 5,"76C1","0102DA04",7`,
		`%MDMEV: PRACH CE-LEVEL 0`,
	}
	for {
		u := urcs[rand.IntN(len(urcs))]
		if cmdName == "" || !strings.HasPrefix(u, cmdName+":") {
			return u
		}
	}
}

// garbageLine is line noise: control bytes and bytes that can never be valid UTF-8 (lone
// continuation bytes, 0xFE, 0xFF), sometimes nothing at all. It never holds CR or LF, so
// line framing survives, and never decodes to printable text a client could take for an
// answer.
func garbageLine() string {
	b := make([]byte, rand.IntN(12))
	for i := range b {
		if rand.IntN(2) == 0 {
			b[i] = byte(0x80 + rand.IntN(0x40))
		} else {
			b[i] = []byte{0x00, 0x01, 0x07, 0x1b, 0x7f, 0xfe, 0xff}[rand.IntN(7)]
		}
	}
	return string(b)
}

// commandName returns "+CFUN" for "AT+CFUN=1", "" for plain AT.
func commandName(raw string) string {
	if len(raw) < 3 {
		return ""
	}
	rest := raw[2:]
	if i := strings.IndexAny(rest, "=?"); i >= 0 {
		rest = rest[:i]
	}
	return strings.ToUpper(rest)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pacer holds a byte stream to a line rate: each wait(n) returns when n more bytes would
// have crossed the line since it was last idle.
type pacer struct {
	rate float64 // bytes per second; 0 = unlimited
	next time.Time
}

// pacerSlack is how late a wait may come and still count as the same busy stretch of the
// line. Without it every timer overshoot would be added to the transfer time.
const pacerSlack = 2 * time.Millisecond

func (p *pacer) wait(ctx context.Context, n int) error {
	if p.rate <= 0 {
		return nil
	}
	now := time.Now()
	if now.Sub(p.next) > pacerSlack {
		p.next = now // the line was idle
	}
	p.next = p.next.Add(time.Duration(float64(n) / p.rate * float64(time.Second)))
	return sleepCtx(ctx, time.Until(p.next))
}

type frameState int

const (
	frameNone frameState = iota
	frameCommand
	frameTooLong
)

// framer splits the input into commands. A terminator inside double quotes does not end
// a command, so %CMNG PEM bodies arrive whole. Leading whitespace (the LF of a CR LF in CR
// mode) is skipped; a command without printable characters is dropped, as the AT host does.
type framer struct {
	mode      string
	max       int
	buf       []byte
	size      int // bytes of the command so far, including those dropped past max
	inQuote   bool
	pendingCR bool // crlf mode: a CR outside quotes waits for its LF
}

func (f *framer) feed(b byte) (string, frameState) {
	if f.pendingCR {
		f.pendingCR = false
		if b == '\n' {
			return f.finish(2)
		}
		f.add('\r')
	}
	if !f.inQuote {
		switch {
		case f.mode == LineEndingAny && (b == '\r' || b == '\n' || b == 0):
			return f.finish(1)
		case f.mode == LineEndingCR && b == '\r', f.mode == LineEndingLF && b == '\n':
			return f.finish(1)
		case f.mode == LineEndingCRLF && b == '\r':
			f.pendingCR = true
			return "", frameNone
		}
	}
	if b == '"' {
		f.inQuote = !f.inQuote
	}
	f.add(b)
	return "", frameNone
}

func (f *framer) add(b byte) {
	if f.size == 0 && (b == ' ' || b == '\t' || b == '\r' || b == '\n' || b == 0) {
		return
	}
	f.size++
	if f.size <= f.max {
		f.buf = append(f.buf, b)
	}
}

func (f *framer) finish(termLen int) (string, frameState) {
	cmd, size := string(f.buf), f.size
	f.buf, f.size, f.inQuote = f.buf[:0], 0, false
	if size == 0 || strings.TrimSpace(cmd) == "" {
		return "", frameNone
	}
	if size+termLen > f.max {
		return cmd, frameTooLong
	}
	return strings.TrimRight(cmd, " \t\r\n"), frameCommand
}
