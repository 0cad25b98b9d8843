package attest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/golang-jwt/jwt/v5"
)

func TestRefusals(t *testing.T) {
	id, _ := GenerateKey()
	key, _ := GenerateKey()
	untagged, err := cbor.Marshal([]any{[]byte{0xa1, 0x01, 0x26}, map[int]any{}, []byte("p"), make([]byte, 64)})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		err  func() error
		want error
	}{
		{"cose nil key", func() error { _, err := SignCOSE(nil, KidIdentityKey, nil); return err }, ErrKey},
		{"jwt nil key", func() error { _, err := SignJWT(JWTParams{}); return err }, ErrKey},
		{"keygen nil key", func() error { _, err := BuildKeygen(KeygenParams{Identity: id}); return err }, ErrKey},
		{"keygen bad format", func() error {
			_, err := BuildKeygen(KeygenParams{Identity: id, Key: key, Format: 7})
			return err
		}, errAny},
		{"keygen bad key usage", func() error {
			_, err := BuildKeygen(KeygenParams{Identity: id, Key: key, KeyUsage: "12"})
			return err
		}, errAny},
		{"untagged cose without kid", func() error {
			s, err := ParseCOSE(untagged)
			if err != nil {
				return err
			}
			if _, ok := s.Kid(); ok {
				return errors.New("kid found")
			}
			return s.Verify(&id.PublicKey, nil)
		}, ErrSignature},
		{"detached cose without content", func() error {
			b, _ := SignCOSEDetached(id, KidIdentityKey, []byte("x"))
			s, err := ParseCOSE(b)
			if err != nil {
				return err
			}
			return s.Verify(&id.PublicKey, nil)
		}, ErrMalformed},
		{"public key pem of wrong type", func() error {
			p, _ := MarshalPrivateKeyPEM(key)
			_, err := ParsePublicKeyPEM(p)
			return err
		}, ErrMalformed},
		{"private key pem of wrong type", func() error {
			p, _ := MarshalPublicKeyPEM(&key.PublicKey)
			_, err := ParsePrivateKeyPEM(p)
			return err
		}, ErrMalformed},
		{"jwt iss without uuid", func() error {
			tok, _ := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.RegisteredClaims{Issuer: "nrf9161"}).SignedString(id)
			_, err := VerifyJWT(tok, &id.PublicKey, time.Now())
			return err
		}, ErrMalformed},
		{"jwt hs256 refused", func() error {
			tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{}).SignedString([]byte("k"))
			_, err := VerifyJWT(tok, &id.PublicKey, time.Now())
			return err
		}, errAny},
		{"write into missing folder", func() error { return WriteFileAtomic(t.TempDir()+"/no/such", nil, 0o600) }, errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.err()
			if errors.Is(tt.want, errAny) {
				if err == nil {
					t.Fatal("got nil error")
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestFormatErrorText(t *testing.T) {
	err := &FormatError{What: "keygen answer", Part: "der part", Err: errors.New("bad")}
	if got := err.Error(); got != "attest: keygen answer: malformed der part: bad" {
		t.Errorf("Error() = %q", got)
	}
	if !strings.Contains((&FormatError{What: "x", Part: "y"}).Error(), "malformed y") {
		t.Error("Error() without cause")
	}
	if errors.Unwrap(err).Error() != "bad" {
		t.Error("Unwrap lost the cause")
	}
}
