package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/provisiond/provisiond/internal/atmodem"
	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/store"
)

// Messages reported for local failures of an AT command ([id, 99, 0, <message>]): the modem
// gave no verdict, so there is no modem text to report (docs/protocol.md §4.3, §12.3).
const (
	msgTimeout     = "timeout: no final result from the modem"
	msgPortLost    = "modem lost: the serial port went away during the command"
	msgTooLong     = "command too long for the modem"
	msgInvalid     = "command refused: it cannot be sent to the modem safely"
	msgLineTooLong = "modem response line too long; response incomplete"
	msgCancelled   = interruptedMessage // the grace after SIGTERM ran out
	msgLocal       = "local error: "
	msgHashCommand = "command refused: #-commands reach the serial front-end's application, not the modem " +
		"(provisioning.allow_hash_commands is off)"
	msgTooMuch = "modem response too long; response incomplete"
)

// batchResult is what executing one batch produced.
type batchResult struct {
	outbox   *outbox // nil when nothing was processed
	executed int     // AT and config commands run (FINISHED is not counted)
	failed   int     // error responses
	// stopped is why execution ended before the batch did without an error response for
	// the command concerned (modem lost, modem mode could not be set, state not persisted,
	// cancellation). Such commands are not answered: the service sends them again.
	stopped error
	// uplink is set when Uplink "modem" registration did not come; the outbox waits.
	uplink error
	// failure names the command that failed and why, "" when none did.
	failure string
}

// batch is the execution state of one batch; it lives for one executeBatch call.
type batch struct {
	d   *Daemon
	ctx context.Context
	cfg Config
	m   Modem
	n   int // attempt number, for events
	j   journal

	persistBroken bool   // a journal write failed: stop before the next command
	prepared      bool   // CMEE and mode handled (first AT command)
	savedCMEE     int    // the CMEE value to restore at the end; -1: none, or restored
	cmeeRestored  bool   // the saved CMEE value was restored: delete it from the store
	savedMode     int    // the mode to restore at the end; -1: none, or restored
	switched      bool   // this batch restores the saved mode: it switched, or found it pending
	failure       string // the failing command and why, for the attempt's outcome

	// unsaved is set while the journal in memory holds a result the store does not have yet:
	// the next write (the next AT command's, a config command's, or the one before the batch
	// touches the modem again) carries it.
	unsaved bool
}

