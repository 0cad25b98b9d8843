package daemon

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/provisiond/provisiond/internal/atmodem"
	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/status"
	"github.com/provisiond/provisiond/internal/store"
	"github.com/provisiond/provisiond/internal/transport"
)

// Result is the outcome of one attempt.
type Result struct {
	// Event is the outcome event: DONE, NO_COMMANDS or one of the FAILED… events.
	Event Event
	// Reason explains a failure (empty on success).
	Reason string
	// Executed counts the AT and config commands run in this attempt; Failed counts the error
	// responses uploaded or waiting for upload in it (a recovered interrupted command too).
	Executed, Failed int
	// Reason also names the failing command of an attempt that otherwise ended normally.
	// Finished is true when a FINISHED ack was delivered.
	Finished bool
	// Err is the error behind a failure, for errors.Is.
	Err error
	// Traffic is what the attempt's session cost on the wire, zero when it never connected.
	Traffic transport.Stats
}

// outcome is a Result plus what the scheduler does next.
type outcome struct {
	res       Result
	backoff   bool // busy or timeout: back off instead of a normal interval
	modemLost bool
}

// attempt runs one provisioning attempt between START and STOP events.
func (d *Daemon) attempt(ctx context.Context) outcome {
	cfg, dial := d.snapshot()
	d.attempts++
	n := d.attempts
	started := d.now()
	d.mu.Lock()
	d.status.state = StateProvisioning
	d.status.attempts = n
	d.mu.Unlock()
	d.step("starting")
	d.emit(EventStart, eventInfo{attempt: n, cursor: d.cursor})

	o := d.runAttempt(ctx, cfg, dial, n)
	failed := d.endProgress()
	if failed != nil {
		// An attempt can end as NO_COMMANDS after reporting a failed command: say which.
		d.log.Warn("attempt had a failed command", zap.Int("attempt", n), zap.String("correlation_id", failed.CorrelationID),
			zap.String("command", failed.Command), zap.String("error", failed.Error))
	}

	info := eventInfo{attempt: n, reason: o.res.Reason, cursor: d.cursor, executed: o.res.Executed, failed: o.res.Failed}
	if o.res.Event == EventFailedDeviceNotClaimed {
		d.jwt = jwtCache{} // a rejected JWT is not worth reusing
		info.token = d.claimToken(ctx)
	}
	d.emit(o.res.Event, info)
	if o.res.Event == EventDone {
		d.onFinished(ctx, cfg, n)
	}
	d.emit(EventStop, eventInfo{attempt: n, cursor: d.cursor})
	d.mu.Lock()
	d.status.last = &AttemptStatus{Number: n, Started: started, Finished: d.now(), Event: o.res.Event,
		Reason: o.res.Reason, Executed: o.res.Executed, Failed: o.res.Failed, FailedCommand: failed,
		Handshakes: o.res.Traffic.Handshakes, ResumedHandshakes: o.res.Traffic.ResumedHandshakes,
		Requests: o.res.Traffic.Requests, BytesSent: o.res.Traffic.BytesSent, BytesReceived: o.res.Traffic.BytesReceived}
	if d.status.outcomes == nil {
		d.status.outcomes = make(map[status.EventName]int)
	}
	d.status.outcomes[o.res.Event]++
	d.status.executed += o.res.Executed
	d.status.failedCmds += o.res.Failed
	d.status.traffic = d.status.traffic.Add(o.res.Traffic)
	if d.status.last.Succeeded() {
		d.status.lastSuccess = d.status.last.Finished
	}
	d.mu.Unlock()
	return o
}

