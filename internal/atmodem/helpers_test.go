package atmodem

import (
	"context"
	"encoding/base64"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// attestToken builds "<attest>.<cose>" with the CBOR identity message of docs/modem.md §1.11.
func attestToken(t *testing.T, uuid []byte) string {
	t.Helper()
	fw := make([]byte, 16)
	nonce := make([]byte, 16)
	msg, err := cbor.Marshal([]any{1, uuid, 4, fw, nonce})
	if err != nil {
		t.Fatal(err)
	}
	cose, err := cbor.Marshal(cbor.Tag{Number: 18, Content: []any{[]byte{0xa1, 0x01, 0x26}, map[int]any{}, nil, make([]byte, 64)}})
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(msg) + "." + base64.RawURLEncoding.EncodeToString(cose)
}

func TestHelpers(t *testing.T) {
	uuid := []byte{0x50, 0x4d, 0x56, 0x32, 0x37, 0x39, 0x42, 0xfb, 0x80, 0xc8, 0x14, 0x11, 0xdf, 0x97, 0x21, 0x66}
	token := attestToken(t, uuid)
	ctx := context.Background()
	tests := []struct {
		name    string
		script  map[string][]item
		call    func(c *Client) (any, error)
		want    any
		wantErr error
	}{
		{
			name:   "FunctionalMode",
			script: map[string][]item{"AT+CFUN?\r\n": say("+CFUN: 4\r\nOK\r\n")},
			call:   func(c *Client) (any, error) { return c.FunctionalMode(ctx) },
			want:   4,
		},
		{
			name:    "FunctionalMode not a number",
			script:  map[string][]item{"AT+CFUN?\r\n": say("+CFUN: x\r\nOK\r\n")},
			call:    func(c *Client) (any, error) { return c.FunctionalMode(ctx) },
			want:    0,
			wantErr: ErrUnexpectedResponse,
		},
		{
			name:    "FunctionalMode without its line",
			script:  map[string][]item{"AT+CFUN?\r\n": say("OK\r\n")},
			call:    func(c *Client) (any, error) { return c.FunctionalMode(ctx) },
			want:    0,
			wantErr: ErrUnexpectedResponse,
		},
		{
			name:    "FunctionalMode ERROR",
			script:  map[string][]item{"AT+CFUN?\r\n": say("ERROR\r\n")},
			call:    func(c *Client) (any, error) { return c.FunctionalMode(ctx) },
			want:    0,
			wantErr: ErrError,
		},
		{
			name:   "SetFunctionalMode",
			script: map[string][]item{"AT+CFUN=4\r\n": say("OK\r\n")},
			call:   func(c *Client) (any, error) { return nil, c.SetFunctionalMode(ctx, ModeOffline) },
		},
		{
			name:    "SetFunctionalMode negative",
			call:    func(c *Client) (any, error) { return nil, c.SetFunctionalMode(ctx, -1) },
			wantErr: ErrInvalidArgument,
		},
		{
			name:   "CMEE with extra fields",
			script: map[string][]item{"AT+CMEE?\r\n": say("+CMEE: 1,0\r\nOK\r\n")},
			call:   func(c *Client) (any, error) { return c.CMEE(ctx) },
			want:   1,
		},
		{
			name:   "SetCMEE",
			script: map[string][]item{"AT+CMEE=1\r\n": say("OK\r\n")},
			call:   func(c *Client) (any, error) { return nil, c.SetCMEE(ctx, 1) },
		},
		{
			name:    "SetCMEE out of range",
			call:    func(c *Client) (any, error) { return nil, c.SetCMEE(ctx, 3) },
			wantErr: ErrInvalidArgument,
		},
		{
			name:   "ShortSWVersion",
			script: map[string][]item{"AT%SHORTSWVER\r\n": say("%SHORTSWVER: nrf9160_1.3.5\r\nOK\r\n")},
			call:   func(c *Client) (any, error) { return c.ShortSWVersion(ctx) },
			want:   "nrf9160_1.3.5",
		},
		{
			name:    "ShortSWVersion empty",
			script:  map[string][]item{"AT%SHORTSWVER\r\n": say("%SHORTSWVER: \r\nOK\r\n")},
			call:    func(c *Client) (any, error) { return c.ShortSWVersion(ctx) },
			want:    "",
			wantErr: ErrUnexpectedResponse,
		},
		{
			name:   "SetClock in UTC",
			script: map[string][]item{"AT+CCLK=\"24/11/25,17:20:00+00\"\r\n": say("OK\r\n")},
			call: func(c *Client) (any, error) {
				return nil, c.SetClock(ctx, time.Date(2024, 11, 25, 18, 20, 0, 0, time.FixedZone("CET", 3600)))
			},
		},
		{
			name:    "SetClock before 2000",
			call:    func(c *Client) (any, error) { return nil, c.SetClock(ctx, time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC)) },
			wantErr: ErrInvalidArgument,
		},
		{
			name:   "JWT identity key, plain base64 cleaned",
			script: map[string][]item{`AT%JWT=0,300,"",""` + "\r\n": say("%JWT: \"eyJh+bG/ci.eyJp+c3M.sig+/x==\"\r\nOK\r\n")},
			call:   func(c *Client) (any, error) { return c.JWT(ctx, 0, 5*time.Minute) },
			want:   "eyJh-bG_ci.eyJp-c3M.sig-_x",
		},
		{
			name:   "JWT client key in a sec tag",
			script: map[string][]item{`AT%JWT=0,0,"","",16842753,2` + "\r\n": say("%JWT: \"a.b.c\"\r\nOK\r\n")},
			call:   func(c *Client) (any, error) { return c.JWT(ctx, 16842753, 0) },
			want:   "a.b.c",
		},
		{
			name:    "JWT unquoted",
			script:  map[string][]item{`AT%JWT=0,300,"",""` + "\r\n": say("%JWT: a.b.c\r\nOK\r\n")},
			call:    func(c *Client) (any, error) { return c.JWT(ctx, 0, 300*time.Second) },
			want:    "",
			wantErr: ErrUnexpectedResponse,
		},
		{
			name:    "JWT not three parts",
			script:  map[string][]item{`AT%JWT=0,300,"",""` + "\r\n": say("%JWT: \"a.b\"\r\nOK\r\n")},
			call:    func(c *Client) (any, error) { return c.JWT(ctx, 0, 300*time.Second) },
			want:    "",
			wantErr: ErrUnexpectedResponse,
		},
		{
			name:    "JWT without time",
			script:  map[string][]item{`AT%JWT=0,300,"",""` + "\r\n": say("+CME ERROR: 525\r\n")},
			call:    func(c *Client) (any, error) { return c.JWT(ctx, 0, 300*time.Second) },
			want:    "",
			wantErr: &CMEError{Code: 525, Raw: "+CME ERROR: 525"},
		},
		{
			name:    "JWT negative validity",
			call:    func(c *Client) (any, error) { return c.JWT(ctx, 0, -time.Second) },
			want:    "",
			wantErr: ErrInvalidArgument,
		},
		{
			name:   "AttestationToken",
			script: map[string][]item{"AT%ATTESTTOKEN\r\n": say("%ATTESTTOKEN: \"" + token + "\"\r\nOK\r\n")},
			call:   func(c *Client) (any, error) { return c.AttestationToken(ctx) },
			want:   token,
		},
		{
			name:    "AttestationToken without dot",
			script:  map[string][]item{"AT%ATTESTTOKEN\r\n": say("%ATTESTTOKEN: \"abc\"\r\nOK\r\n")},
			call:    func(c *Client) (any, error) { return c.AttestationToken(ctx) },
			want:    "",
			wantErr: ErrUnexpectedResponse,
		},
		{
			name:   "DeviceUUID",
			script: map[string][]item{"AT%ATTESTTOKEN\r\n": say("%ATTESTTOKEN: \"" + token + "\"\r\nOK\r\n")},
			call:   func(c *Client) (any, error) { return c.DeviceUUID(ctx) },
			want:   "504d5632-3739-42fb-80c8-1411df972166",
		},
		{
			name:    "DeviceUUID from a broken token",
			script:  map[string][]item{"AT%ATTESTTOKEN\r\n": say("%ATTESTTOKEN: \"AAAA.AAAA\"\r\nOK\r\n")},
			call:    func(c *Client) (any, error) { return c.DeviceUUID(ctx) },
			want:    "",
			wantErr: ErrUnexpectedResponse,
		},
		{
			name:    "DeviceUUID modem error",
			script:  map[string][]item{"AT%ATTESTTOKEN\r\n": say("ERROR\r\n")},
			call:    func(c *Client) (any, error) { return c.DeviceUUID(ctx) },
			want:    "",
			wantErr: ErrError,
		},
		{
			name: "Credentials all",
			script: map[string][]item{"AT%CMNG=1\r\n": say("%CMNG: 16842753,0,\"2c43a0b5\"\r\n%CMNG: 16842753,2\r\n" +
				"+CEREG: 1\r\n%CMNG: 4294967292,10,\"AB\"\r\nOK\r\n")},
			call: func(c *Client) (any, error) { return c.Credentials(ctx, -1) },
			want: []Credential{{16842753, 0, "2C43A0B5"}, {16842753, 2, ""}, {4294967292, 10, "AB"}},
		},
		{
			name:   "Credentials of one tag, none",
			script: map[string][]item{"AT%CMNG=1,42\r\n": say("OK\r\n")},
			call:   func(c *Client) (any, error) { return c.Credentials(ctx, 42) },
			want:   []Credential(nil),
		},
		{
			name:   "Credentials 513 is an empty list",
			script: map[string][]item{"AT%CMNG=1,42\r\n": say("+CME ERROR: 513\r\n")},
			call:   func(c *Client) (any, error) { return c.Credentials(ctx, 42) },
			want:   []Credential(nil),
		},
		{
			name:    "Credentials other CME",
			script:  map[string][]item{"AT%CMNG=1,42\r\n": say("+CME ERROR: 514\r\n")},
			call:    func(c *Client) (any, error) { return c.Credentials(ctx, 42) },
			want:    []Credential(nil),
			wantErr: &CMEError{Code: 514, Raw: "+CME ERROR: 514"},
		},
		{
			name:    "Credentials malformed line",
			script:  map[string][]item{"AT%CMNG=1\r\n": say("%CMNG: x\r\nOK\r\n")},
			call:    func(c *Client) (any, error) { return c.Credentials(ctx, -1) },
			want:    []Credential(nil),
			wantErr: ErrUnexpectedResponse,
		},
		{
			name:    "Credentials bad type",
			script:  map[string][]item{"AT%CMNG=1\r\n": say("%CMNG: 1,x\r\nOK\r\n")},
			call:    func(c *Client) (any, error) { return c.Credentials(ctx, -1) },
			want:    []Credential(nil),
			wantErr: ErrUnexpectedResponse,
		},
		{
			name:    "Credentials bad tag argument",
			call:    func(c *Client) (any, error) { return c.Credentials(ctx, -2) },
			want:    []Credential(nil),
			wantErr: ErrInvalidArgument,
		},
		{
			name:   "CredentialExists yes",
			script: map[string][]item{"AT%CMNG=1,42\r\n": say("%CMNG: 42,1,\"AA\"\r\n%CMNG: 42,0,\"BB\"\r\nOK\r\n")},
			call:   func(c *Client) (any, error) { return c.CredentialExists(ctx, 42, 0) },
			want:   true,
		},
		{
			name:   "CredentialExists other type only",
			script: map[string][]item{"AT%CMNG=1,42\r\n": say("%CMNG: 42,1,\"AA\"\r\nOK\r\n")},
			call:   func(c *Client) (any, error) { return c.CredentialExists(ctx, 42, 0) },
			want:   false,
		},
		{
			name:   "CredentialExists 513",
			script: map[string][]item{"AT%CMNG=1,42\r\n": say("+CME ERROR: 513\r\n")},
			call:   func(c *Client) (any, error) { return c.CredentialExists(ctx, 42, 0) },
			want:   false,
		},
		{
			name:    "CredentialExists modem error",
			script:  map[string][]item{"AT%CMNG=1,42\r\n": say("ERROR\r\n")},
			call:    func(c *Client) (any, error) { return c.CredentialExists(ctx, 42, 0) },
			want:    false,
			wantErr: ErrError,
		},
		{
			name:    "CredentialExists bad tag",
			call:    func(c *Client) (any, error) { return c.CredentialExists(ctx, -1, 0) },
			want:    false,
			wantErr: ErrInvalidArgument,
		},
		{
			name:   "WriteCredential multi-line PEM",
			script: map[string][]item{"AT%CMNG=0,42,0,\"" + testPEM + "\"\r\n": say("OK\r\n")},
			call:   func(c *Client) (any, error) { return nil, c.WriteCredential(ctx, 42, CredRootCA, testPEM) },
		},
		{
			name:    "WriteCredential while online",
			script:  map[string][]item{"AT%CMNG=0,42,0,\"" + testPEM + "\"\r\n": say("+CME ERROR: 518\r\n")},
			call:    func(c *Client) (any, error) { return nil, c.WriteCredential(ctx, 42, CredRootCA, testPEM) },
			wantErr: &CMEError{Code: 518, Raw: "+CME ERROR: 518"},
		},
		{
			name:    "WriteCredential with a quote",
			call:    func(c *Client) (any, error) { return nil, c.WriteCredential(ctx, 42, CredRootCA, `a"b`) },
			wantErr: ErrInvalidArgument,
		},
		{
			name:    "WriteCredential empty",
			call:    func(c *Client) (any, error) { return nil, c.WriteCredential(ctx, 42, CredRootCA, "") },
			wantErr: ErrInvalidArgument,
		},
		{
			name:   "DeleteCredential",
			script: map[string][]item{"AT%CMNG=3,42,2\r\n": say("OK\r\n")},
			call:   func(c *Client) (any, error) { return nil, c.DeleteCredential(ctx, 42, CredPrivateKey) },
		},
		{
			name:    "DeleteCredential missing",
			script:  map[string][]item{"AT%CMNG=3,42,2\r\n": say("+CME ERROR: 513\r\n")},
			call:    func(c *Client) (any, error) { return nil, c.DeleteCredential(ctx, 42, CredPrivateKey) },
			wantErr: &CMEError{Code: 513, Raw: "+CME ERROR: 513"},
		},
		{
			name:    "DeleteCredential bad type",
			call:    func(c *Client) (any, error) { return nil, c.DeleteCredential(ctx, 42, -1) },
			wantErr: ErrInvalidArgument,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(tc.script)
			c := newClient(t, f, Config{})
			got, err := tc.call(c)
			checkErr(t, err, tc.wantErr)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
			if len(f.unknown) != 0 {
				t.Errorf("unscripted commands %q", f.unknown)
			}
		})
	}
}

