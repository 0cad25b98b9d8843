package attest

import (
	"errors"
	"strings"
	"testing"
)

// FuzzDeviceUUID checks that any input either parses to a canonical UUID or fails with a
// *FormatError, and never panics.
func FuzzDeviceUUID(f *testing.F) {
	id, err := GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	tok, err := BuildToken(id, Identity{MsgType: 1, DeviceUUID: testUUID, DeviceType: 4})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok)
	f.Add("2dn3hQFQ.0oRD")
	f.Add(".")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := DeviceUUID(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("DeviceUUID error %v is not ErrMalformed", err)
			}
			return
		}
		if _, err := ParseUUID(u); err != nil || u != strings.ToLower(u) {
			t.Fatalf("DeviceUUID returned non-canonical %q", u)
		}
	})
}

// FuzzParseKeygen checks that ParseKeygen never panics and that what it accepts is
// consistent: a known format and a non-empty DER body.
func FuzzParseKeygen(f *testing.F) {
	id, err := GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	for _, format := range []int{KeygenCSR, KeygenPublicKey} {
		key, err := GenerateKey()
		if err != nil {
			f.Fatal(err)
		}
		ans, err := BuildKeygen(KeygenParams{Identity: id, DeviceUUID: testUUID, SecTag: 42, Format: format, Key: key})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(ans)
		f.Add(`%KEYGEN: "` + ans + `"` + "\r\nOK\r\n")
	}
	f.Add("a.b")
	f.Fuzz(func(t *testing.T, s string) {
		der, format, err := ParseKeygen(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseKeygen error %v is not ErrMalformed", err)
			}
			return
		}
		if len(der) == 0 || (format != KeygenCSR && format != KeygenPublicKey) {
			t.Fatalf("ParseKeygen accepted der %d bytes, format %d", len(der), format)
		}
		_, _ = VerifyKeygen(s, &id.PublicKey)
	})
}