// runAttempt is the loop of docs/protocol.md §1.5/§2.4 with the durable outbox in front: a pending
// outbox is delivered before anything is fetched; then fetch → decode → execute → upload
// until no commands (NO_COMMANDS) or an acknowledged FINISHED (DONE).
func (d *Daemon) runAttempt(ctx context.Context, cfg Config, dial DialFunc, n int) (o outcome) {
	var res Result
	fail := func(err error) outcome { return d.failure(err, res) }

	if err := d.recoverUnstored(cfg); err != nil {
		return fail(err)
	}
	if _, err := d.token(ctx, cfg); err != nil {
		return fail(err)
	}
	d.step("connecting to the service")
	sess, err := dial(ctx)
	if err != nil {
		return fail(fmt.Errorf("daemon: connect: %w", err))
	}
	defer func() {
		// Every return after the dial passes here, failures included, so the traffic reaches
		// the outcome whichever way the attempt ended. The counts are read after Close so
		// that the close_notify alerts it exchanges are part of the attempt's cost.
		if err := sess.Close(); err != nil {
			d.log.Debug("closing the session", zap.Error(err))
		}
		st := sess.Stats()
		o.res.Traffic = st
		d.log.Debug("attempt traffic", zap.Int("attempt", n), zap.Int("handshakes", st.Handshakes),
			zap.Int("requests", st.Requests), zap.Int64("bytes_sent", st.BytesSent),
			zap.Int64("bytes_received", st.BytesReceived))
	}()

	if ob := d.outbox; ob != nil {
		d.log.Info("uploading results kept from an earlier attempt", zap.Int("attempt", n),
			zap.Int("responses", len(ob.Responses)), zap.String("correlation_id", ob.Cursor))
		res.Failed += countFailed(ob)
		if err := d.deliver(ctx, cfg, sess, ob); err != nil {
			return fail(err)
		}
		if ob.finished() {
			res.Event, res.Finished = EventDone, true
			return outcome{res: res}
		}
	}

	for range maxRoundsPerAttempt {
		if err := ctx.Err(); err != nil {
			return fail(fmt.Errorf("daemon: attempt: %w", err))
		}
		tok, err := d.token(ctx, cfg)
		if err != nil {
			return fail(err)
		}
		d.step("fetching commands")
		body, err := d.fetch(ctx, cfg, sess, n, transport.FetchRequest{
			After: d.cursor, RxMaxSize: cfg.RxBufSize, TxMaxSize: cfg.TxBufSize, Limit: cfg.MaxCommands,
			ModemVersion: d.modemVersion(), ClientVersion: cfg.ClientVersion, JWT: tok,
		})
		if errors.Is(err, transport.ErrNoCommands) {
			res.Event = EventNoCommands
			return outcome{res: res}
		}
		if err != nil {
			return fail(err)
		}
		cmds, used, err := proto.DecodeCommandsPrefix(body, cfg.MaxCommands)
		if err != nil {
			// Nothing is executed and nothing uploaded; the service keeps the batch.
			d.log.Warn("batch refused", zap.Int("attempt", n), zap.Int("bytes", len(body)), zap.Error(err))
			return fail(fmt.Errorf("daemon: decode batch: %w", err))
		}
		if used < len(body) {
			// The device decodes the batch and never looks further; so do we, but a
			// conforming service sends nothing after it, so say so.
			d.log.Warn("bytes after the batch ignored", zap.Int("attempt", n),
				zap.Int("batch_bytes", used), zap.Int("trailing_bytes", len(body)-used))
		}
		d.log.Info("batch received", zap.Int("attempt", n), zap.Int("commands", len(cmds)),
			zap.String("first_id", cmds[0].ID))
		d.beginBatch(len(cmds))
		br := d.executeBatch(ctx, cfg, n, cmds)
		res.Executed += br.executed
		res.Failed += br.failed
		if br.failure != "" {
			res.Reason = br.failure // the attempt may still end as NO_COMMANDS or DONE
		}
		if br.uplink != nil {
			return fail(br.uplink)
		}
		if br.outbox != nil {
			if err := d.deliver(ctx, cfg, sess, br.outbox); err != nil {
				return fail(err)
			}
		}
		if br.stopped != nil {
			return fail(br.stopped)
		}
		if br.outbox != nil && br.outbox.finished() {
			res.Event, res.Finished = EventDone, true
			return outcome{res: res}
		}
	}
	return fail(fmt.Errorf("daemon: attempt: still getting batches after %d rounds", maxRoundsPerAttempt))
}

