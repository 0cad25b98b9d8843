package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// KEYGEN answer formats (the <format> argument of %KEYGEN).
const (
	KeygenCSR       = 0
	KeygenPublicKey = 1
)

// COSE payload ids of KEYGEN answers.
const (
	PayloadIDPublicKey = 8
	PayloadIDCSR       = 9
)

// KeygenParams describes one %KEYGEN answer to build.
type KeygenParams struct {
	// Identity is the device identity key; it signs the COSE part.
	Identity *ecdsa.PrivateKey
	// DeviceUUID goes into the COSE payload and, by default, the CSR subject CN.
	DeviceUUID [16]byte
	// SecTag is the security tag the key was generated in.
	SecTag uint32
	// Format is KeygenCSR or KeygenPublicKey.
	Format int
	// Key is the newly generated key the answer describes.
	Key *ecdsa.PrivateKey
	// Subject overrides the CSR subject; nil means CN = device UUID.
	Subject *pkix.Name
	// KeyUsage is the modem's nine-character bit string ("101010000"); empty adds none.
	KeyUsage string
	// Nonce is the COSE payload nonce; zero means random.
	Nonce [16]byte
}

// KeygenPayload is the decoded COSE payload of a KEYGEN answer.
type KeygenPayload struct {
	PayloadID  int
	DeviceUUID [16]byte
	SecTag     uint32
	Digest     [32]byte
	Nonce      [16]byte
}

// Keygen is a decoded %KEYGEN answer.
type Keygen struct {
	// DER is the CSR (Format KeygenCSR) or SubjectPublicKeyInfo (Format KeygenPublicKey).
	DER    []byte
	Format int
	// CSR is set for Format KeygenCSR.
	CSR *x509.CertificateRequest
	// PublicKey is the generated key's public half (from the CSR or the SPKI).
	PublicKey *ecdsa.PublicKey
	// COSE and Payload are nil when the answer had no COSE part.
	COSE    *Sign1
	Payload *KeygenPayload
}

type keygenPayloadWire struct {
	_          struct{} `cbor:",toarray"`
	PayloadID  int
	DeviceUUID []byte
	SecTag     []byte // bstr holding CBOR(sec_tag)
	Digest     []byte
	Nonce      []byte
}

// BuildKeygen returns the quoted body of a %KEYGEN answer, "<b64url DER>.<b64url COSE>".
func BuildKeygen(p KeygenParams) (string, error) {
	if p.Key == nil {
		return "", fmt.Errorf("attest: keygen: %w", ErrKey)
	}
	var der []byte
	var id int
	switch p.Format {
	case KeygenCSR:
		subj := pkix.Name{CommonName: FormatUUID(p.DeviceUUID)}
		if p.Subject != nil {
			subj = *p.Subject
		}
		tmpl := &x509.CertificateRequest{Subject: subj, SignatureAlgorithm: x509.ECDSAWithSHA256}
		if p.KeyUsage != "" {
			ext, err := keyUsageExtension(p.KeyUsage)
			if err != nil {
				return "", err
			}
			tmpl.ExtraExtensions = []pkix.Extension{ext}
		}
		var err error
		if der, err = x509.CreateCertificateRequest(rand.Reader, tmpl, p.Key); err != nil {
			return "", fmt.Errorf("attest: keygen csr: %w", err)
		}
		id = PayloadIDCSR
	case KeygenPublicKey:
		var err error
		if der, err = x509.MarshalPKIXPublicKey(&p.Key.PublicKey); err != nil {
			return "", fmt.Errorf("attest: keygen public key: %w", err)
		}
		id = PayloadIDPublicKey
	default:
		return "", fmt.Errorf("attest: keygen: unknown format %d", p.Format)
	}
	nonce := p.Nonce
	if nonce == ([16]byte{}) {
		if _, err := rand.Read(nonce[:]); err != nil {
			return "", fmt.Errorf("attest: keygen nonce: %w", err)
		}
	}
	// A sec tag above 2^31-1 is written as the negative int32 it reinterprets to.
	tag, err := cbor.Marshal(int64(int32(p.SecTag)))
	if err != nil {
		return "", fmt.Errorf("attest: keygen sec tag: %w", err)
	}
	digest := sha256.Sum256(der)
	payload, err := cbor.Marshal(keygenPayloadWire{
		PayloadID: id, DeviceUUID: p.DeviceUUID[:], SecTag: tag, Digest: digest[:], Nonce: nonce[:],
	})
	if err != nil {
		return "", fmt.Errorf("attest: keygen payload: %w", err)
	}
	cose, err := SignCOSE(p.Identity, KidIdentityKey, wrapSelfDescribed(payload))
	if err != nil {
		return "", err
	}
	return b64url(der) + "." + b64url(cose), nil
}

