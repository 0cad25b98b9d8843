package daemon

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/provisiond/provisiond/internal/store"
)

// Run is the daemon: it opens the modem (waiting for it while it is missing), provisions the
// root CA, and runs attempts at start (AutoStart), every interval, on TriggerNow and after
// backoffs, until ctx is cancelled. An attempt in flight when ctx is cancelled lets its AT
// command finish (bounded), restores the modem's mode and keeps its results in the outbox.
// Run returns nil on cancellation and an error only when the daemon cannot run at all.
func (d *Daemon) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer d.running.Store(false)
	cfg := d.config()
	d.startHooks()
	defer d.stopHooks()
	if err := d.loadState(cfg); err != nil {
		d.emit(EventFatalError, eventInfo{reason: reasonOf(err)})
		return err
	}
	if cfg.AutoStart {
		d.next = d.now().Add(d.spread(cfg))
		d.setNext(d.next)
		d.emit(EventScheduledProvisioning, eventInfo{next: d.next})
	} else {
		d.manual()
	}

	delay := d.reopenMin
	for {
		// Opening the modem runs several AT commands before the next beat: restoring its
		// mode, reading its identity, writing the root CA with the modem offline.
		d.beat(4 * d.deps.MaxStep)
		m, err := d.openModem(ctx)
		if err != nil {
			return nil // only cancellation ends the wait
		}
		err = d.onModemOpen(ctx, m)
		if err == nil {
			if d.outage {
				d.outage = false
				d.log.Info("modem is back", MsgID(msgModemBack))
			}
			delay = d.reopenMin
			d.schedule(ctx, m)
		}
		d.closeModem(m)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			// The port opens but the modem dies at once: don't spin.
			d.logOutage(msgModemLostAtOpen, "modem lost while starting up, waiting for it", err)
			d.beat(delay + d.idleQuiet())
			if !sleepCtx(ctx, delay) {
				return nil
			}
			delay = min(2*delay, d.reopenMax)
		}
	}
}

// logOutage logs the start of a modem outage once; Run says when it is over.
func (d *Daemon) logOutage(id, msg string, err error) {
	d.setState(StateWaitingForModem)
	if d.outage {
		d.log.Debug(msg, MsgID(id), zap.Error(err))
		return
	}
	d.outage = true
	d.log.Warn(msg, MsgID(id), zap.Error(err))
	d.mu.Lock()
	waiting := d.waitingForModem()
	d.mu.Unlock()
	d.notifyText("waiting for " + waiting)
}

