package simcloud

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names inside Config.StateDir.
const (
	caFileName        = "ca.pem"
	caKeyFileName     = "ca-key.pem"
	serverFileName    = "server.pem"
	serverKeyFileName = "server-key.pem"
)

// authority is the simulator's CA: it signs the loopback server certificate and the client
// certificates of client-certificate jobs. Immutable after newAuthority.
type authority struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	caFile  string
	server  tls.Certificate
	now     func() time.Time
}

// newAuthority loads the CA from dir if both ca.pem and ca-key.pem exist there (so a client
// configured with the CA file keeps working across simulator restarts), otherwise generates
// and writes a new one. The server certificate is issued fresh every time.
func newAuthority(dir string, now func() time.Time) (*authority, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("simcloud: state dir: %w", err)
	}
	a := &authority{caFile: filepath.Join(dir, caFileName), now: now}
	if err := a.loadCA(dir); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if err := a.generateCA(dir); err != nil {
			return nil, err
		}
	}
	if err := a.issueServer(dir); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *authority) loadCA(dir string) error {
	certPEM, err := os.ReadFile(filepath.Join(dir, caFileName))
	if err != nil {
		return fmt.Errorf("simcloud: read ca: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, caKeyFileName))
	if err != nil {
		return fmt.Errorf("simcloud: read ca key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("simcloud: load ca from %s: %w", dir, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return fmt.Errorf("simcloud: load ca from %s: key is not ECDSA: %w", dir, ErrInvalid)
	}
	a.cert, a.key, a.certPEM = pair.Leaf, key, certPEM
	return nil
}

func (a *authority) generateCA(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("simcloud: ca key: %w", err)
	}
	now := a.now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "nrfcloudsim CA", Organization: []string{"provisiond simulator"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("simcloud: ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("simcloud: ca certificate: %w", err)
	}
	a.cert, a.key = cert, key
	a.certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("simcloud: ca key: %w", err)
	}
	if err := writeFile(filepath.Join(dir, caKeyFileName), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeFile(a.caFile, a.certPEM, 0o644)
}

// issueServer makes the loopback server certificate used by both HTTPS and DTLS.
func (a *authority) issueServer(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("simcloud: server key: %w", err)
	}
	now := a.now()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "localhost", Organization: []string{"provisiond simulator"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(5, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return fmt.Errorf("simcloud: server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("simcloud: server certificate: %w", err)
	}
	a.server = tls.Certificate{Certificate: [][]byte{der, a.cert.Raw}, PrivateKey: key, Leaf: leaf}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("simcloud: server key: %w", err)
	}
	if err := writeFile(filepath.Join(dir, serverKeyFileName), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, serverFileName), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// signCSR issues a client certificate for a device's CSR: the CSR's subject and public key,
// valid from an hour ago for ten years, for TLS client authentication.
func (a *authority) signCSR(csr *x509.CertificateRequest) (*x509.Certificate, []byte, error) {
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, fmt.Errorf("simcloud: csr signature: %w", err)
	}
	now := a.now()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      csr.Subject,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, csr.PublicKey, a.key)
	if err != nil {
		return nil, nil, fmt.Errorf("simcloud: sign csr: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("simcloud: sign csr: %w", err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func randomSerial() *big.Int {
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil { // crypto/rand does not fail on supported platforms
		panic(err)
	}
	return n.Add(n, big.NewInt(1))
}

// writeFile writes atomically (temp file + rename) so a reader never sees half a PEM.
func writeFile(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return fmt.Errorf("simcloud: write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("simcloud: write %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("simcloud: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("simcloud: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("simcloud: write %s: %w", path, err)
	}
	return nil
}
