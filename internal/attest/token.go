// Package attest builds and parses the nRF91 identity formats: attestation tokens
// (%ATTESTTOKEN), KEYGEN answers (%KEYGEN), their COSE_Sign1 (ES256) envelopes and the
// modem's JWT claims. It is shared by the simulated modem, the simulated service and the
// AT client. All functions are safe for concurrent use; none keep state.
package attest

import (
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// MsgTypeDeviceIdentity is the attestation message type "device identity message v1".
const MsgTypeDeviceIdentity = 1

// Device types carried in the attestation message (docs/modem.md §1.11).
const (
	DeviceTypeNRF9160 = 3 // 1–3 are nRF9160 variants; 3 is the newest
	DeviceTypeNRF9161 = 4
	DeviceTypeNRF9131 = 5
	DeviceTypeNRF9151 = 6
)

// Identity is the decoded attestation message of an attestation token.
type Identity struct {
	MsgType    int
	DeviceUUID [16]byte
	DeviceType int
	FWUUID     [16]byte
	Nonce      [16]byte
}

// attestMsg is the CBOR array [msg_type, device_uuid, device_type, fw_uuid, nonce].
type attestMsg struct {
	_          struct{} `cbor:",toarray"`
	MsgType    int
	DeviceUUID []byte
	DeviceType int
	FWUUID     []byte
	Nonce      []byte
}

// DeviceUUID returns the device UUID (lower-case 8-4-4-4-12 hex) carried in an
// attestation token "<attest>.<cose>" whose surrounding quotes were already removed.
// The COSE part is not verified; a malformed token gives a *FormatError.
func DeviceUUID(token string) (string, error) {
	id, err := ParseToken(token)
	if err != nil {
		return "", err
	}
	return FormatUUID(id.DeviceUUID), nil
}

// ParseToken decodes the attestation message of "<attest>.<cose>" without verifying
// the COSE signature. The COSE part must be present and valid base64url.
func ParseToken(token string) (Identity, error) {
	const what = "attestation token"
	attestPart, cosePart, ok := strings.Cut(strings.TrimSpace(token), ".")
	if !ok || attestPart == "" || cosePart == "" || strings.Contains(cosePart, ".") {
		return Identity{}, &FormatError{What: what, Part: "structure (want <attest>.<cose>)"}
	}
	raw, err := decodeB64URL(attestPart)
	if err != nil {
		return Identity{}, &FormatError{What: what, Part: "attest part", Err: err}
	}
	if _, err := decodeB64URL(cosePart); err != nil {
		return Identity{}, &FormatError{What: what, Part: "cose part", Err: err}
	}
	var m attestMsg
	if err := decMode().Unmarshal(stripSelfDescribed(raw), &m); err != nil {
		return Identity{}, &FormatError{What: what, Part: "attest part", Err: err}
	}
	var id Identity
	id.MsgType, id.DeviceType = m.MsgType, m.DeviceType
	for _, f := range []struct {
		name string
		src  []byte
		dst  *[16]byte
	}{{"device uuid", m.DeviceUUID, &id.DeviceUUID}, {"firmware uuid", m.FWUUID, &id.FWUUID}, {"nonce", m.Nonce, &id.Nonce}} {
		if len(f.src) != 16 {
			return Identity{}, &FormatError{What: what, Part: f.name + " (want 16 bytes)"}
		}
		copy(f.dst[:], f.src)
	}
	return id, nil
}

// BuildToken returns the attestation token "<attest>.<cose>" for id, signed by the device
// identity key. The attestation message is wrapped in CBOR tag 55799 like the modem's, and
// the COSE_Sign1 has a detached payload: its signature covers the attestation message bytes.
func BuildToken(identity *ecdsa.PrivateKey, id Identity) (string, error) {
	msg, err := cbor.Marshal(attestMsg{
		MsgType:    id.MsgType,
		DeviceUUID: id.DeviceUUID[:],
		DeviceType: id.DeviceType,
		FWUUID:     id.FWUUID[:],
		Nonce:      id.Nonce[:],
	})
	if err != nil {
		return "", fmt.Errorf("attest: encode attestation message: %w", err)
	}
	msg = wrapSelfDescribed(msg)
	cose, err := SignCOSEDetached(identity, KidIdentityKey, msg)
	if err != nil {
		return "", err
	}
	return b64url(msg) + "." + b64url(cose), nil
}

// VerifyToken parses an attestation token and verifies its COSE signature against the
// device identity public key.
func VerifyToken(token string, identity *ecdsa.PublicKey) (Identity, error) {
	id, err := ParseToken(token)
	if err != nil {
		return Identity{}, err
	}
	attestPart, cosePart, _ := strings.Cut(strings.TrimSpace(token), ".")
	msg, _ := decodeB64URL(attestPart) // both parts decoded fine in ParseToken
	raw, _ := decodeB64URL(cosePart)
	s, err := ParseCOSE(raw)
	if err != nil {
		return Identity{}, fmt.Errorf("attest: attestation token: %w", err)
	}
	if err := s.Verify(identity, msg); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// FormatUUID renders 16 bytes as lower-case hex in 8-4-4-4-12 groups.
func FormatUUID(u [16]byte) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// ParseUUID parses the 8-4-4-4-12 text form (either case) into 16 bytes.
func ParseUUID(s string) ([16]byte, error) {
	var u [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, &FormatError{What: "uuid", Part: "text form (want 8-4-4-4-12 hex)"}
	}
	b, err := hex.DecodeString(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36])
	if err != nil {
		return u, &FormatError{What: "uuid", Part: "hex", Err: err}
	}
	copy(u[:], b)
	return u, nil
}

// decodeB64URL accepts base64url with or without '=' padding. Whitespace is not allowed.
func decodeB64URL(s string) ([]byte, error) {
	return base64.RawURLEncoding.Strict().DecodeString(strings.TrimRight(s, "="))
}

// b64url is the unpadded base64url the modem writes.
func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// decMode rejects duplicate map keys; the small limits keep hostile input cheap.
func decMode() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  8,
		MaxArrayElements: 64,
		MaxMapPairs:      16,
	}.DecMode()
	if err != nil {
		panic("attest: cbor decode options: " + err.Error()) // constant options; cannot fail
	}
	return dm
}