// keyUsageExtension turns the modem's bit string ("101010000", bit 0 = digitalSignature
// first) into an X.509 keyUsage extension.
func keyUsageExtension(bits string) (pkix.Extension, error) {
	if len(bits) != 9 || strings.Trim(bits, "01") != "" {
		return pkix.Extension{}, fmt.Errorf("attest: keygen key usage %q: want nine 0/1 characters", bits)
	}
	var bs asn1.BitString
	bs.Bytes = make([]byte, 2)
	for i, c := range bits {
		if c == '1' {
			bs.Bytes[i/8] |= 0x80 >> (i % 8)
			bs.BitLength = i + 1
		}
	}
	bs.Bytes = bs.Bytes[:(bs.BitLength+7)/8]
	v, err := asn1.Marshal(bs)
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("attest: keygen key usage: %w", err)
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 15}, Critical: false, Value: v}, nil
}

// ParseSubject parses a %KEYGEN <attributes> subject string such as
// "O=Nordic Semiconductor,L=Trondheim,C=no,CN=dev1". Known keys: C, ST, L, O, OU, CN.
func ParseSubject(attributes string) (pkix.Name, error) {
	var n pkix.Name
	for part := range strings.SplitSeq(attributes, ",") {
		k, v, ok := strings.Cut(part, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return pkix.Name{}, &FormatError{What: "subject", Part: fmt.Sprintf("attribute %q", part)}
		}
		switch strings.ToUpper(k) {
		case "C":
			n.Country = append(n.Country, v)
		case "ST":
			n.Province = append(n.Province, v)
		case "L":
			n.Locality = append(n.Locality, v)
		case "O":
			n.Organization = append(n.Organization, v)
		case "OU":
			n.OrganizationalUnit = append(n.OrganizationalUnit, v)
		case "CN":
			n.CommonName = v
		default:
			return pkix.Name{}, &FormatError{What: "subject", Part: fmt.Sprintf("attribute key %q", k)}
		}
	}
	return n, nil
}

// ParseKeygen extracts the DER body and its format (KeygenCSR or KeygenPublicKey) from a
// KEYGEN answer. It accepts the bare "<DER>.<COSE>", the same in double quotes, a whole
// `%KEYGEN: "…"` response line or response text, and an answer without its COSE part. The
// COSE is parsed but not verified; use VerifyKeygen for that.
func ParseKeygen(s string) (der []byte, format int, err error) {
	k, err := DecodeKeygen(s)
	if err != nil {
		return nil, 0, err
	}
	return k.DER, k.Format, nil
}

