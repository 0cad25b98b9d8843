package simcloud

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"

	"github.com/provisiond/provisiond/internal/attest"
)

func TestJWTVerification(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s := startServer(t, Config{Clock: func() time.Time { return now }})
	dev := claimedDevice(t, s)
	other := claimedDevice(t, s)
	unregistered := newTestDevice(t)
	unclaimed := newTestDevice(t)
	if err := s.RegisterDevice(unclaimed.uuid, &unclaimed.key.PublicKey); err != nil {
		t.Fatal(err)
	}
	valid := attest.JWTParams{IssuedAt: now, ValidFor: 5 * time.Minute}

	tests := []struct {
		name   string
		token  func(t *testing.T) string
		ok     bool
		reason error // wrapped by the *AuthError, when checked
	}{
		{name: "valid", token: func(t *testing.T) string { return dev.jwtWith(t, valid) }, ok: true},
		{name: "upper-case uuid in iss", token: func(t *testing.T) string {
			p := valid
			p.DeviceUUID = strings.ToUpper(dev.uuid)
			return dev.jwtWith(t, p)
		}, ok: true},
		{name: "no iat or exp (modem without expiry)", token: func(t *testing.T) string {
			return dev.jwtWith(t, attest.JWTParams{})
		}, ok: true},
		{name: "within clock skew after exp", token: func(t *testing.T) string {
			p := valid
			p.IssuedAt = now.Add(-5*time.Minute - 30*time.Second)
			return dev.jwtWith(t, p)
		}, ok: true},
		{name: "expired", token: func(t *testing.T) string {
			p := valid
			p.IssuedAt = now.Add(-10 * time.Minute)
			return dev.jwtWith(t, p)
		}, reason: jwt.ErrTokenExpired},
		{name: "issued in the future", token: func(t *testing.T) string {
			p := valid
			p.IssuedAt = now.Add(time.Hour)
			return dev.jwtWith(t, p)
		}, reason: jwt.ErrTokenUsedBeforeIssued},
		{name: "wrong key", token: func(t *testing.T) string {
			p := valid
			p.Key = other.key
			return dev.jwtWith(t, p)
		}, reason: jwt.ErrTokenSignatureInvalid},
		{name: "iss names another registered device", token: func(t *testing.T) string {
			p := valid
			p.DeviceUUID = other.uuid
			return dev.jwtWith(t, p)
		}, reason: jwt.ErrTokenSignatureInvalid},
		{name: "iss without chip", token: func(t *testing.T) string {
			return signClaims(t, dev, jwt.MapClaims{"iss": dev.uuid})
		}},
		{name: "iss not a uuid", token: func(t *testing.T) string {
			return signClaims(t, dev, jwt.MapClaims{"iss": "nrf9161.not-a-uuid"})
		}},
		{name: "no iss", token: func(t *testing.T) string { return signClaims(t, dev, jwt.MapClaims{"jti": "x"}) }},
		{name: "HS256", token: func(t *testing.T) string {
			tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": "nrf9161." + dev.uuid}).SignedString([]byte("secret"))
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}},
		{name: "unregistered device", token: func(t *testing.T) string { return unregistered.jwtWith(t, valid) }, reason: ErrUnknownDevice},
		{name: "unclaimed device", token: func(t *testing.T) string { return unclaimed.jwtWith(t, valid) }, reason: ErrNotClaimed},
		{name: "garbage", token: func(*testing.T) string { return "a.b.c" }},
		{name: "empty", token: func(*testing.T) string { return "" }},
	}
	h := newHTTPDevice(t, s, dev)
	cd := newCoAPDevice(t, s, dev, blockwise.SZX1024)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.token(t)
			uuid, err := s.authorize(tok)
			var ae *AuthError
			switch {
			case tc.ok && (err != nil || uuid != dev.uuid):
				t.Errorf("authorize = %q, %v; want %s", uuid, err, dev.uuid)
			case !tc.ok && !errors.As(err, &ae):
				t.Errorf("authorize error = %v, want *AuthError", err)
			case tc.reason != nil && !errors.Is(err, tc.reason):
				t.Errorf("authorize error = %v, want it to wrap %v", err, tc.reason)
			}

			wantHTTP, wantCoAP := http.StatusNoContent, codes.Created
			if !tc.ok {
				wantHTTP, wantCoAP = http.StatusUnauthorized, codes.Unauthorized
			}
			st, body, err := h.do(http.MethodGet, "/v1/provisioning/commands?after=&rxMaxSize=1024", tok, nil)
			if err != nil || st != wantHTTP {
				t.Errorf("http fetch = %d %s %v, want %d", st, body, err, wantHTTP)
			}
			if code, err := cd.auth(tok); err != nil || code != wantCoAP {
				t.Errorf("coap auth = %v %v, want %v", code, err, wantCoAP)
			}
		})
	}
}

func signClaims(t *testing.T, d testDevice, c jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodES256, c).SignedString(d.key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestCoAPSession checks that the DTLS session, not the request, carries the identity: a
// fetch before auth is refused, re-auth on the same session works, a failed re-auth keeps
// the earlier binding, and unclaiming the device refuses the bound session.
func TestCoAPSession(t *testing.T) {
	s := startServer(t, Config{})
	dev := claimedDevice(t, s)
	c := newCoAPDevice(t, s, dev, blockwise.SZX1024)

	if code, _ := c.fetch("after="); code != codes.Unauthorized {
		t.Errorf("fetch before auth = %v, want 4.01", code)
	}
	if code := c.upload([]byte{0x81, 0x82, 0x61, 0x78, 0x18, 0x66}); code != codes.Unauthorized {
		t.Errorf("upload before auth = %v, want 4.01", code)
	}
	jwtTok := dev.jwt(t)
	for i := range 3 {
		if code, err := c.auth(jwtTok); err != nil || code != codes.Created {
			t.Fatalf("auth #%d = %v %v, want 2.01", i, code, err)
		}
	}
	if code, err := c.auth("garbage"); err != nil || code != codes.Unauthorized {
		t.Errorf("bad re-auth = %v %v, want 4.01", code, err)
	}
	if code, body := c.fetch("after="); code != codes.Content || len(body) != 0 {
		t.Errorf("fetch = %v %x, want 2.05 with no payload", code, body)
	}
	got, err := s.Device(dev.uuid)
	if err != nil || got.ModemVersion != "mfw_nrf91x1_2.0.2" || got.ClientVersion != "test" || got.LastSeenAt == nil {
		t.Errorf("device after auth = %+v, %v", got, err)
	}
	if err := s.Unclaim(dev.uuid); err != nil {
		t.Fatal(err)
	}
	if code, _ := c.fetch("after="); code != codes.Unauthorized {
		t.Errorf("fetch after unclaim = %v, want 4.01", code)
	}
}
