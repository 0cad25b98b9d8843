package attest

import (
	"errors"
	"fmt"
)

// Sentinel errors. Data-bearing failures are *FormatError, which matches ErrMalformed.
var (
	// ErrMalformed means a token, KEYGEN answer or COSE message does not have the nRF91 structure.
	ErrMalformed = errors.New("malformed")
	// ErrSignature means a COSE_Sign1 or JWT signature does not verify against the given key.
	ErrSignature = errors.New("signature does not verify")
	// ErrDigest means the SHA-256 inside a KEYGEN COSE payload does not match the DER body.
	ErrDigest = errors.New("digest mismatch")
	// ErrKey means a key is missing or is not an ECDSA P-256 key.
	ErrKey = errors.New("key is not an ecdsa p-256 key")
)

// FormatError says which part of an identity message is malformed and why.
type FormatError struct {
	// What names the message: "attestation token", "keygen answer", "cose".
	What string
	// Part names the field or component: "attest part", "device uuid", "signature".
	Part string
	// Err is the underlying decode error, if any.
	Err error
}

func (e *FormatError) Error() string {
	msg := fmt.Sprintf("attest: %s: malformed %s", e.What, e.Part)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the underlying decode error.
func (e *FormatError) Unwrap() error { return e.Err }

// Is makes every *FormatError match ErrMalformed.
func (e *FormatError) Is(target error) bool { return target == ErrMalformed }