// executeBatch runs cmds per docs/protocol.md §4.1–§4.5 and returns the batch's outbox. The
// outbox is persisted (journal → outbox, one Apply) before returning. A result that cannot
// be stored stops the batch; when the outbox cannot be stored either, nothing is returned for
// upload (see Daemon.unstored).
func (d *Daemon) executeBatch(ctx context.Context, cfg Config, n int, cmds []proto.Command) batchResult {
	b := &batch{d: d, ctx: ctx, cfg: cfg, m: d.currentModem(), n: n, savedCMEE: -1, savedMode: -1}
	var res batchResult
	for i, cmd := range cmds {
		d.commandProgress(i+1, cmd)
		if b.j.failed() {
			break // the first failure stops the batch; later commands get no response
		}
		if err := ctx.Err(); err != nil {
			res.stopped = fmt.Errorf("daemon: batch: %w", err)
			break
		}
		if b.persistBroken {
			res.stopped = fmt.Errorf("daemon: batch: %w", ErrStore)
			break
		}
		switch cmd.Kind {
		case proto.KindFinished:
			// No action of its own; its ack is deferred to the end (§4.5).
			b.j.Finished = cmd.ID
			b.j.Cursor = cmd.ID
		case proto.KindConfig:
			res.executed++
			b.runConfig(cmd)
		case proto.KindAT:
			if err := b.prepare(); err != nil {
				res.stopped = err
				break
			}
			// One durable write per AT command: it records the previous command's result
			// and this command as running (see journal in state.go for why that is safe).
			if err := b.writeJournal(cmd.ID); err != nil {
				res.stopped = err
				break
			}
			res.executed++
			r, err := b.runAT(cmd)
			b.j.Responses = append(b.j.Responses, toRecord(r))
			b.j.Cursor = cmd.ID
			b.unsaved = true
			if isModemLost(err) {
				res.stopped = fmt.Errorf("daemon: batch: command %s: %w", cmd.ID, err)
			}
		default:
			// DecodeCommands refuses unknown kinds; keep the batch safe if that ever changes.
			res.stopped = fmt.Errorf("daemon: batch: command %s: unknown kind %d", cmd.ID, cmd.Kind)
		}
		if res.stopped != nil {
			break
		}
	}
	if b.unsaved {
		// The last AT command's result is made durable before the modem is touched again
		// (CMEE and mode restore, registration wait): a stop from here on reports it as it
		// was, not as interrupted. persistOutbox cannot take its place, as it runs after
		// the restore, which it records.
		if err := b.writeJournal(""); err != nil {
			d.log.Error("could not record a command's result", zap.String("correlation_id", b.j.Cursor), zap.Error(err))
			if res.stopped == nil {
				res.stopped = err
			}
		}
	}
	for _, r := range b.j.Responses {
		if r.failed() {
			res.failed++
			d.noteFailedCommand(cmds, r)
		}
	}
	if res.stopped != nil && isModemLost(res.stopped) {
		d.log.Warn("modem lost during a batch", MsgID(msgModemLostInBatch), zap.Error(res.stopped))
	}
	res.failure = b.failure
	res.uplink = b.finish()
	ob := b.j.toOutbox()
	extra := []store.Change{}
	if b.switched && b.savedMode < 0 {
		// The saved mode has been restored: a crash from here on must not restore it again.
		// Only a successful restore clears it; after a failed one it stays for the next
		// batch (which restores it at its end) or the next start.
		extra = append(extra, del(keySavedCFUN))
	}
	if b.cmeeRestored {
		extra = append(extra, del(keySavedCMEE)) // likewise for the saved CMEE value
	}
	if err := d.persistOutboxRetry(ob, extra...); err != nil {
		// Uploading the results from memory would report them twice, and differently: the
		// journal in the store still marks a command as running, so the next start would
		// report it as interrupted too. The journal is the one account of the batch.
		d.log.Error("could not store the batch's results; not uploading them: they are reported "+
			"from the journal by the next attempt or start (a command it marks as running as interrupted)",
			zap.Int("attempt", n), zap.Int("responses", len(ob.Responses)), zap.Error(err))
		d.unstored = true
		if res.stopped == nil {
			res.stopped = err
		}
		res.failed = 0 // nothing of this batch is reported by this attempt
		d.setCursorStatus(d.cursor, d.outbox)
		return res
	}
	if len(ob.Responses) > 0 {
		res.outbox = ob
		d.outbox = ob
	}
	d.setCursorStatus(d.cursor, d.outbox)
	return res
}

// prepare runs once, before the first AT command of the batch: CMEE on, modem offline.
// Config-only batches never get here, so they leave the modem alone.
func (b *batch) prepare() error {
	if b.prepared {
		return nil
	}
	if b.m == nil {
		return fmt.Errorf("daemon: batch: %w", ErrNoModem)
	}
	b.prepared = true
	// A value saved by an earlier batch whose restore failed (or was cut by a crash) is the
	// one to restore: the modem now reads 1 only because of that batch.
	pending := b.d.pendingCMEE()
	b.savedCMEE = pending
	cmee, err := b.m.CMEE(b.ctx)
	switch {
	case err != nil && (isModemLost(err) || b.ctx.Err() != nil):
		return fmt.Errorf("daemon: batch: read CMEE: %w", err)
	case err != nil:
		// Errors then come back as plain ERROR; they are still reported as failures.
		b.d.log.Warn("could not read CMEE; running the batch without numeric CME errors", zap.Error(err))
	case cmee != 1:
		if pending < 0 {
			// Saved before the switch, so that a crash before the restore is undone on the
			// next start; without it the modem would keep CMEE=1 for good: don't switch.
			if err := b.d.deps.Store.Apply([]store.Change{{Key: keySavedCMEE, Value: strconv.Itoa(cmee)}}); err != nil {
				return fmt.Errorf("daemon: batch: save CMEE: %w: %w", ErrStore, err)
			}
			b.savedCMEE = cmee
		}
		if err := b.m.SetCMEE(b.ctx, 1); err != nil {
			// CMEE may or may not have changed; restoring it is harmless either way.
			if isModemLost(err) {
				return fmt.Errorf("daemon: batch: set CMEE: %w", err)
			}
			b.d.log.Warn("could not set CMEE=1", zap.Error(err))
		}
	}
	saved, err := b.d.goOffline(b.ctx, b.m, eventInfo{attempt: b.n, cursor: b.j.Cursor})
	b.savedMode, b.switched = saved, saved >= 0
	if err != nil {
		return fmt.Errorf("daemon: batch: %w", err)
	}
	return nil
}

