package atmodem

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// phase is where the loop is with the current request.
type phase int

const (
	phaseIdle       phase = iota // no request
	phaseWaitWriter              // an earlier (timed-out) write is still in progress
	phaseProbe                   // resynchronising after a timeout (see the package doc)
	phaseCommand                 // the request's command is written and being answered
)

// probes are the harmless reads used to resynchronise after a timeout. Each has a distinct
// information line, so a late answer to one is never taken for another's.
var probes = []struct{ cmd, answer string }{
	{"AT+CMEE?", "+CMEE:"},
	{"AT+CFUN?", "+CFUN:"},
	{"AT+CGSN=1", "+CGSN:"},
}

// constantReads are reads whose answer stays the same for as long as the modem runs, each
// with a distinct information line that only it produces. A new client's first command that
// is one of them is its own opening probe (package doc, "Late answers"): a previous user's
// late answer to the same read says what ours would. Reads whose value can change (+CMEE?,
// +CFUN?) are not among them: a late answer could hold a value from before a change.
var constantReads = []struct{ cmd, answer string }{
	{"AT+CGSN=1", "+CGSN:"},
	{"AT%SHORTSWVER", "%SHORTSWVER:"},
}

// isConstantRead reports whether cmd is one of constantReads.
func isConstantRead(cmd string) bool {
	for _, r := range constantReads {
		if cmd == r.cmd {
			return true
		}
	}
	return false
}

// exchange is the command or probe on the wire.
type exchange struct {
	answer   string   // answer prefix: lines with it are never URCs
	echo     []string // echo lines still expected
	echoDone bool     // a non-echo line arrived: no more echo
	lines    []string
	size     int  // bytes of lines, each with its "\r\n"
	excess   int  // lines discarded because size reached MaxResponseLen
	overlong bool // a line of this response was discarded
	foreign  bool // inside another command's answer (isForeignProbeAnswer), until its final
	// opening: the command is a constant read standing in for the opening probe. Until its
	// own information line arrives, whatever comes is a previous user's late answer.
	opening bool
}

// isForeignProbeAnswer reports whether line is the information line of a probe or of a
// constant read that cmd cannot have produced. In the answer to cmd it is a late answer: the
// probe of a previous user of the port whose answer the opening probe was taken for, or that
// probe's own; likewise for an opening constant read (constantReads). With cmd "" it reports
// whether line is any of those information lines, none of which is ever unsolicited. Skipped
// for concatenated commands (AT+CFUN?;+CMEE?), whose answers mix prefixes.
func isForeignProbeAnswer(line, cmd string) bool {
	if strings.Contains(cmd, ";") {
		return false
	}
	own := answerPrefix(cmd)
	for _, p := range probes {
		if strings.HasPrefix(line, p.answer) && p.answer != own {
			return true
		}
	}
	for _, r := range constantReads {
		if strings.HasPrefix(line, r.answer) && r.answer != own {
			return true
		}
	}
	return false
}

func newExchange(cmd string) exchange {
	echo := echoLines(cmd)
	return exchange{answer: answerPrefix(cmd), echo: echo, echoDone: len(echo) == 0}
}

// loopState is the conversation state. Only accessed from the loop goroutine.
type loopState struct {
	cur      *request
	phase    phase
	timer    *time.Timer
	timeout  time.Duration // the default timeout that applied to cur
	ctxBound bool          // cur's ctx deadline comes before the default timeout
	ex       exchange
	writing  bool      // the writer has a write in progress
	writeDue time.Time // when the write in progress counts as wedged
	lostErr  error
	timeouts int // consecutive timeouts

	// unsynced: what is on the wire is unknown, as for a new client (the port's previous
	// user may have left commands running in the modem). The next command probes first, and
	// only a probe's own answer ends it: late final results counted while idle do not.
	unsynced     bool
	lateInfo     bool   // a probe's or constant read's information line came while idle, its final result not yet
	unanswered   int    // timed-out commands and probes on the wire whose answer may still come
	staleAnswer  string // answer prefix of the last timed-out command
	lastProbe    int    // index of the last probe that went unanswered, -1 if none
	probe        int    // index of the running probe
	probeSawInfo bool   // the running probe's information line arrived
}