// fetch asks for the next batch. When the service refuses it as too large for rxMaxSize and
// names the size the next command needs, the fetch is repeated once, at once, with that size
// if it is within cfg.RxBufMax: a host has the memory, and without the retry the command
// would be refused on every attempt for ever. Past the cap the error names the key to raise.
func (d *Daemon) fetch(ctx context.Context, cfg Config, sess Session, n int, req transport.FetchRequest) ([]byte, error) {
	body, err := sess.Fetch(ctx, req)
	var small *transport.RxTooSmallError
	if !errors.As(err, &small) {
		if err != nil {
			return nil, fmt.Errorf("daemon: fetch: %w", err)
		}
		return body, nil
	}
	if small.Need > cfg.RxBufMax {
		d.log.Warn("fetch refused as too large, and the size the service names is over provisioning.rx_buf_max",
			zap.Int("attempt", n), zap.Int("rx_max_size", small.RxMaxSize), zap.Int("needed", small.Need),
			zap.Int("rx_buf_max", cfg.RxBufMax))
		return nil, fmt.Errorf("daemon: fetch: the next command needs a %d-byte receive buffer: %w %d: raise it: %w",
			small.Need, ErrRxBufMax, cfg.RxBufMax, err)
	}
	d.log.Info("fetch refused as too large; retrying at once with the size the service names", MsgID(msgFetchRetried),
		zap.Int("attempt", n), zap.Int("rx_max_size", small.RxMaxSize), zap.Int("needed", small.Need),
		zap.Int("rx_buf_max", cfg.RxBufMax))
	req.RxMaxSize = small.Need
	if body, err = sess.Fetch(ctx, req); err != nil {
		return nil, fmt.Errorf("daemon: fetch with rxMaxSize %d: %w", req.RxMaxSize, err)
	}
	return body, nil
}

func countFailed(ob *outbox) int {
	n := 0
	for _, r := range ob.Responses {
		if r.failed() {
			n++
		}
	}
	return n
}

func (d *Daemon) modemVersion() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status.modemVersion
}

// deliver uploads ob and, once the service took it, persists the cursor and deletes the
// outbox in one Apply. A failed upload keeps the outbox for the next attempt.
func (d *Daemon) deliver(ctx context.Context, cfg Config, sess Session, ob *outbox) error {
	body, err := proto.EncodeResponses(ob.responses())
	if err != nil {
		// Every text was made valid UTF-8 when recorded, so this is a bug; an outbox that can
		// never be encoded would block provisioning for good.
		d.log.Error("pending results cannot be encoded; dropped", zap.Any("responses", ob.Responses), zap.Error(err))
		d.finishOutbox(cfg, ob)
		return fmt.Errorf("daemon: encode responses: %w", err)
	}
	if cfg.TxBufSize > 0 && len(body) > cfg.TxBufSize {
		// The device library gives up here and reports NO_COMMANDS (docs/protocol.md §4.1 step 7,
		// §12.10), losing results of commands that already ran. The host has no such buffer:
		// tx_buf_size is only what we advertise, so we send the whole batch and say so.
		d.log.Warn("responses exceed tx_buf_size; uploading them anyway so no result is lost",
			zap.Int("bytes", len(body)), zap.Int("tx_buf_size", cfg.TxBufSize))
	}
	tok, err := d.token(ctx, cfg)
	if err != nil {
		return err
	}
	d.step("uploading results")
	err = sess.Upload(ctx, transport.UploadRequest{JWT: tok, Body: body,
		ModemVersion: d.modemVersion(), ClientVersion: cfg.ClientVersion})
	if err != nil {
		d.log.Warn("upload failed; results kept for the next attempt", zap.Int("responses", len(ob.Responses)),
			zap.String("correlation_id", ob.Cursor), zap.Error(err))
		return fmt.Errorf("daemon: upload: %w", err)
	}
	d.log.Info("results uploaded", MsgID(msgResultsUploaded), zap.Int("responses", len(ob.Responses)), zap.String("correlation_id", ob.Cursor))
	d.finishOutbox(cfg, ob)
	return nil
}

// finishOutbox persists the cursor of a delivered outbox and deletes it, in one Apply.
func (d *Daemon) finishOutbox(cfg Config, ob *outbox) {
	changes := []store.Change{del(keyOutbox), del(keyJournal)}
	if ob.Cursor != "" {
		changes = append(changes, store.Change{Key: cfg.StorePrefix + "/" + subkeyCursor, Value: ob.Cursor})
		d.cursor = ob.Cursor
	}
	if err := d.deps.Store.Apply(changes); err != nil {
		// The results were delivered; after a restart they would be delivered once more
		// (a duplicate upload, never a re-execution).
		d.log.Error("could not persist the cursor after an upload", zap.Error(err))
	}
	d.outbox = nil
	d.setCursorStatus(d.cursor, nil)
}