// DecodeKeygen is ParseKeygen returning every decoded part.
func DecodeKeygen(s string) (*Keygen, error) {
	const what = "keygen answer"
	body := keygenBody(s)
	derPart, cosePart, hasCOSE := strings.Cut(body, ".")
	if derPart == "" || (hasCOSE && (cosePart == "" || strings.Contains(cosePart, "."))) {
		return nil, &FormatError{What: what, Part: "structure (want <der>.<cose>)"}
	}
	der, err := decodeB64URL(derPart)
	if err != nil {
		return nil, &FormatError{What: what, Part: "der part", Err: err}
	}
	k := &Keygen{DER: der}
	if csr, err := x509.ParseCertificateRequest(der); err == nil {
		pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
		if !ok {
			return nil, &FormatError{What: what, Part: "csr public key (want ecdsa)"}
		}
		k.Format, k.CSR, k.PublicKey = KeygenCSR, csr, pub
	} else if pk, err2 := x509.ParsePKIXPublicKey(der); err2 == nil {
		pub, ok := pk.(*ecdsa.PublicKey)
		if !ok {
			return nil, &FormatError{What: what, Part: "public key (want ecdsa)"}
		}
		k.Format, k.PublicKey = KeygenPublicKey, pub
	} else {
		return nil, &FormatError{What: what, Part: "der part (neither csr nor public key)", Err: err}
	}
	if !hasCOSE {
		return k, nil
	}
	raw, err := decodeB64URL(cosePart)
	if err != nil {
		return nil, &FormatError{What: what, Part: "cose part", Err: err}
	}
	if k.COSE, err = ParseCOSE(raw); err != nil {
		return nil, fmt.Errorf("attest: keygen answer: %w", err)
	}
	if k.COSE.Payload == nil {
		return nil, &FormatError{What: what, Part: "cose payload (missing)"}
	}
	var w keygenPayloadWire
	if err := decMode().Unmarshal(stripSelfDescribed(k.COSE.Payload), &w); err != nil {
		return nil, &FormatError{What: what, Part: "cose payload", Err: err}
	}
	var tag int64
	if err := decMode().Unmarshal(w.SecTag, &tag); err != nil || tag < -1<<31 || tag > 1<<32-1 {
		return nil, &FormatError{What: what, Part: "cose payload sec tag", Err: err}
	}
	p := &KeygenPayload{PayloadID: w.PayloadID, SecTag: uint32(tag)}
	for _, f := range []struct {
		name string
		src  []byte
		dst  []byte
	}{{"device uuid", w.DeviceUUID, p.DeviceUUID[:]}, {"digest", w.Digest, p.Digest[:]}, {"nonce", w.Nonce, p.Nonce[:]}} {
		if len(f.src) != len(f.dst) {
			return nil, &FormatError{What: what, Part: fmt.Sprintf("cose payload %s (want %d bytes)", f.name, len(f.dst))}
		}
		copy(f.dst, f.src)
	}
	wantID := PayloadIDCSR
	if k.Format == KeygenPublicKey {
		wantID = PayloadIDPublicKey
	}
	if p.PayloadID != wantID {
		return nil, &FormatError{What: what, Part: fmt.Sprintf("cose payload id %d (want %d for this der)", p.PayloadID, wantID)}
	}
	k.Payload = p
	return k, nil
}

// VerifyKeygen decodes a KEYGEN answer and checks everything a service should: the COSE part
// is present and signed by identity, its digest matches the DER body, and a CSR's own
// signature is valid.
func VerifyKeygen(s string, identity *ecdsa.PublicKey) (*Keygen, error) {
	k, err := DecodeKeygen(s)
	if err != nil {
		return nil, err
	}
	if k.COSE == nil {
		return nil, &FormatError{What: "keygen answer", Part: "cose part (missing)"}
	}
	if err := k.COSE.Verify(identity, nil); err != nil {
		return nil, err
	}
	if d := sha256.Sum256(k.DER); !bytes.Equal(d[:], k.Payload.Digest[:]) {
		return nil, fmt.Errorf("attest: keygen answer: %w", ErrDigest)
	}
	if k.CSR != nil {
		if err := k.CSR.CheckSignature(); err != nil {
			return nil, fmt.Errorf("attest: keygen csr: %w: %w", ErrSignature, err)
		}
	}
	return k, nil
}

// keygenBody reduces a response, a response line or a quoted answer to "<DER>.<COSE>".
func keygenBody(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.Index(s, "%KEYGEN:"); i >= 0 {
		s = strings.TrimSpace(s[i+len("%KEYGEN:"):])
		if strings.HasPrefix(s, `"`) {
			if end := strings.IndexByte(s[1:], '"'); end >= 0 {
				return s[1 : 1+end]
			}
		}
		if nl := strings.IndexAny(s, "\r\n"); nl >= 0 {
			s = s[:nl]
		}
	}
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	return s
}
