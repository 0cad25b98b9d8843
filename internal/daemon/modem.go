package daemon

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/provisiond/provisiond/internal/atmodem"
	"github.com/provisiond/provisiond/internal/store"
)

// Functional modes (docs/modem.md §1.5).
const (
	modePowerOff = atmodem.ModePowerOff
	modeOffline  = atmodem.ModeOffline
	credRootCA   = atmodem.CredRootCA
)

// isModemLost reports whether err means the modem is gone.
func isModemLost(err error) bool {
	return errors.Is(err, atmodem.ErrPortLost) || errors.Is(err, atmodem.ErrClosed) ||
		errors.Is(err, ErrModemLost) || errors.Is(err, ErrNoModem)
}

// modemGone reports whether m's Done channel is closed.
func modemGone(m Modem) bool {
	select {
	case <-m.Done():
		return true
	default:
		return false
	}
}

// detached returns a context that outlives ctx's cancellation, bounded by timeout, for work
// that must happen even when the attempt is being cancelled (restoring the modem's mode).
func detached(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), timeout)
}

// graceContext returns a context that is not cancelled with ctx at once: after ctx is done it
// lives on for grace, so a running AT command can finish (SIGTERM must not cut a %CMNG write
// in half).
func graceContext(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-cctx.Done():
		}
	})
	return cctx, func() {
		stop()
		cancel()
	}
}

// goOffline reads the mode and, unless it is already 0 or 4, stores it under
// provisiond/saved-cfun and sets +CFUN=4. The mode is stored before the switch so that a crash
// in between restores it on the next start. saved is the mode to restore afterwards, -1 when
// there is none. A modem found offline with a mode still saved (an earlier restore failed)
// has that mode to restore: it stays saved until a restore to it succeeds.
func (d *Daemon) goOffline(ctx context.Context, m Modem, info eventInfo) (saved int, err error) {
	mode, err := m.FunctionalMode(ctx)
	if err != nil {
		return -1, fmt.Errorf("daemon: read functional mode: %w", err)
	}
	if mode == modePowerOff || mode == modeOffline {
		return d.pendingMode(), nil
	}
	if err := d.deps.Store.Apply([]store.Change{{Key: keySavedCFUN, Value: strconv.Itoa(mode)}}); err != nil {
		// Without the saved mode a crash would leave the modem offline for good: don't switch.
		return -1, fmt.Errorf("daemon: save functional mode: %w: %w", ErrStore, err)
	}
	d.emit(EventNeedLTEDeactivated, info)
	if err := m.SetFunctionalMode(ctx, modeOffline); err != nil {
		// The mode may or may not have changed; restoring it is harmless either way.
		return mode, fmt.Errorf("daemon: set functional mode 4: %w", err)
	}
	return mode, nil
}

// restoreMode puts the modem back into mode, even when ctx is cancelled (bounded), and
// deletes the saved mode unless keepSaved (the caller deletes it with its own write).
func (d *Daemon) restoreMode(ctx context.Context, m Modem, mode int, keepSaved bool) error {
	rctx, cancel := detached(ctx, d.config().RestoreTimeout)
	defer cancel()
	if err := m.SetFunctionalMode(rctx, mode); err != nil {
		d.log.Error("could not restore the modem's functional mode; it is restored on the next start",
			MsgID(msgModeRestoreFailed), zap.Int("mode", mode), zap.Error(err))
		return fmt.Errorf("daemon: restore functional mode %d: %w", mode, err)
	}
	if !keepSaved {
		if err := d.deps.Store.Apply([]store.Change{del(keySavedCFUN)}); err != nil {
			d.log.Warn("could not clear the saved functional mode", zap.Error(err))
		}
	}
	return nil
}

// pendingMode returns the mode saved under provisiond/saved-cfun that was never restored, or
// -1 when there is none (or it cannot be read: restoreSavedMode drops an unreadable one).
func (d *Daemon) pendingMode() int {
	v, ok, err := getOptional(d.deps.Store, keySavedCFUN)
	if err != nil || !ok {
		return -1
	}
	mode, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || mode < 0 {
		return -1
	}
	return mode
}