// failure maps an error to the outcome event (docs/protocol.md §4.8).
func (d *Daemon) failure(err error, res Result) outcome {
	res.Event, res.Err, res.Reason = EventFailed, err, reasonOf(err)
	o := outcome{res: res}
	var lim *proto.LimitError
	switch {
	case errors.Is(err, context.Canceled):
		res.Reason = "cancelled: provisiond is stopping"
	case errors.Is(err, ErrNoValidTime):
		res.Event = EventFailedNoValidDatetime
	case errors.Is(err, transport.ErrNotClaimed):
		res.Event = EventFailedDeviceNotClaimed
	case errors.Is(err, transport.ErrWrongRootCA):
		res.Event = EventFailedWrongRootCA
	case errors.As(err, &lim), errors.Is(err, proto.ErrTooMany):
		res.Event = EventFailedTooManyCommands
	case isModemLost(err):
		// Waiting for the modem to come back is the Run loop's job; the next attempt after
		// that is a backoff away, so a modem that dies on every batch is not hammered.
		o.modemLost, o.backoff = true, true
	case transport.Backoff(err), errors.Is(err, atmodem.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		o.backoff = true
	}
	o.res = res
	return o
}

// reasonOf is the one-line reason kept in events and status.
func reasonOf(err error) string {
	if err == nil {
		return ""
	}
	return cleanText(err.Error())
}

// maxReasonLen bounds a reason in events, status and hook environments.
const maxReasonLen = 300

// cleanText makes text from the modem or the service safe to show, store and pass on: valid
// UTF-8, one line, no control characters (an escape sequence must not reach a terminal, a NUL
// must not reach a hook's environment, where exec refuses it), at most maxReasonLen bytes.
func cleanText(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' ' // C0, DEL and C1, including CR, LF, ESC and NUL
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxReasonLen {
		cut := maxReasonLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// claimToken fetches the attestation token to pass with FAILED_DEVICE_NOT_CLAIMED (the owner
// needs it to claim the device); empty if the modem cannot give one.
func (d *Daemon) claimToken(ctx context.Context) string {
	m := d.currentModem()
	if m == nil {
		return ""
	}
	tctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	tok, err := m.AttestationToken(tctx)
	if err != nil {
		d.log.Warn("device not claimed, and the attestation token could not be read", zap.Error(err))
		return ""
	}
	return tok
}

// onFinished runs the on_finished action after DONE.
func (d *Daemon) onFinished(ctx context.Context, cfg Config, n int) {
	switch cfg.OnFinished {
	case OnFinishedModemRestart:
		m := d.currentModem()
		if m == nil {
			return
		}
		if err := d.restartModem(ctx, m); err != nil {
			d.log.Error("on_finished modem-restart failed", zap.Int("attempt", n), zap.Error(err))
		}
	case OnFinishedExec:
		d.mu.Lock()
		hooks, uuid := d.hooks, d.status.deviceUUID
		d.mu.Unlock()
		if hooks == nil {
			return
		}
		rec := EventRecord{Time: d.now(), Event: EventDone, Attempt: n, CorrelationID: d.cursor}
		hooks.enqueue(hookJob{argv: strings.Fields(cfg.OnFinishedExec), timeout: cfg.HookTimeout,
			env: eventEnv(rec, uuid, ""), event: EventDone})
	}
}

// restartModem goes through +CFUN=0 (a graceful shutdown for the modem's reset-loop guard,
// docs/modem.md §1.8) and back to the mode it had, so that new credentials are loaded.
func (d *Daemon) restartModem(ctx context.Context, m Modem) error {
	rctx, cancel := detached(ctx, 2*d.config().RestoreTimeout)
	defer cancel()
	mode, err := m.FunctionalMode(rctx)
	if err != nil {
		return fmt.Errorf("daemon: modem restart: read mode: %w", err)
	}
	if saved := d.pendingMode(); saved >= 0 && (mode == modePowerOff || mode == modeOffline) {
		// An earlier restore failed: the saved mode, not the offline one, is the mode to
		// come back to, and it stays saved until that succeeds.
		mode = saved
	} else if mode != modePowerOff {
		if err := d.deps.Store.Apply([]store.Change{{Key: keySavedCFUN, Value: strconv.Itoa(mode)}}); err != nil {
			return fmt.Errorf("daemon: modem restart: save mode: %w: %w", ErrStore, err)
		}
	}
	if err := m.SetFunctionalMode(rctx, modePowerOff); err != nil {
		return fmt.Errorf("daemon: modem restart: +CFUN=0: %w", err)
	}
	d.log.Info("modem restarted through +CFUN=0 to load new credentials", zap.Int("mode", mode))
	if mode == modePowerOff {
		return nil
	}
	return d.restoreMode(rctx, m, mode, false)
}
