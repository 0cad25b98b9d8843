package attest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// GenerateKey returns a new ECDSA P-256 key, the only curve the nRF91 uses.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("attest: generate key: %w", err)
	}
	return k, nil
}

// MarshalPrivateKeyPEM encodes key as a SEC 1 "EC PRIVATE KEY" PEM block.
func MarshalPrivateKeyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("attest: marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// ParsePrivateKeyPEM decodes the first PEM block of b as a P-256 key, SEC 1
// ("EC PRIVATE KEY") or PKCS #8 ("PRIVATE KEY").
func ParsePrivateKeyPEM(b []byte) (*ecdsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, &FormatError{What: "private key", Part: "pem"}
	}
	var key any
	var err error
	switch blk.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(blk.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	default:
		return nil, &FormatError{What: "private key", Part: fmt.Sprintf("pem type %q", blk.Type)}
	}
	if err != nil {
		return nil, &FormatError{What: "private key", Part: "der", Err: err}
	}
	k, ok := key.(*ecdsa.PrivateKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("attest: private key: %w", ErrKey)
	}
	return k, nil
}

// MarshalPublicKeyPEM encodes pub as a "PUBLIC KEY" (SubjectPublicKeyInfo) PEM block.
func MarshalPublicKeyPEM(pub *ecdsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("attest: marshal public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePublicKeyPEM decodes a "PUBLIC KEY" PEM block holding a P-256 key.
func ParsePublicKeyPEM(b []byte) (*ecdsa.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, &FormatError{What: "public key", Part: "pem (want PUBLIC KEY)"}
	}
	pk, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, &FormatError{What: "public key", Part: "der", Err: err}
	}
	k, ok := pk.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("attest: public key: %w", ErrKey)
	}
	return k, nil
}

// LoadOrCreateKey reads a PEM private key from path, or, when the file does not exist,
// generates one and writes it there with mode 0600 (atomically: temp file, sync, rename).
func LoadOrCreateKey(path string) (key *ecdsa.PrivateKey, created bool, err error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		k, err := ParsePrivateKeyPEM(b)
		if err != nil {
			return nil, false, fmt.Errorf("attest: load %s: %w", path, err)
		}
		return k, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("attest: load %s: %w", path, err)
	}
	if key, err = GenerateKey(); err != nil {
		return nil, false, err
	}
	p, err := MarshalPrivateKeyPEM(key)
	if err != nil {
		return nil, false, err
	}
	if err := WriteFileAtomic(path, p, 0o600); err != nil {
		return nil, false, err
	}
	return key, true, nil
}

// WriteFileAtomic writes data to path through a temp file in the same folder, so a reader
// never sees a half-written key.
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("attest: write %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		_ = f.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("attest: write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("attest: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("attest: write %s: %w", path, err)
	}
	return nil
}
