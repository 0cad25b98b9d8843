package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"math/big"

	"github.com/fxamacker/cbor/v2"
)

// COSE constants used by the nRF91 (RFC 9052 / 9053).
const (
	// AlgES256 is the COSE algorithm id of ECDSA P-256 with SHA-256.
	AlgES256 = -7
	// KidIdentityKey is the key id the modem writes for its device identity key.
	KidIdentityKey = -2

	coseTagSign1  = 18
	selfDescribed = 55799 // RFC 8949 §3.4.6; the modem wraps its CBOR messages in it

	headerAlg = 1
	headerKid = 4
)

// Sign1 is a decoded COSE_Sign1 message (tag 18).
type Sign1 struct {
	// Protected is the serialized protected header (a CBOR map inside a byte string).
	Protected []byte
	// Unprotected maps header labels to byte strings that hold CBOR, as the modem writes them.
	Unprotected map[int64][]byte
	// Payload is the embedded payload; nil when the payload is detached (CBOR null).
	Payload []byte
	// Signature is r‖s, 64 bytes for ES256.
	Signature []byte
}

type sign1Wire struct {
	_           struct{} `cbor:",toarray"`
	Protected   []byte
	Unprotected map[int64]cbor.RawMessage
	Payload     cbor.RawMessage
	Signature   []byte
}

// SignCOSE builds a tagged COSE_Sign1 with protected header {1: -7}, unprotected header
// {4: bstr(CBOR(kid))}, the payload embedded, signed with key (ES256).
func SignCOSE(key *ecdsa.PrivateKey, kid int64, payload []byte) ([]byte, error) {
	if payload == nil {
		payload = []byte{}
	}
	return signCOSE(key, kid, payload, payload)
}

// SignCOSEDetached builds a COSE_Sign1 whose payload field is nil and whose signature covers
// content, the form the modem uses for the COSE part of an attestation token.
func SignCOSEDetached(key *ecdsa.PrivateKey, kid int64, content []byte) ([]byte, error) {
	return signCOSE(key, kid, nil, content)
}

func signCOSE(key *ecdsa.PrivateKey, kid int64, embedded, signed []byte) ([]byte, error) {
	if key == nil || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("attest: cose sign: %w", ErrKey)
	}
	prot, err := cbor.Marshal(map[int64]int64{headerAlg: AlgES256})
	if err != nil {
		return nil, fmt.Errorf("attest: cose protected header: %w", err)
	}
	kidCBOR, err := cbor.Marshal(kid)
	if err != nil {
		return nil, fmt.Errorf("attest: cose kid: %w", err)
	}
	tbs, err := sigStructure(prot, signed)
	if err != nil {
		return nil, err
	}
	sig, err := signRS(key, tbs)
	if err != nil {
		return nil, fmt.Errorf("attest: cose sign: %w", err)
	}
	var payload any // nil encodes as CBOR null: detached
	if embedded != nil {
		payload = embedded
	}
	msg := cbor.Tag{Number: coseTagSign1, Content: []any{prot, map[int64][]byte{headerKid: kidCBOR}, payload, sig}}
	out, err := cbor.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("attest: cose encode: %w", err)
	}
	return out, nil
}

