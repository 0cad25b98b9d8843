package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// errAny marks a table row that expects some error, whichever it is.
var errAny = errors.New("any error")

var testUUID = [16]byte{0x50, 0x36, 0x31, 0x54, 0x39, 0x32, 0x48, 0x34, 0x80, 0x2b, 0x09, 0x08, 0x71, 0x83, 0x14, 0xdc}

func TestCOSERoundTrip(t *testing.T) {
	id, _ := GenerateKey()
	other, _ := GenerateKey()
	tests := []struct {
		name     string
		detached bool
		payload  []byte
	}{
		{"embedded", false, []byte("hello")},
		{"embedded empty", false, nil},
		{"detached", true, []byte("attestation message")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var msg []byte
			var err error
			if tt.detached {
				msg, err = SignCOSEDetached(id, KidIdentityKey, tt.payload)
			} else {
				msg, err = SignCOSE(id, KidIdentityKey, tt.payload)
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(msg, []byte{0xd2, 0x84, 0x43, 0xa1, 0x01, 0x26, 0xa1, 0x04, 0x41, 0x21}) {
				t.Fatalf("header bytes = %x, want d28443a10126a1044121 prefix (tag 18, {1:-7}, {4:h'21'})", msg[:10])
			}
			s, err := ParseCOSE(msg)
			if err != nil {
				t.Fatal(err)
			}
			if kid, ok := s.Kid(); !ok || kid != KidIdentityKey {
				t.Errorf("Kid() = %d, %v; want -2, true", kid, ok)
			}
			var detached []byte
			if tt.detached {
				if s.Payload != nil {
					t.Fatalf("Payload = %x, want nil (detached)", s.Payload)
				}
				detached = tt.payload
			}
			if err := s.Verify(&id.PublicKey, detached); err != nil {
				t.Fatalf("Verify() = %v", err)
			}
			if err := s.Verify(&other.PublicKey, detached); !errors.Is(err, ErrSignature) {
				t.Fatalf("Verify(other key) = %v, want ErrSignature", err)
			}
			if tt.detached {
				if err := s.Verify(&id.PublicKey, []byte("tampered")); !errors.Is(err, ErrSignature) {
					t.Fatalf("Verify(tampered content) = %v, want ErrSignature", err)
				}
			}
		})
	}
}

