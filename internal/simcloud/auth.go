package simcloud

import (
	"crypto/ecdsa"
	"errors"
	"strings"

	"github.com/golang-jwt/jwt/v5"

	"github.com/provisiond/provisiond/internal/attest"
)

// authorize verifies a device JWT (docs/protocol.md §5.1) and returns the device UUID from its
// iss claim "<chip>.<uuid>". The token must be ES256, signed by the identity key registered
// for that UUID, and the device must be claimed. exp and iat are checked against Config.Clock
// with Config.ClockSkew leeway when present; a token without them is accepted, because the
// modem leaves both out when asked for no expiry (docs/modem.md §1.3) and the service cannot tell
// that from an old client. Every refusal is an *AuthError.
func (s *Server) authorize(token string) (string, error) {
	token = strings.TrimSpace(token)
	if token == "" {
		return "", &AuthError{Reason: "no token"}
	}
	var uuid string
	var lookupErr error
	keyFunc := func(t *jwt.Token) (any, error) {
		iss, err := t.Claims.GetIssuer()
		if err != nil {
			return nil, err
		}
		_, id, err := attest.ParseIssuer(iss)
		if err != nil {
			return nil, err
		}
		uuid = id
		s.mu.Lock()
		var pub *ecdsa.PublicKey
		if d := s.devices[id]; d != nil {
			pub = d.pub
		}
		s.mu.Unlock()
		if pub == nil {
			lookupErr = ErrUnknownDevice
			return nil, ErrUnknownDevice
		}
		return pub, nil
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}),
		jwt.WithTimeFunc(s.now),
		jwt.WithLeeway(s.cfg.ClockSkew),
		jwt.WithIssuedAt(),
	)
	var claims jwt.RegisteredClaims
	if _, err := parser.ParseWithClaims(token, &claims, keyFunc); err != nil {
		switch {
		case lookupErr != nil:
			return "", &AuthError{Reason: "unknown device " + uuid, Err: lookupErr}
		case errors.Is(err, jwt.ErrTokenExpired):
			return "", &AuthError{Reason: "token expired", Err: err}
		case errors.Is(err, jwt.ErrTokenSignatureInvalid):
			return "", &AuthError{Reason: "signature invalid", Err: err}
		}
		return "", &AuthError{Reason: "token invalid", Err: err}
	}
	s.mu.Lock()
	claimed := s.devices[uuid] != nil && s.devices[uuid].claimed
	s.mu.Unlock()
	if !claimed {
		return "", &AuthError{Reason: "device " + uuid + " not claimed", Err: ErrNotClaimed}
	}
	return uuid, nil
}