// ParseCOSE decodes a COSE_Sign1, tagged (18) or untagged. It checks the structure only;
// call Verify for the signature.
func ParseCOSE(b []byte) (*Sign1, error) {
	const what = "cose"
	dm := decMode()
	body := b
	var tag cbor.RawTag
	if len(b) > 0 && b[0]>>5 == 6 { // major type 6: a tag
		if err := dm.Unmarshal(b, &tag); err != nil {
			return nil, &FormatError{What: what, Part: "tag", Err: err}
		}
		if tag.Number != coseTagSign1 {
			return nil, &FormatError{What: what, Part: fmt.Sprintf("tag %d (want 18)", tag.Number)}
		}
		body = tag.Content
	}
	var w sign1Wire
	if err := dm.Unmarshal(body, &w); err != nil {
		return nil, &FormatError{What: what, Part: "structure", Err: err}
	}
	s := &Sign1{Protected: w.Protected, Signature: w.Signature, Unprotected: map[int64][]byte{}}
	for k, v := range w.Unprotected {
		var hv []byte
		if err := dm.Unmarshal(v, &hv); err != nil {
			return nil, &FormatError{What: what, Part: fmt.Sprintf("unprotected header %d", k), Err: err}
		}
		s.Unprotected[k] = hv
	}
	switch {
	case len(w.Payload) == 0:
		return nil, &FormatError{What: what, Part: "payload"}
	case bytes.Equal(w.Payload, []byte{0xf6}): // null: detached
	default:
		if err := dm.Unmarshal(w.Payload, &s.Payload); err != nil {
			return nil, &FormatError{What: what, Part: "payload", Err: err}
		}
		if s.Payload == nil {
			s.Payload = []byte{}
		}
	}
	var hdr map[int64]int64
	if err := dm.Unmarshal(s.Protected, &hdr); err != nil {
		return nil, &FormatError{What: what, Part: "protected header", Err: err}
	}
	if alg, ok := hdr[headerAlg]; !ok || alg != AlgES256 {
		return nil, &FormatError{What: what, Part: "protected header alg (want -7 ES256)"}
	}
	if len(s.Signature) != 64 {
		return nil, &FormatError{What: what, Part: fmt.Sprintf("signature length %d (want 64)", len(s.Signature))}
	}
	return s, nil
}

// Kid returns the key id from the unprotected header, if present and an integer.
func (s *Sign1) Kid() (int64, bool) {
	raw, ok := s.Unprotected[headerKid]
	if !ok {
		return 0, false
	}
	var kid int64
	if err := decMode().Unmarshal(raw, &kid); err != nil {
		return 0, false
	}
	return kid, true
}

// Verify checks the ES256 signature against pub. For a detached payload the caller passes
// the signed content in detached; for an embedded payload detached must be nil.
func (s *Sign1) Verify(pub *ecdsa.PublicKey, detached []byte) error {
	content := s.Payload
	if content == nil {
		content = detached
	}
	if content == nil {
		return fmt.Errorf("attest: cose verify: %w", &FormatError{What: "cose", Part: "payload (detached, none given)"})
	}
	tbs, err := sigStructure(s.Protected, content)
	if err != nil {
		return err
	}
	if !verifyRS(pub, tbs, s.Signature) {
		return fmt.Errorf("attest: cose verify: %w", ErrSignature)
	}
	return nil
}

// sigStructure is the COSE Sig_structure ["Signature1", protected, external_aad h”, payload].
func sigStructure(protected, payload []byte) ([]byte, error) {
	b, err := cbor.Marshal([]any{"Signature1", protected, []byte{}, payload})
	if err != nil {
		return nil, fmt.Errorf("attest: cose sig_structure: %w", err)
	}
	return b, nil
}

// signRS signs sha256(msg) and returns the fixed-width r‖s form COSE and JWS use.
func signRS(key *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	h := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, key, h[:])
	if err != nil {
		return nil, err
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out, nil
}

func verifyRS(pub *ecdsa.PublicKey, msg, sig []byte) bool {
	if pub == nil || len(sig) != 64 {
		return false
	}
	h := sha256.Sum256(msg)
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, h[:], r, s)
}

// wrapSelfDescribed prefixes CBOR with tag 55799, as the modem does for its messages.
func wrapSelfDescribed(b []byte) []byte {
	return append([]byte{0xd9, 0xd9, 0xf7}, b...)
}

// stripSelfDescribed removes a leading tag 55799, which carries no meaning.
func stripSelfDescribed(b []byte) []byte {
	if len(b) >= 3 && b[0] == 0xd9 && b[1] == 0xd9 && b[2] == 0xf7 {
		return b[3:]
	}
	return b
}