func TestParseCOSEMalformed(t *testing.T) {
	id, _ := GenerateKey()
	good, err := SignCOSE(id, KidIdentityKey, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"wrong tag", append([]byte{0xd1}, good[1:]...)},
		{"truncated", good[:len(good)-5]},
		{"not array", []byte{0xd2, 0xa0}},
		{"three elements", []byte{0xd2, 0x83, 0x40, 0xa0, 0x40}},
		{"alg es384", []byte{0xd2, 0x84, 0x43, 0xa1, 0x01, 0x38, 0x22, 0xa0, 0x40, 0x40}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseCOSE(tt.in); !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseCOSE() = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestTokenBuildVerify(t *testing.T) {
	id, _ := GenerateKey()
	other, _ := GenerateKey()
	want := Identity{MsgType: MsgTypeDeviceIdentity, DeviceUUID: testUUID, DeviceType: DeviceTypeNRF9161,
		FWUUID: [16]byte{1, 2, 3}, Nonce: [16]byte{9, 9, 9}}
	tok, err := BuildToken(id, want)
	if err != nil {
		t.Fatal(err)
	}
	attestPart, _, _ := strings.Cut(tok, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(attestPart)
	if !bytes.HasPrefix(raw, []byte{0xd9, 0xd9, 0xf7, 0x85, 0x01, 0x50}) {
		t.Errorf("attest part starts %x, want d9d9f7 85 01 50 (tag 55799, 5-array, msg 1, bstr16)", raw[:6])
	}
	if strings.ContainsAny(tok, "+/=") {
		t.Errorf("token %q is not unpadded base64url", tok)
	}
	got, err := VerifyToken(tok, &id.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("VerifyToken() = %+v, want %+v", got, want)
	}
	if u, err := DeviceUUID(tok); err != nil || u != "50363154-3932-4834-802b-0908718314dc" {
		t.Errorf("DeviceUUID() = %q, %v", u, err)
	}
	if _, err := VerifyToken(tok, &other.PublicKey); !errors.Is(err, ErrSignature) {
		t.Errorf("VerifyToken(other key) = %v, want ErrSignature", err)
	}
	// Flip one UUID bit: the structure still parses, the signature must not verify.
	raw[6] ^= 1
	forged := base64.RawURLEncoding.EncodeToString(raw) + tok[len(attestPart):]
	if _, err := VerifyToken(forged, &id.PublicKey); !errors.Is(err, ErrSignature) {
		t.Errorf("VerifyToken(forged) = %v, want ErrSignature", err)
	}
}

func TestKeygen(t *testing.T) {
	id, _ := GenerateKey()
	other, _ := GenerateKey()
	subj, err := ParseSubject("O=Example,C=no,CN=custom")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		format   int
		secTag   uint32
		subject  bool
		keyUsage string
		wantCN   string
	}{
		{"csr", KeygenCSR, 42, false, "", "50363154-3932-4834-802b-0908718314dc"},
		{"csr key usage", KeygenCSR, 16842753, false, "101010000", "50363154-3932-4834-802b-0908718314dc"},
		{"csr subject", KeygenCSR, 7, true, "", "custom"},
		{"public key", KeygenPublicKey, 16, false, "", ""},
		{"reserved tag", KeygenPublicKey, 2147483650, false, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, _ := GenerateKey()
			p := KeygenParams{Identity: id, DeviceUUID: testUUID, SecTag: tt.secTag, Format: tt.format, Key: key, KeyUsage: tt.keyUsage}
			if tt.subject {
				p.Subject = &subj
			}
			ans, err := BuildKeygen(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, in := range []string{ans, `"` + ans + `"`, "%KEYGEN: \"" + ans + "\"\r\nOK\r\n"} {
				der, format, err := ParseKeygen(in)
				if err != nil {
					t.Fatalf("ParseKeygen(%.20q) = %v", in, err)
				}
				if format != tt.format {
					t.Errorf("format = %d, want %d", format, tt.format)
				}
				derPart, _, _ := strings.Cut(ans, ".")
				if base64.RawURLEncoding.EncodeToString(der) != derPart {
					t.Errorf("der does not match the answer's first part")
				}
			}
			k, err := VerifyKeygen(ans, &id.PublicKey)
			if err != nil {
				t.Fatalf("VerifyKeygen() = %v", err)
			}
			if !k.PublicKey.Equal(&key.PublicKey) {
				t.Error("public key in answer is not the generated key")
			}
			if k.Payload.SecTag != tt.secTag || k.Payload.DeviceUUID != testUUID || k.Payload.Digest != sha256.Sum256(k.DER) {
				t.Errorf("payload = %+v", k.Payload)
			}
			if tt.format == KeygenCSR {
				if k.CSR.Subject.CommonName != tt.wantCN {
					t.Errorf("CN = %q, want %q", k.CSR.Subject.CommonName, tt.wantCN)
				}
				if k.Payload.PayloadID != PayloadIDCSR {
					t.Errorf("payload id = %d, want 9", k.Payload.PayloadID)
				}
			} else if k.Payload.PayloadID != PayloadIDPublicKey {
				t.Errorf("payload id = %d, want 8", k.Payload.PayloadID)
			}
			if _, err := VerifyKeygen(ans, &other.PublicKey); !errors.Is(err, ErrSignature) {
				t.Errorf("VerifyKeygen(other key) = %v, want ErrSignature", err)
			}
		})
	}
}

func TestKeygenTampered(t *testing.T) {
	id, _ := GenerateKey()
	k1, _ := GenerateKey()
	k2, _ := GenerateKey()
	a1, _ := BuildKeygen(KeygenParams{Identity: id, DeviceUUID: testUUID, SecTag: 1, Format: KeygenPublicKey, Key: k1})
	a2, _ := BuildKeygen(KeygenParams{Identity: id, DeviceUUID: testUUID, SecTag: 1, Format: KeygenPublicKey, Key: k2})
	der1, _, _ := strings.Cut(a1, ".")
	_, cose2, _ := strings.Cut(a2, ".")
	if _, err := VerifyKeygen(der1+"."+cose2, &id.PublicKey); !errors.Is(err, ErrDigest) {
		t.Fatalf("VerifyKeygen(swapped der) = %v, want ErrDigest", err)
	}
	if _, err := VerifyKeygen(der1, &id.PublicKey); !errors.Is(err, ErrMalformed) {
		t.Fatalf("VerifyKeygen(no cose) = %v, want ErrMalformed", err)
	}
	if _, f, err := ParseKeygen(der1); err != nil || f != KeygenPublicKey {
		t.Fatalf("ParseKeygen(no cose) = %d, %v; want 1, nil", f, err)
	}
}

func TestKeygenMalformed(t *testing.T) {
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"not base64", "!!!.AAAA"},
		{"not der", "AAAA.AAAA"},
		{"trailing dot", "MFkw."},
		{"three parts", "a.b.c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := ParseKeygen(tt.in); !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseKeygen(%q) = %v, want ErrMalformed", tt.in, err)
			}
		})
	}
}

// TestKeygenCSROpenSSL shows that the CSR inside a KEYGEN answer is a real PKCS#10 request
// that openssl accepts.
func TestKeygenCSROpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	id, _ := GenerateKey()
	key, _ := GenerateKey()
	ans, err := BuildKeygen(KeygenParams{Identity: id, DeviceUUID: testUUID, SecTag: 42, Format: KeygenCSR, Key: key, KeyUsage: "101010000"})
	if err != nil {
		t.Fatal(err)
	}
	der, _, err := ParseKeygen(ans)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "csr.der")
	if err := os.WriteFile(path, der, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(openssl, "req", "-verify", "-inform", "DER", "-in", path, "-noout", "-subject").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl req -verify: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "50363154-3932-4834-802b-0908718314dc") {
		t.Errorf("openssl subject output %q lacks the device UUID", out)
	}
}