// loop owns the conversation until Close or a lost port.
func (c *Client) loop() {
	var why error
	var beat <-chan time.Time
	if c.cfg.Heartbeat != nil {
		t := time.NewTicker(c.cfg.HeartbeatEvery)
		defer t.Stop()
		beat = t.C
		c.cfg.Heartbeat(nil)
	}
	for why == nil {
		var (
			reqs    chan *request
			timerC  <-chan time.Time
			ctxDone <-chan struct{}
		)
		if c.cur == nil {
			reqs = c.reqs
		} else {
			timerC, ctxDone = c.timer.C, c.cur.ctx.Done()
		}
		select {
		case req := <-reqs:
			// Lines read before the command is written are not its answer (a stray OK
			// would end it): handle whatever the reader has queued first.
			if why = c.drainEvents(); why != nil {
				req.res <- result{err: fmt.Errorf("atmodem: %s: %w", req.name, why)}
				break
			}
			c.begin(req)
		case ev := <-c.events:
			why = c.onEvent(ev)
		case err := <-c.writeDone:
			why = c.onWriteDone(err)
		case <-timerC:
			c.expire(nil)
		case <-ctxDone:
			c.expire(c.cur.ctx.Err())
		case <-c.quit:
			why = ErrClosed
		case <-beat:
			c.cfg.Heartbeat(c.health())
		}
		if why == nil {
			why = c.lostErr
		}
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	cur := c.cur
	c.cur = nil
	if c.cfg.Heartbeat != nil {
		c.cfg.Heartbeat(why)
	}
	c.stop(why)
	if cur != nil {
		cur.res <- result{err: fmt.Errorf("atmodem: %s: %w", cur.name, why)}
	}
}

// drainEvents handles the lines already queued by the reader.
func (c *Client) drainEvents() error {
	for {
		select {
		case ev := <-c.events:
			if err := c.onEvent(ev); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// onEvent handles what the reader sends; a non-nil result means the port is lost.
func (c *Client) onEvent(ev readEvent) error {
	switch {
	case ev.err != nil:
		return fmt.Errorf("%w: %w", ErrPortLost, ev.err)
	case ev.overlong:
		if c.phase == phaseCommand {
			c.ex.overlong = true
		}
	default:
		c.onLine(ev.line)
	}
	return nil
}

// onWriteDone handles the end of a write; a non-nil result means the port is lost.
func (c *Client) onWriteDone(err error) error {
	c.writing = false
	if err != nil {
		return fmt.Errorf("%w: write: %w", ErrPortLost, err)
	}
	if c.phase == phaseWaitWriter {
		c.advance()
	}
	return nil
}

func (c *Client) begin(req *request) {
	if err := req.ctx.Err(); err != nil {
		req.res <- result{err: fmt.Errorf("atmodem: %s: %w", req.name, err)}
		return
	}
	c.cur = req
	c.timeout = c.cfg.CommandTimeout
	if req.long {
		c.timeout = c.cfg.LongTimeout
	}
	wait := c.timeout
	dl, ok := req.ctx.Deadline()
	c.ctxBound = ok && time.Until(dl) < wait
	if c.ctxBound {
		wait = time.Until(dl)
	}
	c.timer = time.NewTimer(wait)
	c.advance()
}

// advance starts the next step of the current request: wait for the writer, probe, or send.
func (c *Client) advance() {
	switch {
	case c.writing:
		c.phase = phaseWaitWriter
	case c.unsynced && c.unanswered == 0 && isConstantRead(c.cur.cmd):
		// Nothing of this client's is on the wire, only what a previous user may have left:
		// the command is its own opening probe (package doc, "Late answers").
		c.phase = phaseCommand
		c.ex = newExchange(c.cur.cmd)
		c.ex.opening = true
		c.lateInfo = false // the opening discards everything before its own line anyway
		c.write(c.cur.wire)
	case c.unanswered > 0 || c.unsynced:
		c.probe = 0
		for i, p := range probes {
			if i != c.lastProbe && p.answer != c.staleAnswer {
				c.probe = i
				break
			}
		}
		c.phase = phaseProbe
		c.probeSawInfo = false
		c.lateInfo = false // a late final result does not end a probe
		c.ex = newExchange(probes[c.probe].cmd)
		c.write([]byte(probes[c.probe].cmd + c.terminator))
	default:
		c.phase = phaseCommand
		c.ex = newExchange(c.cur.cmd)
		// The rest of a late answer whose information line came while idle (the own answer
		// of an opening constant read that took a previous user's) is not this command's.
		c.ex.foreign, c.lateInfo = c.lateInfo, false
		c.write(c.cur.wire)
	}
}

// health is nil unless a write has been in progress for longer than its command's timeout:
// the loop itself stays responsive (commands time out), but nothing reaches the modem.
func (c *Client) health() error {
	if c.writing && time.Now().After(c.writeDue) {
		return fmt.Errorf("%w: a write has not returned for %s", ErrWedged, time.Since(c.writeDue.Add(-c.timeout)).Round(time.Second))
	}
	return nil
}

func (c *Client) write(b []byte) {
	c.writing = true
	c.writeDue = time.Now().Add(c.timeout)
	c.writes <- b // never blocks: the writer is idle whenever writing was false
}

// onLine sorts one received line into echo, URC, response text, final result or stale.
func (c *Client) onLine(line string) {
	if isBanner(line) {
		return
	}
	fk := classifyFinal(line)
	if c.phase != phaseProbe && c.phase != phaseCommand {
		switch {
		case fk != notFinal:
			// A final result with nothing on the wire: the late answer of a timed-out
			// command (which ends the stale state), or noise.
			c.stats.stale.Add(1)
			c.lateInfo = false
			if c.unanswered > 0 {
				if c.unanswered--; c.unanswered == 0 && !c.unsynced {
					c.synced()
				}
			}
		case isURC(line, ""):
			c.deliverURC(line)
		case isForeignProbeAnswer(line, ""):
			// Never unsolicited: a late answer, whose final result may only come once the
			// next command is on the wire.
			c.stats.stale.Add(1)
			c.lateInfo = true
		case c.unanswered > 0 || c.unsynced:
			c.stats.stale.Add(1)
		default:
			c.deliverURC(line) // anything unsolicited with no command pending
		}
		return
	}
	ex := &c.ex
	if !ex.echoDone && line == ex.echo[0] {
		if ex.echo = ex.echo[1:]; len(ex.echo) == 0 {
			ex.echoDone = true
		}
		return
	}
	if fk == notFinal && isURC(line, ex.answer) {
		c.deliverURC(line)
		return
	}
	ex.echoDone = true
	if c.phase == phaseCommand && (ex.foreign || (fk == notFinal && isForeignProbeAnswer(line, c.cur.cmd))) {
		// Another read's answer (a probe's, or one left by the port's previous user that
		// a probe was synchronised on): discard it up to its final result.
		c.stats.stale.Add(1)
		ex.foreign = fk == notFinal
		ex.lines, ex.size, ex.excess, ex.overlong = nil, 0, 0, false
		return
	}
	if ex.opening {
		if fk != notFinal || !strings.HasPrefix(line, ex.answer) {
			// Before the command's own information line: a previous user's late answer.
			c.stats.stale.Add(1)
			return
		}
		ex.opening = false
		c.synced()
	}
	if c.phase == phaseProbe {
		switch {
		case fk == notFinal && strings.HasPrefix(line, probes[c.probe].answer):
			c.probeSawInfo = true
		case fk != notFinal && c.probeSawInfo:
			c.synced()
			c.advance()
		default:
			c.stats.stale.Add(1)
		}
		return
	}
	if fk == notFinal {
		if n := len(line) + 2; ex.excess == 0 && ex.size+n <= c.cfg.MaxResponseLen {
			ex.lines = append(ex.lines, line)
			ex.size += n
		} else {
			// Keep reading up to the final result, so the next command's answer is its own.
			ex.excess++
			c.stats.excess.Add(1)
		}
		return
	}
	resp := buildResponse(ex.lines, line)
	err := errorForFinal(fk, line)
	switch {
	case err != nil:
	case ex.excess > 0:
		err = &ResponseTooLongError{Limit: c.cfg.MaxResponseLen, Kept: len(ex.lines), Dropped: ex.excess}
	case ex.overlong:
		err = ErrLineTooLong
	}
	if err != nil {
		err = fmt.Errorf("atmodem: %s: %w", c.cur.name, err)
	}
	c.timeouts = 0
	c.finish(resp, err)
}

// synced ends the stale state: the modem has answered everything that was sent.
func (c *Client) synced() {
	c.unsynced = false
	c.unanswered = 0
	c.staleAnswer = ""
	c.lastProbe = -1
	c.timeouts = 0
}

func (c *Client) finish(resp Response, err error) {
	c.timer.Stop()
	c.cur.res <- result{resp: resp, err: err}
	c.cur = nil
	c.phase = phaseIdle
}

// expire ends the current request on its deadline (ctxErr nil or DeadlineExceeded) or on
// cancellation of its context.
func (c *Client) expire(ctxErr error) {
	name := c.cur.name
	if ctxErr == nil && c.ctxBound {
		ctxErr = context.DeadlineExceeded // the timer stood in for ctx's deadline
	}
	timedOut := ctxErr == nil || errors.Is(ctxErr, context.DeadlineExceeded)
	var err error
	switch {
	case !timedOut:
		err = fmt.Errorf("atmodem: %s: %w", name, ctxErr)
	case ctxErr != nil:
		err = fmt.Errorf("atmodem: %s: %w (%w)", name, ErrTimeout, ctxErr)
	default:
		err = fmt.Errorf("atmodem: %s: %w after %s", name, ErrTimeout, c.timeout)
	}
	switch c.phase {
	case phaseCommand:
		c.unanswered++
		c.staleAnswer = c.ex.answer
	case phaseProbe:
		c.unanswered++
		c.lastProbe = c.probe
	}
	if timedOut {
		c.stats.timeouts.Add(1)
		if c.timeouts++; c.timeouts >= c.cfg.MaxTimeouts {
			c.lostErr = fmt.Errorf("%w: %d commands in a row got no answer", ErrPortLost, c.timeouts)
			err = fmt.Errorf("%w; %w", err, c.lostErr)
		}
	}
	c.finish(Response{}, err)
}