func TestClock(t *testing.T) {
	tests := []struct {
		name      string
		reply     string
		want      time.Time
		wantValid bool
		wantErr   error
	}{
		{name: "UTC", reply: "%CCLK: \"24/11/25,17:20:00+00\",0\r\nOK\r\n", want: time.Date(2024, 11, 25, 17, 20, 0, 0, time.UTC), wantValid: true},
		{name: "east of UTC in quarter hours", reply: "%CCLK: \"24/11/25,19:20:00+08\",0\r\nOK\r\n", want: time.Date(2024, 11, 25, 17, 20, 0, 0, time.UTC), wantValid: true},
		{name: "west of UTC", reply: "%CCLK: \"24/11/25,12:20:00-20\",1\r\nOK\r\n", want: time.Date(2024, 11, 25, 17, 20, 0, 0, time.UTC), wantValid: true},
		{name: "year 2070 is not 1970", reply: "%CCLK: \"70/01/01,00:00:00+00\",0\r\nOK\r\n", want: time.Date(2070, 1, 1, 0, 0, 0, 0, time.UTC), wantValid: true},
		{name: "default date before 2020", reply: "%CCLK: \"10/01/01,00:00:10+00\",0\r\nOK\r\n", want: time.Date(2010, 1, 1, 0, 0, 10, 0, time.UTC)},
		{name: "no time: ERROR", reply: "ERROR\r\n"},
		{name: "no time: CME", reply: "+CME ERROR: 513\r\n"},
		{name: "unquoted", reply: "%CCLK: 24/11/25,17:20:00+00\r\nOK\r\n", wantErr: ErrUnexpectedResponse},
		{name: "bad date", reply: "%CCLK: \"24/13/25,17:20:00+00\",0\r\nOK\r\n", wantErr: ErrUnexpectedResponse},
		{name: "bad zone", reply: "%CCLK: \"24/11/25,17:20:00+xx\",0\r\nOK\r\n", wantErr: ErrUnexpectedResponse},
		{name: "zone out of range", reply: "%CCLK: \"24/11/25,17:20:00+99\",0\r\nOK\r\n", wantErr: ErrUnexpectedResponse},
		{name: "no sign", reply: "%CCLK: \"24/11/25,17:20:00x00\",0\r\nOK\r\n", wantErr: ErrUnexpectedResponse},
		{name: "short", reply: "%CCLK: \"24/11/25\",0\r\nOK\r\n", wantErr: ErrUnexpectedResponse},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, newFake(map[string][]item{"AT%CCLK?\r\n": say(tc.reply)}), Config{})
			got, valid, err := c.Clock(context.Background())
			checkErr(t, err, tc.wantErr)
			if !got.Equal(tc.want) || valid != tc.wantValid {
				t.Errorf("got %v valid %v, want %v valid %v", got, valid, tc.want, tc.wantValid)
			}
			if !got.IsZero() && got.Location() != time.UTC {
				t.Errorf("location %v, want UTC", got.Location())
			}
		})
	}
	t.Run("port lost is an error", func(t *testing.T) {
		c := newClient(t, newFake(map[string][]item{"AT%CCLK?\r\n": {{err: errors.New("gone")}}}), Config{})
		if _, _, err := c.Clock(context.Background()); !errors.Is(err, ErrPortLost) {
			t.Errorf("got %v, want ErrPortLost", err)
		}
	})
}

func TestHasHashCommand(t *testing.T) {
	for cmd, want := range map[string]bool{
		"AT#XRESET":                    true,
		"at#xslmver":                   true,
		"AT+CFUN=4;#XRESET":            true,
		"AT+CFUN=4; AT#XDFUGET=1":      true,
		"AT%KEYGEN=1,2,0":              false,
		`AT%XAPNSTATUS=1,"#apn;#X"`:    false,
		"AT+CFUN=4;%CMNG=0,1,0,\"#\";": false,
		"#XRESET":                      true,
	} {
		if got := HasHashCommand(cmd); got != want {
			t.Errorf("HasHashCommand(%q) = %v, want %v", cmd, got, want)
		}
	}
}
