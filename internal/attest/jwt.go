package attest

import (
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// JWTParams describes one modem JWT (%JWT) to sign.
type JWTParams struct {
	// Key signs the token: the device identity key, or a client key from a sec tag.
	Key *ecdsa.PrivateKey
	// Chip is the lower-case chip name that prefixes iss and jti ("nrf9161").
	Chip string
	// DeviceUUID (8-4-4-4-12) goes into iss; FWUUID (modem firmware UUID) into jti.
	DeviceUUID, FWUUID string
	// Subject and Audience are left out when empty, as the modem does.
	Subject, Audience string
	// IssuedAt is the modem clock; zero (no valid time) leaves out iat and exp.
	IssuedAt time.Time
	// ValidFor sets exp = iat + ValidFor; zero leaves out iat and exp.
	ValidFor time.Duration
}

// JWTInfo is what a verified modem JWT says.
type JWTInfo struct {
	Chip       string
	DeviceUUID string
	Claims     jwt.RegisteredClaims
}

// SignJWT returns an ES256 JWT with iss "<chip>.<device uuid>" and
// jti "<chip>.<fw uuid>.<32 random hex>", base64url without padding like the modem's.
func SignJWT(p JWTParams) (string, error) {
	if p.Key == nil {
		return "", fmt.Errorf("attest: jwt: %w", ErrKey)
	}
	var rnd [16]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", fmt.Errorf("attest: jwt id: %w", err)
	}
	c := jwt.RegisteredClaims{
		Issuer:  p.Chip + "." + p.DeviceUUID,
		ID:      p.Chip + "." + p.FWUUID + "." + hex.EncodeToString(rnd[:]),
		Subject: p.Subject,
	}
	if p.Audience != "" {
		c.Audience = jwt.ClaimStrings{p.Audience}
	}
	if !p.IssuedAt.IsZero() && p.ValidFor > 0 {
		iat := p.IssuedAt.Truncate(time.Second)
		c.IssuedAt = jwt.NewNumericDate(iat)
		c.ExpiresAt = jwt.NewNumericDate(iat.Add(p.ValidFor))
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodES256, c).SignedString(p.Key)
	if err != nil {
		return "", fmt.Errorf("attest: jwt sign: %w", err)
	}
	return s, nil
}

// VerifyJWT checks an ES256 modem JWT against pub at time now (exp and iat, when present,
// are enforced) and returns the chip and device UUID from iss.
func VerifyJWT(token string, pub *ecdsa.PublicKey, now time.Time) (*JWTInfo, error) {
	var c jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithIssuedAt())
	if err != nil {
		if errors.Is(err, jwt.ErrTokenSignatureInvalid) {
			return nil, fmt.Errorf("attest: jwt: %w: %w", ErrSignature, err)
		}
		return nil, fmt.Errorf("attest: jwt: %w", err)
	}
	chip, uuid, err := ParseIssuer(c.Issuer)
	if err != nil {
		return nil, err
	}
	return &JWTInfo{Chip: chip, DeviceUUID: uuid, Claims: c}, nil
}

// ParseIssuer splits a modem JWT iss claim "<chip>.<device uuid>" and normalises the UUID
// to lower case.
func ParseIssuer(iss string) (chip, uuid string, err error) {
	chip, rest, ok := strings.Cut(iss, ".")
	if !ok || chip == "" {
		return "", "", &FormatError{What: "jwt", Part: "iss (want <chip>.<uuid>)"}
	}
	u, err := ParseUUID(rest)
	if err != nil {
		return "", "", &FormatError{What: "jwt", Part: "iss uuid", Err: err}
	}
	return chip, FormatUUID(u), nil
}

// CleanJWT makes a %JWT answer base64url-clean as the device library does: '+'→'-',
// '/'→'_', and everything from the first '=' of each part removed.
func CleanJWT(s string) string {
	parts := strings.Split(strings.Trim(strings.TrimSpace(s), `"`), ".")
	for i, p := range parts {
		p = strings.NewReplacer("+", "-", "/", "_").Replace(p)
		if j := strings.IndexByte(p, '='); j >= 0 {
			p = p[:j]
		}
		parts[i] = p
	}
	return strings.Join(parts, ".")
}
