package logging

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"unicode/utf8"

	"go.uber.org/zap"
)

// secretPrefixMin is the shortest secret whose first characters are shown. A JWT or an
// attestation token starts with a fixed header, so its first six characters say which kind
// of value it is and nothing secret; on a short value they would give away too much.
const secretPrefixMin = 24

// Secret returns a field that identifies value without revealing it: its first six characters
// (only for values of 24 bytes or more), the first 8 hex digits of its SHA-256 and its length,
// e.g. "eyJhbG…sha256:1f0c4ad2 len=412". Two log lines naming the same token show the same
// fingerprint, which is what debugging needs. Use it for the JWT, attestation tokens and any
// key material.
func Secret(key, value string) zap.Field {
	return zap.String(key, Fingerprint(value))
}

// Fingerprint is the text Secret logs for value; empty for an empty value.
func Fingerprint(value string) string {
	if value == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(value))
	fp := "sha256:" + hex.EncodeToString(sum[:4]) + " len=" + strconv.Itoa(len(value))
	if len(value) < secretPrefixMin {
		return fp
	}
	prefix := value
	for i, n := 0, 0; i < len(value); n++ {
		if n == 6 {
			prefix = value[:i]
			break
		}
		_, size := utf8.DecodeRuneInString(value[i:])
		i += size
	}
	return prefix + "…" + fp
}