// restoreSavedMode restores a mode left in the store by a crash while the modem was offline.
func (d *Daemon) restoreSavedMode(ctx context.Context, m Modem) error {
	v, ok, err := getOptional(d.deps.Store, keySavedCFUN)
	if err != nil || !ok {
		return err
	}
	mode, perr := strconv.Atoi(strings.TrimSpace(v))
	if perr != nil || mode < 0 {
		d.log.Error("saved functional mode unreadable; dropped", zap.String("value", v))
		return d.deps.Store.Apply([]store.Change{del(keySavedCFUN)})
	}
	d.log.Warn("restoring the functional mode saved before a stop or crash", MsgID(msgSavedModeRestore), zap.Int("mode", mode))
	if err := d.restoreMode(ctx, m, mode, false); err != nil {
		return err
	}
	d.emit(EventNeedLTEActivated, eventInfo{reason: "mode restored after restart"})
	return nil
}

// pendingCMEE returns the CMEE value saved under provisiond/saved-cmee that was never restored,
// or -1 when there is none (or it cannot be read: restoreSavedCMEE drops an unreadable one).
func (d *Daemon) pendingCMEE() int {
	v, ok, err := getOptional(d.deps.Store, keySavedCMEE)
	if err != nil || !ok {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// restoreSavedCMEE restores a CMEE value left in the store by a crash (or a lost modem) between
// a batch's AT+CMEE=1 and its restore, and deletes it once the modem took it.
func (d *Daemon) restoreSavedCMEE(ctx context.Context, m Modem) error {
	v, ok, err := getOptional(d.deps.Store, keySavedCMEE)
	if err != nil || !ok {
		return err
	}
	n, perr := strconv.Atoi(strings.TrimSpace(v))
	if perr != nil || n < 0 {
		d.log.Error("saved CMEE value unreadable; dropped", zap.String("value", v))
		return d.deps.Store.Apply([]store.Change{del(keySavedCMEE)})
	}
	d.log.Warn("restoring the CMEE value saved before a stop or crash", MsgID(msgSavedCMEERestore), zap.Int("cmee", n))
	rctx, cancel := detached(ctx, d.config().RestoreTimeout)
	defer cancel()
	if err := m.SetCMEE(rctx, n); err != nil {
		d.log.Error("could not restore CMEE; it is restored on the next start", MsgID(msgCMEERestoreFailed), zap.Int("cmee", n), zap.Error(err))
		return fmt.Errorf("daemon: restore CMEE %d: %w", n, err)
	}
	if err := d.deps.Store.Apply([]store.Change{del(keySavedCMEE)}); err != nil {
		d.log.Warn("could not clear the saved CMEE value", zap.Error(err))
	}
	return nil
}

// onModemOpen runs once per opened modem: restore a leftover mode, read the identity, and
// write the root CA if needed. Only a lost modem is an error; the rest is logged.
func (d *Daemon) onModemOpen(ctx context.Context, m Modem) error {
	cfg := d.config()
	d.mu.Lock()
	d.modem = m
	d.status.deviceUUID = ""
	d.status.modemVersion = ""
	d.mu.Unlock()
	d.jwt = jwtCache{} // a JWT belongs to the modem that made it

	if err := d.restoreSavedCMEE(ctx, m); err != nil && isModemLost(err) {
		return err
	}
	if err := d.restoreSavedMode(ctx, m); err != nil && isModemLost(err) {
		return err
	}
	ver, err := m.ShortSWVersion(ctx)
	if err != nil {
		if isModemLost(err) || ctx.Err() != nil {
			return err
		}
		d.log.Warn("could not read the modem firmware version", zap.Error(err))
	}
	d.markReady() // the modem answered
	// The device UUID is not read here: the first JWT carries it in its iss claim (see
	// token), and DeviceUUID reads it with %ATTESTTOKEN when asked before that.
	d.mu.Lock()
	d.status.modemVersion = ver
	d.mu.Unlock()
	d.log.Info("modem ready", zap.String("modem_version", ver))

	if err := d.ensureRootCA(ctx, m, cfg); err != nil {
		if isModemLost(err) || ctx.Err() != nil {
			return err
		}
		d.log.Error("root CA provisioning failed", MsgID(msgRootCAFailed), zap.Int("sec_tag", cfg.RootCASecTag), zap.Error(err))
	}
	return nil
}

// ensureRootCA writes the service's root CA into the CA tag when that tag holds no CA
// certificate, with the modem offline, and checks the hash the modem lists for it. An
// existing credential is never overwritten.
func (d *Daemon) ensureRootCA(ctx context.Context, m Modem, cfg Config) error {
	if !cfg.ProvisionRootCA {
		return nil
	}
	if cfg.RootCAPEM == "" {
		return fmt.Errorf("daemon: root CA: no certificate for transport %q", cfg.Transport)
	}
	tag := cfg.RootCASecTag
	creds, err := m.Credentials(ctx, tag)
	if err != nil {
		return fmt.Errorf("daemon: root CA: list sec tag %d: %w", tag, err)
	}
	if findCredential(creds, tag, credRootCA) != nil {
		d.log.Debug("root CA present; left as it is", zap.Int("sec_tag", tag))
		return nil
	}
	saved, err := d.goOffline(ctx, m, eventInfo{reason: "writing the root CA"})
	if saved >= 0 {
		defer func() {
			if d.restoreMode(ctx, m, saved, false) == nil {
				d.emit(EventNeedLTEActivated, eventInfo{reason: "root CA written"})
			}
		}()
	}
	if err != nil {
		return err
	}
	wctx, cancel := detached(ctx, cfg.RestoreTimeout) // never leave a half-written credential
	defer cancel()
	if err := m.WriteCredential(wctx, tag, credRootCA, cfg.RootCAPEM); err != nil {
		return fmt.Errorf("daemon: root CA: write sec tag %d: %w", tag, err)
	}
	creds, err = m.Credentials(wctx, tag)
	if err != nil {
		return fmt.Errorf("daemon: root CA: verify sec tag %d: %w", tag, err)
	}
	c := findCredential(creds, tag, credRootCA)
	switch {
	case c == nil:
		return fmt.Errorf("daemon: root CA: sec tag %d: not listed after the write", tag)
	case c.SHA256 == "":
		d.log.Info("root CA written; this modem firmware lists no hash to verify it", zap.Int("sec_tag", tag))
	case !rootCAHashMatches(c.SHA256, cfg.RootCAPEM):
		return fmt.Errorf("daemon: root CA: sec tag %d: modem lists SHA-256 %s, expected %s",
			tag, c.SHA256, sha256Hex([]byte(cfg.RootCAPEM)))
	default:
		d.log.Info("root CA written and verified", zap.Int("sec_tag", tag), zap.String("sha256", c.SHA256))
	}
	return nil
}

func findCredential(creds []atmodem.Credential, tag, typ int) *atmodem.Credential {
	for i := range creds {
		if creds[i].SecTag == int64(tag) && creds[i].Type == typ {
			return &creds[i]
		}
	}
	return nil
}

// rootCAHashMatches compares the hash a modem lists for a credential with the PEM written.
// Assumption (docs/modem.md §1.1: the SHA-256 of the credential as stored, over which bytes is
// not documented): the modem hashes the content exactly as written between the quotes of
// %CMNG. As that is not verified on hardware, the same text with CRLF line ends, without its
// final line end, and the certificate's DER are accepted too; anything else is a mismatch.
func rootCAHashMatches(listed, pemText string) bool {
	candidates := []string{
		pemText,
		strings.ReplaceAll(strings.ReplaceAll(pemText, "\r\n", "\n"), "\n", "\r\n"),
		strings.TrimRight(pemText, "\r\n"),
	}
	if b, _ := pem.Decode([]byte(pemText)); b != nil {
		if _, err := x509.ParseCertificate(b.Bytes); err == nil {
			candidates = append(candidates, string(b.Bytes))
		}
	}
	for _, c := range candidates {
		if strings.EqualFold(listed, sha256Hex([]byte(c))) {
			return true
		}
	}
	return false
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// waitRegistered waits for a +CEREG URC saying the modem is registered (1 home, 5 roaming),
// for Uplink "modem" after the mode was restored. sub must have been taken before the
// restore so that no URC is missed.
func waitRegistered(ctx context.Context, urcs <-chan string, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case line, ok := <-urcs:
			if !ok {
				return fmt.Errorf("daemon: wait for LTE registration: %w", ErrModemLost)
			}
			if registeredURC(line) {
				return nil
			}
		case <-t.C:
			return fmt.Errorf("daemon: wait for LTE registration: none within %s: %w", timeout, context.DeadlineExceeded)
		case <-ctx.Done():
			return fmt.Errorf("daemon: wait for LTE registration: %w", ctx.Err())
		}
	}
}

// registeredURC reports whether line is "+CEREG: <stat>[,…]" with stat 1 or 5.
func registeredURC(line string) bool {
	rest, ok := strings.CutPrefix(line, "+CEREG:")
	if !ok {
		return false
	}
	stat, _, _ := strings.Cut(strings.TrimSpace(rest), ",")
	return stat == "1" || stat == "5"
}
