package rootca

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"testing"
)

// The fingerprints are the ones published with the certificates (shared certs README); a
// changed or truncated copy fails here.
func TestRoots(t *testing.T) {
	tests := []struct {
		transport string
		sha256    string
		subject   string
	}{
		{"http", "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e", "CN=Amazon Root CA 1,O=Amazon,C=US"},
		{"coap", "40471ddd6e21ba63ba94c6f3a6df59c833b51b2e63bb7217f5529bd713435f52", "CN=nRF Cloud"},
	}
	for _, tt := range tests {
		t.Run(tt.transport, func(t *testing.T) {
			p, err := ForTransport(tt.transport)
			if err != nil {
				t.Fatal(err)
			}
			block, rest := pem.Decode([]byte(p))
			if block == nil || block.Type != "CERTIFICATE" || len(rest) > 0 && string(rest) != "\n" {
				t.Fatalf("not exactly one PEM certificate: %q", p)
			}
			sum := sha256.Sum256(block.Bytes)
			if got := hex.EncodeToString(sum[:]); got != tt.sha256 {
				t.Errorf("sha256 %s, want %s", got, tt.sha256)
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if !cert.IsCA || cert.Subject.String() != tt.subject {
				t.Errorf("subject %q CA=%v, want %q CA", cert.Subject, cert.IsCA, tt.subject)
			}
		})
	}
	if _, err := ForTransport("mqtt"); err == nil {
		t.Error("unknown transport accepted")
	}
}
