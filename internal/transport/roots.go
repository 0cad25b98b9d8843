package transport

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// errNoCerts is returned for a CA file without a single PEM certificate.
var errNoCerts = errors.New("no PEM certificate found")

// LoadRoots reads a PEM file of trusted root certificates (the ca_file setting) into a new pool.
func LoadRoots(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("transport: read ca file: %w", err)
	}
	return ParseRoots(data, path)
}

// ParseRoots builds a pool from PEM data; name only labels the error.
func ParseRoots(pem []byte, name string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("transport: ca file %s: %w", name, errNoCerts)
	}
	return pool, nil
}