// finish restores CMEE and the modem's mode (also after failures, timeouts and cancellation:
// a detached, bounded context) and, with Uplink "modem", waits for LTE registration.
func (b *batch) finish() error {
	if b.savedCMEE >= 0 && !modemGone(b.m) {
		rctx, cancel := detached(b.ctx, b.cfg.RestoreTimeout)
		if err := b.m.SetCMEE(rctx, b.savedCMEE); err != nil {
			// The saved value stays in the store and is restored when the modem is back.
			b.d.log.Warn("could not restore CMEE", MsgID(msgCMEERestoreFailed), zap.Int("cmee", b.savedCMEE), zap.Error(err))
		} else {
			b.savedCMEE = -1
			b.cmeeRestored = true
		}
		cancel()
	}
	if b.savedMode < 0 {
		return nil
	}
	var urcs <-chan string
	if s, ok := b.m.(urcSubscriber); ok && b.cfg.Uplink == UplinkModem && !modemGone(b.m) {
		// Subscribe before the mode comes back so that no registration URC is missed, and
		// turn the URCs on: +CEREG reporting is off (n=0) after a modem boots.
		var unsubscribe func()
		urcs, unsubscribe = s.Subscribe("+CEREG")
		defer unsubscribe()
		rctx, cancel := detached(b.ctx, b.cfg.RestoreTimeout)
		if _, err := b.m.Command(rctx, "AT+CEREG=1"); err != nil {
			b.d.log.Warn("could not turn on registration reports", zap.Error(err))
		}
		cancel()
	}
	if modemGone(b.m) || b.d.restoreMode(b.ctx, b.m, b.savedMode, true) != nil {
		// The saved mode stays in the store and is restored when the modem is back.
		return nil
	}
	b.savedMode = -1
	b.d.emit(EventNeedLTEActivated, eventInfo{attempt: b.n, cursor: b.j.Cursor})
	if b.cfg.Uplink != UplinkModem {
		return nil // the host's network carries the upload: no waiting for LTE (docs/design.md)
	}
	if urcs == nil {
		b.d.log.Warn("uplink is the modem but it delivers no URCs; not waiting for registration")
		return nil
	}
	return waitRegistered(b.ctx, urcs, b.d.regWait)
}

// writeJournal persists the batch state, with executing set to the command about to run (or
// "" when none is), together with every result recorded so far. A failure before a command
// means it is not run; the results it would have carried stay in memory for the outbox.
func (b *batch) writeJournal(executing string) error {
	b.j.Executing = executing
	c, err := setJSON(keyJournal, &b.j)
	if err == nil {
		err = b.d.deps.Store.Apply([]store.Change{c})
	}
	if err != nil {
		b.j.Executing = "" // not recorded as started, so not run
		b.persistBroken = true
		return fmt.Errorf("daemon: batch: journal: %w: %w", ErrStore, err)
	}
	b.unsaved = false
	return nil
}

