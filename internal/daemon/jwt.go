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
)

// jwtMargin is how long before its expiry a cached JWT is replaced, so that a request never
// reaches the service with a token about to expire.
const jwtMargin = 30 * time.Second

// jwtCache holds the modem's last JWT; it is reused while valid instead of asking the modem
// for one per request (the device library makes one per HTTP request).
type jwtCache struct {
	token string
	until time.Time // by the host's clock (monotonic when Deps.Now is time.Now)
}

// token returns a valid JWT, asking the modem for a new one when the cached one is about to
// expire. Before asking, it makes sure the modem has a valid time, setting it from the host
// when allowed (FAILED_NO_VALID_DATETIME otherwise).
func (d *Daemon) token(ctx context.Context, cfg Config) (string, error) {
	now := d.now()
	if d.jwt.token != "" && now.Before(d.jwt.until) {
		return d.jwt.token, nil
	}
	m := d.currentModem()
	if m == nil {
		return "", fmt.Errorf("daemon: jwt: %w", ErrNoModem)
	}
	_, valid, err := m.Clock(ctx)
	if err != nil {
		return "", fmt.Errorf("daemon: jwt: read modem clock: %w", err)
	}
	if !valid {
		if !cfg.SetClockFromHost {
			return "", fmt.Errorf("daemon: jwt: %w (set_clock_from_host is off)", ErrNoValidTime)
		}
		host := d.now().UTC()
		if err := m.SetClock(ctx, host); err != nil {
			return "", fmt.Errorf("daemon: jwt: set modem clock: %w", err)
		}
		d.log.Info("modem had no valid time; set it from the host clock", zap.Time("time", host))
	}
	tok, err := m.JWT(ctx, cfg.JWTSecTag, cfg.JWTValidTime)
	if err != nil {
		return "", fmt.Errorf("daemon: jwt: %w", err)
	}
	d.jwt = jwtCache{token: tok, until: jwtReuseUntil(tok, now, cfg.JWTValidTime)}
	return tok, nil
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
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return 0, 0, errors.New("not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return 0, 0, err
	}
	var claims struct {
		IAT json.Number `json:"iat"`
		EXP json.Number `json:"exp"`
	}
	dec := json.NewDecoder(strings.NewReader(string(payload)))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil {
		return 0, 0, err
	}
	iat, _ = claims.IAT.Int64()
	exp, _ = claims.EXP.Int64()
	return iat, exp, nil
}
