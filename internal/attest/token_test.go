package attest

import (
	"encoding/base64"
	"errors"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

func mustCBOR(t testing.TB, v any) []byte {
	t.Helper()
	b, err := cbor.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDeviceUUID(t *testing.T) {
	uuid := []byte{0x50, 0x4d, 0x56, 0x32, 0x37, 0x39, 0x42, 0xfb, 0x80, 0xc8, 0x14, 0x11, 0xdf, 0x97, 0x21, 0x66}
	b16 := make([]byte, 16)
	good := mustCBOR(t, []any{1, uuid, 4, b16, b16})
	cose := base64.RawURLEncoding.EncodeToString([]byte{0xd2, 0x84})
	tests := []struct {
		name    string
		token   string
		want    string
		wantErr bool
	}{
		{"unpadded", base64.RawURLEncoding.EncodeToString(good) + "." + cose, "504d5632-3739-42fb-80c8-1411df972166", false},
		{"padded", base64.URLEncoding.EncodeToString(good) + "." + cose, "504d5632-3739-42fb-80c8-1411df972166", false},
		{"no dot", base64.RawURLEncoding.EncodeToString(good), "", true},
		{"empty cose", base64.RawURLEncoding.EncodeToString(good) + ".", "", true},
		{"three parts", base64.RawURLEncoding.EncodeToString(good) + "." + cose + "." + cose, "", true},
		{"std alphabet", base64.StdEncoding.EncodeToString([]byte{0xfb, 0xff}) + "." + cose, "", true},
		{"short uuid", base64.RawURLEncoding.EncodeToString(mustCBOR(t, []any{1, uuid[:15], 4, b16, b16})) + "." + cose, "", true},
		{"not array", base64.RawURLEncoding.EncodeToString(mustCBOR(t, map[int]int{1: 2})) + "." + cose, "", true},
		{"four elements", base64.RawURLEncoding.EncodeToString(mustCBOR(t, []any{1, uuid, 4, b16})) + "." + cose, "", true},
		{"uuid as text", base64.RawURLEncoding.EncodeToString(mustCBOR(t, []any{1, "504d5632373942fb", 4, b16, b16})) + "." + cose, "", true},
		{"empty", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DeviceUUID(tt.token)
			if tt.wantErr {
				var fe *FormatError
				if !errors.As(err, &fe) || !errors.Is(err, ErrMalformed) {
					t.Fatalf("DeviceUUID() error = %v, want *FormatError matching ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("DeviceUUID() error = %v", err)
			}
			if got != tt.want {
				t.Errorf("DeviceUUID() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseUUIDRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr bool
	}{
		{"lower", "504d5632-3739-42fb-80c8-1411df972166", "504d5632-3739-42fb-80c8-1411df972166", false},
		{"upper", "504D5632-3739-42FB-80C8-1411DF972166", "504d5632-3739-42fb-80c8-1411df972166", false},
		{"no dashes", "504d5632373942fb80c81411df972166", "", true},
		{"bad hex", "504d5632-3739-42fb-80c8-1411df97216g", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := ParseUUID(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseUUID() error = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && FormatUUID(u) != tt.want {
				t.Errorf("FormatUUID(ParseUUID()) = %q, want %q", FormatUUID(u), tt.want)
			}
		})
	}
}