func TestParseSubject(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantCN  string
		wantO   string
		wantErr bool
	}{
		{"full", "O=Nordic Semiconductor,L=Trondheim,C=no,CN=dev1", "dev1", "Nordic Semiconductor", false},
		{"cn only", "CN=x", "x", "", false},
		{"unknown key", "XX=1", "", "", true},
		{"no equals", "CN", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := ParseSubject(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseSubject() error = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			var o string
			if len(n.Organization) > 0 {
				o = n.Organization[0]
			}
			if n.CommonName != tt.wantCN || o != tt.wantO {
				t.Errorf("ParseSubject() = CN %q O %q, want %q %q", n.CommonName, o, tt.wantCN, tt.wantO)
			}
		})
	}
}

func TestJWT(t *testing.T) {
	id, _ := GenerateKey()
	other, _ := GenerateKey()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	const uuid = "50363154-3932-4834-802b-0908718314dc"
	const fw = "1aff3acb-f1a6-4764-a263-4c2646c1c654"
	tests := []struct {
		name     string
		p        JWTParams
		verifyAt time.Time
		key      *ecdsa.PublicKey
		wantErr  error
		wantExp  bool
	}{
		{"timed", JWTParams{Key: id, Chip: "nrf9161", DeviceUUID: uuid, FWUUID: fw, IssuedAt: now, ValidFor: 300 * time.Second}, now.Add(time.Minute), &id.PublicKey, nil, true},
		{"no time", JWTParams{Key: id, Chip: "nrf9161", DeviceUUID: uuid, FWUUID: fw}, now, &id.PublicKey, nil, false},
		{"expired", JWTParams{Key: id, Chip: "nrf9161", DeviceUUID: uuid, FWUUID: fw, IssuedAt: now, ValidFor: 300 * time.Second}, now.Add(time.Hour), &id.PublicKey, errAny, true},
		{"other key", JWTParams{Key: id, Chip: "nrf9161", DeviceUUID: uuid, FWUUID: fw}, now, &other.PublicKey, ErrSignature, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := SignJWT(tt.p)
			if err != nil {
				t.Fatal(err)
			}
			if strings.ContainsAny(tok, "+/=") {
				t.Errorf("token %q is not unpadded base64url", tok)
			}
			if CleanJWT(`"`+tok+`"`) != tok {
				t.Errorf("CleanJWT changed a clean token")
			}
			info, err := VerifyJWT(tok, tt.key, tt.verifyAt)
			switch {
			case errors.Is(tt.wantErr, errAny):
				if err == nil {
					t.Fatal("VerifyJWT() = nil, want an error")
				}
				return
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("VerifyJWT() = %v, want %v", err, tt.wantErr)
				}
				return
			case err != nil:
				t.Fatalf("VerifyJWT() = %v", err)
			}
			if info.Chip != "nrf9161" || info.DeviceUUID != uuid {
				t.Errorf("iss parsed as %q %q", info.Chip, info.DeviceUUID)
			}
			if !strings.HasPrefix(info.Claims.ID, "nrf9161."+fw+".") || len(info.Claims.ID) != len("nrf9161.")+36+1+32 {
				t.Errorf("jti = %q, want nrf9161.<fw uuid>.<32 hex>", info.Claims.ID)
			}
			if (info.Claims.ExpiresAt != nil) != tt.wantExp || (info.Claims.IssuedAt != nil) != tt.wantExp {
				t.Errorf("exp/iat present = %v/%v, want %v", info.Claims.ExpiresAt != nil, info.Claims.IssuedAt != nil, tt.wantExp)
			}
		})
	}
}

func TestCleanJWT(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"std alphabet", `"ab+/==.cd=.ef"`, "ab-_.cd.ef"},
		{"clean", "a.b.c", "a.b.c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CleanJWT(tt.in); got != tt.want {
				t.Errorf("CleanJWT(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "identity.pem")
	k1, created, err := LoadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("LoadOrCreateKey(new) = %v, created %v", err, created)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %o, want 600", st.Mode().Perm())
	}
	k2, created, err := LoadOrCreateKey(path)
	if err != nil || created {
		t.Fatalf("LoadOrCreateKey(existing) = %v, created %v", err, created)
	}
	if !k1.Equal(k2) {
		t.Error("reloaded key differs")
	}
	pubPEM, err := MarshalPublicKeyPEM(&k1.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKeyPEM(pubPEM)
	if err != nil || !pub.Equal(&k1.PublicKey) {
		t.Fatalf("ParsePublicKeyPEM = %v", err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k1)
	pk8 := "-----BEGIN PRIVATE KEY-----\n" + base64.StdEncoding.EncodeToString(der) + "\n-----END PRIVATE KEY-----\n"
	if k3, err := ParsePrivateKeyPEM([]byte(pk8)); err != nil || !k3.Equal(k1) {
		t.Errorf("ParsePrivateKeyPEM(pkcs8) = %v", err)
	}
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(bad); !errors.Is(err, ErrMalformed) {
		t.Errorf("LoadOrCreateKey(junk) = %v, want ErrMalformed", err)
	}
}