// runAT runs one AT command and maps its outcome to a response (docs/protocol.md §4.3). A command
// already sent is allowed to finish for a while after cancellation (SIGTERM).
func (b *batch) runAT(cmd proto.Command) (proto.Response, error) {
	cctx, cancel := graceContext(b.ctx, b.d.grace)
	defer cancel()
	var resp atmodem.Response
	var err error
	if line := cmd.ATString(); !b.cfg.AllowHashCommands && atmodem.HasHashCommand(line) {
		err = fmt.Errorf("daemon: %s: %w", commandLabel(cmd), ErrHashCommand)
	} else {
		resp, err = b.m.Command(cctx, line)
	}
	b.j.Executing = ""
	r := atResponse(cmd, resp, err)
	if r.Kind == proto.KindError {
		b.failure = cleanText(fmt.Sprintf("command %s failed (correlation id %s): %s", commandLabel(cmd), cmd.ID, r.Message))
		b.d.log.Warn("command failed", zap.Int("attempt", b.n), zap.String("correlation_id", cmd.ID),
			zap.String("command", commandLabel(cmd)), zap.Uint64("cme_error", r.CMEError), zap.Error(err))
	} else {
		b.d.log.Info("command done", zap.Int("attempt", b.n), zap.String("correlation_id", cmd.ID),
			zap.String("command", commandLabel(cmd)))
	}
	return r, err
}