// sleepCtx waits for dur or ctx; false when ctx ended.
func sleepCtx(ctx context.Context, dur time.Duration) bool {
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// RunOnce runs one attempt for `provisiond run --once`: opens the modem (no waiting),
// provisions the root CA, delivers a pending outbox and provisions. The caller maps the
// Result to an exit code (0 for DONE, or NO_COMMANDS with Failed == 0). The error is non-nil
// when the attempt could not run or the modem was lost (the Result then says what was done).
func (d *Daemon) RunOnce(ctx context.Context) (Result, error) {
	if !d.running.CompareAndSwap(false, true) {
		return Result{}, ErrRunning
	}
	defer d.running.Store(false)
	cfg := d.config()
	d.startHooks()
	defer d.stopHooks()
	if err := d.loadState(cfg); err != nil {
		return Result{Event: EventFatalError, Reason: reasonOf(err), Err: err}, err
	}
	m, err := d.deps.OpenModem(ctx)
	if err != nil {
		err = fmt.Errorf("daemon: open modem: %w", err)
		return Result{Event: EventFailed, Reason: reasonOf(err), Err: err}, err
	}
	defer d.closeModem(m)
	if err := d.onModemOpen(ctx, m); err != nil {
		err = fmt.Errorf("daemon: modem: %w", err)
		return Result{Event: EventFailed, Reason: reasonOf(err), Err: err}, err
	}
	o := d.attempt(ctx)
	d.setState(StateIdle)
	d.notify(o.res, time.Time{}, 0)
	if o.modemLost {
		return o.res, fmt.Errorf("daemon: %w: %w", ErrModemLost, o.res.Err)
	}
	return o.res, nil
}

func (d *Daemon) startHooks() {
	h := startHooks(d.log)
	d.mu.Lock()
	d.hooks = h
	d.mu.Unlock()
}

// stopHooks gives queued hooks (STOP, DONE, on_finished) a bounded chance to run.
func (d *Daemon) stopHooks() {
	d.mu.Lock()
	h, timeout := d.hooks, d.cfg.HookTimeout
	d.hooks = nil
	d.mu.Unlock()
	h.stop(2 * timeout)
}

// openModem calls Deps.OpenModem until it succeeds, backing off from reopenMin to reopenMax.
// It logs once per outage, not per try. The error is ctx's.
func (d *Daemon) openModem(ctx context.Context) (Modem, error) {
	delay := d.reopenMin
	for {
		m, err := d.deps.OpenModem(ctx)
		if err == nil {
			return m, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		d.logOutage(msgModemMissing, "modem not available, waiting for it", err)
		d.beat(delay + d.idleQuiet())
		if !sleepCtx(ctx, delay) {
			return nil, ctx.Err()
		}
		delay = min(2*delay, d.reopenMax)
	}
}

func (d *Daemon) closeModem(m Modem) {
	d.mu.Lock()
	if d.modem == m {
		d.modem = nil
	}
	d.mu.Unlock()
	if err := m.Close(); err != nil {
		d.log.Debug("closing the modem", zap.Error(err))
	}
}

// schedule runs attempts on m until ctx is cancelled or m is lost. While it waits it wakes
// every beatEvery to tell the heartbeat that it is still responsive.
func (d *Daemon) schedule(ctx context.Context, m Modem) {
	beat := time.NewTicker(d.beatEvery)
	defer beat.Stop()
schedule:
	for {
		d.beat(d.idleQuiet())
		state := StateIdle
		if d.backoff > 0 {
			state = StateBackoff
		}
		d.mu.Lock()
		d.status.state = state
		d.status.backoff = d.backoff
		d.mu.Unlock()
		wait := max(d.next.Sub(d.now()), 0)
		if d.next.IsZero() {
			wait = MaxBackoff // manual mode: the timer is never selected, only TriggerNow wakes
		}
		timer, stop := d.after(wait)
		if d.next.IsZero() {
			timer = nil
		}
	wait:
		for {
			select {
			case <-beat.C:
				d.beat(d.idleQuiet())
				continue wait
			case <-ctx.Done():
				stop()
				return
			case <-m.Done():
				stop()
				d.logOutage(msgModemDisconnected, "modem disconnected, waiting for it to come back", nil)
				return
			case <-d.resched:
				stop()
				switch cfg := d.config(); {
				case !cfg.AutoStart:
					d.manual()
				case d.backoff == 0 || d.next.IsZero():
					d.backoff = 0
					d.next = d.now().Add(d.scheduleInterval(cfg) + d.spread(cfg))
					d.setNext(d.next)
					d.emit(EventScheduledProvisioning, eventInfo{next: d.next, reason: "interval changed"})
				}
				continue schedule
			case <-d.trigger:
				stop()
			case <-timer:
			}
			break
		}
		o := d.attempt(ctx)
		cfg := d.config() // an interval change made by the batch applies from now on
		switch {
		case !cfg.AutoStart:
			d.manual()
			d.notify(o.res, time.Time{}, 0)
		case o.backoff:
			d.backoff = nextBackoff(d.backoff, cfg.InitialBackoff)
			d.scheduleNext(o.res, d.now().Add(d.backoff))
		default:
			d.backoff = 0
			d.scheduleNext(o.res, d.now().Add(d.scheduleInterval(cfg)+d.spread(cfg)))
		}
		d.idle()
		if ctx.Err() != nil {
			return
		}
		if o.modemLost || modemGone(m) {
			d.logOutage(msgModemDisconnected, "modem disconnected, waiting for it to come back", o.res.Err)
			return
		}
	}
}

// manual is the schedule of provisioning.auto_start off: no attempt until TriggerNow (the
// `provisiond now` command, SIGUSR1), no retry after a failure either.
func (d *Daemon) manual() {
	d.backoff = 0
	d.next = time.Time{}
	d.setNext(d.next)
}

// nextBackoff doubles the backoff from initial, capped at MaxBackoff (docs/protocol.md §4.7).
func nextBackoff(cur, initial time.Duration) time.Duration {
	if cur <= 0 {
		return min(initial, MaxBackoff)
	}
	return min(2*cur, MaxBackoff)
}

// interval is the store's <prefix>/interval-sec when set and valid, else Config.Interval.
func (d *Daemon) interval(cfg Config) time.Duration {
	n, _ := d.storedInterval(cfg)
	if n > 0 {
		return n
	}
	return cfg.Interval
}

// scheduleInterval is interval for the scheduler, which also says when a stored value is
// unusable (a service may write anything there).
func (d *Daemon) scheduleInterval(cfg Config) time.Duration {
	n, raw := d.storedInterval(cfg)
	if n > 0 {
		return n
	}
	if raw != "" && raw != "0" { // 0 is how SetInterval says "use the configured interval"
		d.log.Warn("stored interval is not a positive number; using the configured one",
			zap.String("key", cfg.StorePrefix+"/"+subkeyInterval), zap.String("value", truncate(raw, 40)))
	}
	return cfg.Interval
}

// storedInterval reads <prefix>/interval-sec: the interval when valid, and the raw value.
func (d *Daemon) storedInterval(cfg Config) (time.Duration, string) {
	v, ok, err := getOptional(d.deps.Store, cfg.StorePrefix+"/"+subkeyInterval)
	if err != nil || !ok {
		return 0, ""
	}
	if n, valid := parseInterval(v); valid {
		return time.Duration(n) * time.Second, v
	}
	return 0, v
}

// spread is a random delay in [0, Config.Spread).
func (d *Daemon) spread(cfg Config) time.Duration {
	if cfg.Spread <= 0 {
		return 0
	}
	return time.Duration(d.randN(int64(cfg.Spread)))
}

func (d *Daemon) setNext(t time.Time) {
	d.mu.Lock()
	d.status.next = t
	d.mu.Unlock()
}

// SetInterval stores the interval in <prefix>/interval-sec (0 means "use the configured
// interval") and reschedules the next attempt from now, as the device library's
// nrf_provisioning_set_interval does. A running attempt is not affected.
func (d *Daemon) SetInterval(ctx context.Context, seconds int) error {
	if seconds < 0 {
		return fmt.Errorf("daemon: set interval %d: %w", seconds, ErrInvalidInterval)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	cfg := d.config()
	key := cfg.StorePrefix + "/" + subkeyInterval
	if err := d.deps.Store.Apply([]store.Change{{Key: key, Value: strconv.Itoa(seconds)}}); err != nil {
		return fmt.Errorf("daemon: set interval: %w", err)
	}
	d.signalResched()
	return nil
}

func (d *Daemon) notify(res Result, next time.Time, backoff time.Duration) {
	d.notifyText(notifyText(res, next, backoff))
}

// scheduleNext sets the next attempt after one that ended with res and reports it.
func (d *Daemon) scheduleNext(res Result, next time.Time) {
	d.next = next
	d.setNext(next)
	d.emit(EventScheduledProvisioning, eventInfo{attempt: d.attempts, next: next})
	d.notify(res, next, d.backoff)
}

func (d *Daemon) idle() {
	if d.deps.Idle != nil {
		d.deps.Idle()
	}
}

func (d *Daemon) notifyText(s string) {
	if d.deps.Notify != nil {
		d.deps.Notify(s)
	}
}
