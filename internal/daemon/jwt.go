package daemon

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/provisiond/provisiond/internal/atmodem"
)

// jwtMargin is how long before its expiry a cached JWT is replaced, so that a request never
// reaches the service with a token about to expire.
const jwtMargin = 30 * time.Second

// jwtCache holds the modem's last JWT; it is reused while valid instead of asking the modem
// for one per request (the device library makes one per HTTP request).
type jwtCache struct {
	token string
	until time.Time // by the host's clock (monotonic when Deps.Now is time.Now)
	// clockOK: the modem made a JWT with iat and exp since it was opened, so it had valid
	// time; its clock is then asked again only when a JWT fails.
	clockOK bool
}

// token returns a valid JWT, asking the modem for a new one when the cached one is about to
// expire.
//
// The modem's clock is asked only when the JWT needs it. A modem without valid time cannot
// fill in iat and exp and fails the %JWT with CME 525, a bare ERROR while CMEE is 0
// (docs/modem.md §1.3, §1.4). So with set_clock_from_host on, the JWT is asked first and the
// clock only after such a failure: when it has no valid time it is set from the host and the
// JWT asked once more. 525 has other causes too, so the clock is read before it is set, and a
// modem with valid time gets the JWT's error back. With set_clock_from_host off the clock is
// read first until the modem has made a JWT: a %JWT to a modem without time could only fail,
// and FAILED_NO_VALID_DATETIME must come without touching the modem further.
func (d *Daemon) token(ctx context.Context, cfg Config) (string, error) {
	now := d.now()
	if d.jwt.token != "" && now.Before(d.jwt.until) {
		return d.jwt.token, nil
	}
	m := d.currentModem()
	if m == nil {
		return "", fmt.Errorf("daemon: jwt: %w", ErrNoModem)
	}
	clockOK := d.jwt.clockOK
	checked := false
	if !cfg.SetClockFromHost && !clockOK {
		if _, err := d.ensureClock(ctx, cfg, m); err != nil {
			return "", err
		}
		checked = true
	}
	tok, err := m.JWT(ctx, cfg.JWTSecTag, cfg.JWTValidTime)
	if err != nil && !checked && mayLackTime(err) {
		set, cerr := d.ensureClock(ctx, cfg, m)
		if cerr != nil {
			return "", cerr
		}
		if set {
			tok, err = m.JWT(ctx, cfg.JWTSecTag, cfg.JWTValidTime)
		}
	}
	if err != nil {
		return "", fmt.Errorf("daemon: jwt: %w", err)
	}
	d.jwt = jwtCache{token: tok, until: jwtReuseUntil(tok, now, cfg.JWTValidTime), clockOK: true}
	if id := jwtDeviceUUID(tok); id != "" {
		d.mu.Lock()
		if d.status.deviceUUID == "" {
			d.status.deviceUUID = id
		}
		d.mu.Unlock()
	}
	return tok, nil
}

// ensureClock reads the modem's clock and, when it has no valid time, sets it from the host
// (set reports that) or, when that is not allowed, fails with ErrNoValidTime.
func (d *Daemon) ensureClock(ctx context.Context, cfg Config, m Modem) (set bool, err error) {
	_, valid, err := m.Clock(ctx)
	if err != nil {
		return false, fmt.Errorf("daemon: jwt: read modem clock: %w", err)
	}
	if valid {
		return false, nil
	}
	if !cfg.SetClockFromHost {
		return false, fmt.Errorf("daemon: jwt: %w (set_clock_from_host is off)", ErrNoValidTime)
	}
	host := d.now().UTC()
	if err := m.SetClock(ctx, host); err != nil {
		return false, fmt.Errorf("daemon: jwt: set modem clock: %w", err)
	}
	d.log.Info("modem had no valid time; set it from the host clock", zap.Time("time", host))
	return true, nil
}

// mayLackTime reports whether a %JWT failure may mean the modem has no valid time: CME 525,
// or a bare ERROR (CMEE 0 hides the code).
func mayLackTime(err error) bool {
	var cme *atmodem.CMEError
	if errors.As(err, &cme) {
		return cme.Code == jwtNoTimeCME
	}
	return errors.Is(err, atmodem.ErrError)
}

// jwtNoTimeCME is the %JWT error of a modem that cannot make the token, also for want of
// valid time (docs/modem.md §1.3).
const jwtNoTimeCME = 525

// jwtDeviceUUID returns the device UUID from a modem JWT's iss claim, "<chip>.<device UUID>"
// (docs/modem.md §1.3), or "" when the claim is not of that form. It spares the
// %ATTESTTOKEN read the UUID would otherwise cost.
func jwtDeviceUUID(tok string) string {
	var claims struct {
		ISS string `json:"iss"`
	}
	if jwtClaims(tok, &claims) != nil {
		return ""
	}
	_, id, ok := strings.Cut(claims.ISS, ".")
	if !ok || !isUUID(id) {
		return ""
	}
	return strings.ToLower(id)
}

// isUUID reports whether s is 8-4-4-4-12 hexadecimal digits.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
				return false
			}
		}
	}
	return true
}

// jwtReuseUntil says until when tok may be reused. The lifetime is taken from the token's own
// claims (exp − iat, so that an offset between the modem's and the host's clocks does not
// matter), else exp against the host clock, else the validity asked for; minus a margin.
func jwtReuseUntil(tok string, now time.Time, asked time.Duration) time.Time {
	life := asked
	if iat, exp, err := jwtTimes(tok); err == nil {
		switch {
		case exp > 0 && iat > 0 && exp > iat:
			life = time.Duration(exp-iat) * time.Second
		case exp > 0:
			life = time.Unix(exp, 0).Sub(now)
		}
	}
	margin := jwtMargin
	if life < 2*margin {
		margin = life / 2
	}
	if life -= margin; life <= 0 {
		return now
	}
	return now.Add(life)
}

// jwtTimes reads iat and exp from a JWT's payload without verifying it (the modem made it).
func jwtTimes(tok string) (iat, exp int64, err error) {
	var claims struct {
		IAT json.Number `json:"iat"`
		EXP json.Number `json:"exp"`
	}
	if err := jwtClaims(tok, &claims); err != nil {
		return 0, 0, err
	}
	iat, _ = claims.IAT.Int64()
	exp, _ = claims.EXP.Int64()
	return iat, exp, nil
}

// jwtClaims decodes a JWT's payload into v without verifying it (the modem made it).
func jwtClaims(tok string, v any) error {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return errors.New("not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(string(payload)))
	dec.UseNumber()
	return dec.Decode(v)
}