// atResponse maps an AT command's outcome to its response:
//   - OK → [id, 100, text]; +CME ERROR in the ignore list → [id, 100, text];
//   - +CME ERROR not in the list → [id, 99, code, text];
//   - plain ERROR → [id, 99, 0, text]. This deviates from the device library, where a plain
//     ERROR comes out of nrf_modem_at_err() as 0, passes the ignore filter and is reported as
//     success (docs/protocol.md §4.3, §12.2): a command the modem refused did not succeed, and
//     calling it a success would let the service drop it as done;
//   - +CMS ERROR → [id, 99, 0, text] (its code is not a CME code);
//   - local failures (timeout, port lost, command too long) → [id, 99, 0, <reason>].
//
// The text is the modem's whole answer including the final line, made valid UTF-8.
func atResponse(cmd proto.Command, resp atmodem.Response, err error) proto.Response {
	text := strings.ToValidUTF8(resp.Raw, "\uFFFD")
	ok := proto.Response{ID: cmd.ID, Kind: proto.KindATResponse, Message: text}
	fail := func(code uint64, msg string) proto.Response {
		return proto.Response{ID: cmd.ID, Kind: proto.KindError, CMEError: code, Message: msg}
	}
	var cme *atmodem.CMEError
	var cms *atmodem.CMSError
	switch {
	case err == nil:
		return ok
	case errors.As(err, &cme):
		if text == "" {
			text = strings.ToValidUTF8(cme.Raw, "\uFFFD") + "\r\n"
		}
		if cme.Code >= 0 && slices.Contains(cmd.IgnoreCMEErrors, uint64(cme.Code)) {
			ok.Message = text
			return ok
		}
		return fail(uint64(max(cme.Code, 0)), text)
	case errors.Is(err, atmodem.ErrError):
		if text == "" {
			text = "ERROR\r\n"
		}
		return fail(0, text)
	case errors.As(err, &cms):
		if text == "" {
			text = strings.ToValidUTF8(cms.Raw, "\uFFFD") + "\r\n"
		}
		return fail(0, text)
	case errors.Is(err, atmodem.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return fail(0, msgTimeout)
	case errors.Is(err, context.Canceled):
		return fail(0, msgCancelled)
	case isModemLost(err):
		return fail(0, msgPortLost)
	case errors.Is(err, atmodem.ErrCommandTooLong):
		return fail(0, msgTooLong)
	case errors.Is(err, atmodem.ErrInvalidCommand):
		return fail(0, msgInvalid)
	case errors.Is(err, atmodem.ErrLineTooLong):
		return fail(0, msgLineTooLong)
	case errors.Is(err, atmodem.ErrResponseTooLong):
		return fail(0, msgTooMuch)
	case errors.Is(err, ErrHashCommand):
		return fail(0, msgHashCommand)
	}
	return fail(0, msgLocal+strings.ToValidUTF8(err.Error(), "\uFFFD"))
}

// commandLabel names an AT command in logs and errors without its parameters, which may be
// secret: "AT%CMNG", "AT#XRESET".
func commandLabel(cmd proto.Command) string {
	name := "AT" + cmd.SetCommand
	if i := strings.IndexAny(name, "=?; \t\r\n\""); i >= 0 {
		name = name[:i]
	}
	return cleanText(truncate(name, 32))
}

// runConfig writes a config command's pairs and its response in one Apply, so the pairs and
// the record that they were written can only exist together (docs/protocol.md §4.4).
func (b *batch) runConfig(cmd proto.Command) {
	b.j.Cursor = cmd.ID
	if i, errno, bad := checkPairs(cmd.Properties); bad {
		b.configFailed(cmd, i, errno, nil)
		return
	}
	if i, err := checkQuota(b.d.deps.Store, cmd.Properties); err != nil {
		b.configFailed(cmd, i, syscall.ENOSPC, err)
		return
	}
	changes := make([]store.Change, 0, len(cmd.Properties)+1)
	for _, p := range cmd.Properties {
		changes = append(changes, store.Change{Key: p.Key, Value: p.Value})
	}
	b.j.Responses = append(b.j.Responses, record{ID: cmd.ID, Kind: uint64(proto.KindConfigAck)})
	jc, err := setJSON(keyJournal, &b.j)
	if err == nil {
		err = b.d.deps.Store.Apply(append(changes, jc))
	}
	if err == nil {
		b.unsaved = false // the journal written with the pairs carries the earlier results too
		b.d.log.Info("config written", zap.Int("attempt", b.n), zap.String("correlation_id", cmd.ID),
			zap.Int("pairs", len(cmd.Properties)))
		return
	}
	b.j.Responses = b.j.Responses[:len(b.j.Responses)-1]
	i, errno := storeFailure(cmd.Properties, err)
	b.configFailed(cmd, i, errno, err)
}

// configFailed records [id, 99, uint32(-errno), "Unable to store [i](0-indexed) key-value-pair"]
// as the device library does (the negative errno stored into a uint32, docs/protocol.md §4.4).
func (b *batch) configFailed(cmd proto.Command, i int, errno syscall.Errno, cause error) {
	msg := fmt.Sprintf("Unable to store [%d](0-indexed) key-value-pair", i)
	r := proto.Response{ID: cmd.ID, Kind: proto.KindError, CMEError: uint64(uint32(-int32(errno))), Message: msg}
	b.j.Responses = append(b.j.Responses, toRecord(r))
	key := ""
	if i < len(cmd.Properties) {
		key = cmd.Properties[i].Key
	}
	b.failure = cleanText(fmt.Sprintf("config command failed (correlation id %s): %s: %s", cmd.ID, msg, errno.Error()))
	b.d.log.Warn("config command failed", zap.Int("attempt", b.n), zap.String("correlation_id", cmd.ID),
		zap.String("key", truncate(key, 64)), zap.String("errno", errno.Error()), zap.NamedError("cause", cause))
	if err := b.writeJournal(""); err != nil {
		b.d.log.Error("could not record a command's result; stopping the batch",
			zap.String("correlation_id", cmd.ID), zap.Error(err))
	}
}

// checkPairs refuses, before any write, keys in the daemon's own subtree (EACCES: a hostile
// service must not overwrite the outbox) and keys or values the store cannot hold (EINVAL).
func checkPairs(ps []proto.Property) (index int, errno syscall.Errno, bad bool) {
	for i, p := range ps {
		switch {
		case hasReservedPrefix(p.Key):
			return i, syscall.EACCES, true
		case p.Key == "" || !utf8.ValidString(p.Key) || strings.ContainsFunc(p.Key, unicode.IsControl),
			!utf8.ValidString(p.Value):
			return i, syscall.EINVAL, true
		}
	}
	return 0, 0, false
}

// storeFailure names the pair and errno for a failed Apply. The write is all-or-nothing, so
// no pair was stored; the index is the pair the error names, else 0.
func storeFailure(ps []proto.Property, err error) (int, syscall.Errno) {
	var lim *store.LimitError
	if errors.As(err, &lim) {
		for i, p := range ps {
			if lim.Key != "" && p.Key == lim.Key {
				return i, syscall.E2BIG // key or value too long
			}
		}
		return 0, syscall.ENOSPC // the store as a whole is full
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return 0, errno // ENOSPC, EROFS, EIO … from the file system
	}
	if errors.Is(err, store.ErrInvalid) {
		return 0, syscall.EINVAL
	}
	return 0, syscall.EIO
}
