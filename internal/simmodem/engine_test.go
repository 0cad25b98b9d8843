package simmodem

import (
	"crypto/sha256"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/attest"
)

const testPEM = "-----BEGIN CERTIFICATE-----\r\nMIIBszCCAVmgAwIBAgIUW0Jb\r\n-----END CERTIFICATE-----\r\n"

type step struct {
	cmd       string
	wantFinal string
	want      []string // exact lines; nil skips the check
	match     string   // regexp every line must match, when set
}

func runSteps(t *testing.T, h *harness, steps []step) {
	t.Helper()
	for i, s := range steps {
		lines, final := h.cmd(s.cmd)
		if final != s.wantFinal {
			t.Fatalf("step %d %q: final %q, want %q (lines %q)", i, s.cmd, final, s.wantFinal, lines)
		}
		if s.want != nil && strings.Join(lines, "\n") != strings.Join(s.want, "\n") {
			t.Fatalf("step %d %q: lines %q, want %q", i, s.cmd, lines, s.want)
		}
		if s.match != "" {
			re := regexp.MustCompile(s.match)
			if len(lines) == 0 {
				t.Fatalf("step %d %q: no lines, want %s", i, s.cmd, s.match)
			}
			for _, l := range lines {
				if !re.MatchString(l) {
					t.Fatalf("step %d %q: line %q does not match %s", i, s.cmd, l, s.match)
				}
			}
		}
	}
}

func TestCommands(t *testing.T) {
	const uuid = "504d5632-3739-42fb-80c8-1411df972166"
	sha := fmt.Sprintf("%X", sha256.Sum256([]byte(testPEM)))
	tests := []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{"basics", Config{UUID: uuid}, []step{
			{cmd: "AT", wantFinal: "OK", want: []string{}},
			{cmd: "at", wantFinal: "OK", want: []string{}},
			{cmd: "AT+CFUN?", wantFinal: "OK", want: []string{"+CFUN: 0"}},
			{cmd: "AT+CFUN=4", wantFinal: "OK", want: []string{}},
			{cmd: "AT+CFUN?", wantFinal: "OK", want: []string{"+CFUN: 4"}},
			{cmd: "AT+CFUN=31", wantFinal: "OK"},
			{cmd: "AT+CFUN?", wantFinal: "OK", want: []string{"+CFUN: 4"}},
			{cmd: "AT+CFUN=7", wantFinal: "ERROR"},
			{cmd: "AT+CFUN=", wantFinal: "ERROR"},
			{cmd: "AT+CFUN=?", wantFinal: "OK", match: `^\+CFUN: \(`},
			{cmd: "AT+CMEE?", wantFinal: "OK", want: []string{"+CMEE: 0"}},
			{cmd: "AT+CMEE=2", wantFinal: "ERROR"},
			{cmd: "AT+CMEE=1", wantFinal: "OK"},
			{cmd: "AT+CMEE?", wantFinal: "OK", want: []string{"+CMEE: 1"}},
			{cmd: "AT%SHORTSWVER", wantFinal: "OK", want: []string{"%SHORTSWVER: nrf91x1_2.0.2"}},
			{cmd: "AT+CGMR", wantFinal: "OK", want: []string{"mfw_nrf91x1_2.0.2"}},
			{cmd: "AT+CGSN", wantFinal: "OK", match: `^\d{15}$`},
			{cmd: "AT+CGSN=1", wantFinal: "OK", match: `^\+CGSN: "\d{15}"$`},
			{cmd: "AT+CGSN=0", wantFinal: "OK", match: `^\d{15}$`},
			{cmd: "AT+CGMI", wantFinal: "OK", want: []string{"Nordic Semiconductor ASA"}},
			{cmd: "AT+CGMI=?", wantFinal: "OK", want: []string{}},
			{cmd: "AT+CGMM", wantFinal: "OK", want: []string{"nRF9161-LACA"}},
			{cmd: "AT+CGMM=?", wantFinal: "OK", want: []string{}},
			{cmd: "AT+CGMM?", wantFinal: "ERROR"},
			{cmd: "AT%XMODEMUUID", wantFinal: "OK", match: `^%XMODEMUUID: [0-9a-f-]{36}$`},
			{cmd: "AT%DEVICEUUID", wantFinal: "OK", want: []string{"%DEVICEUUID: " + uuid}},
			{cmd: "AT+FOO", wantFinal: "ERROR"},
			{cmd: "AT#XSMVER", wantFinal: "ERROR"},
			{cmd: "hello", wantFinal: "ERROR"},
			{cmd: `AT%CMNG=0,1,0,"a"x`, wantFinal: "ERROR"},
			{cmd: `AT+CMEE="1"`, wantFinal: "ERROR"},
		}},
		{"nrf9160", Config{Chip: "nrf9160"}, []step{
			{cmd: "AT%SHORTSWVER", wantFinal: "OK", want: []string{"%SHORTSWVER: nrf9160_1.3.7"}},
			{cmd: "AT%DEVICEUUID", wantFinal: "ERROR"},
			{cmd: "AT+CGMM", wantFinal: "OK", want: []string{"nRF9160-SICA"}},
		}},
		{"nrf9151", Config{Chip: "nrf9151"}, []step{
			{cmd: "AT+CGMM", wantFinal: "OK", want: []string{"nRF9151-LACA"}},
		}},
		{"cmee off hides codes", Config{}, []step{
			{cmd: "AT%CMNG=2,999,0", wantFinal: "ERROR"},
			{cmd: "AT+CMEE=1", wantFinal: "OK"},
			{cmd: "AT%CMNG=2,999,0", wantFinal: "+CME ERROR: 513"},
		}},
		{"cmng", Config{HideReserved: true}, []step{
			{cmd: "AT+CMEE=1", wantFinal: "OK"},
			{cmd: "AT%CMNG=1", wantFinal: "OK", want: []string{}},
			{cmd: `AT%CMNG=0,42,0,"` + testPEM + `"`, wantFinal: "OK"},
			{cmd: `AT%CMNG=0,42,4,"identity"`, wantFinal: "OK"},
			{cmd: `AT%CMNG=0,7,3,"00112233"`, wantFinal: "OK"},
			{cmd: "AT%CMNG=1", wantFinal: "OK", want: []string{
				`%CMNG: 7,3,"` + fmt.Sprintf("%X", sha256.Sum256([]byte("00112233"))) + `"`,
				`%CMNG: 42,0,"` + sha + `"`,
				`%CMNG: 42,4,"` + fmt.Sprintf("%X", sha256.Sum256([]byte("identity"))) + `"`,
			}},
			{cmd: "AT%CMNG=1,42", wantFinal: "OK", match: `^%CMNG: 42,[04],"[0-9A-F]{64}"$`},
			{cmd: "AT%CMNG=1,42,0", wantFinal: "OK", want: []string{`%CMNG: 42,0,"` + sha + `"`}},
			{cmd: "AT%CMNG=1,43", wantFinal: "OK", want: []string{}},
			{cmd: "AT%CMNG=2,42,0", wantFinal: "OK", want: []string{`%CMNG: 42,0,"` + sha + `","-----BEGIN CERTIFICATE-----`, "MIIBszCCAVmgAwIBAgIUW0Jb", "-----END CERTIFICATE-----", `"`}},
			{cmd: "AT%CMNG=2,7,3", wantFinal: "+CME ERROR: 514"},
			{cmd: "AT%CMNG=2,42,1", wantFinal: "+CME ERROR: 513"},
			{cmd: `AT%CMNG=0,42,1,"not pem"`, wantFinal: "+CME ERROR: 527"},
			{cmd: `AT%CMNG=0,42,3,"xyz"`, wantFinal: "+CME ERROR: 527"},
			{cmd: `AT%CMNG=0,42,1,""`, wantFinal: "+CME ERROR: 50"},
			{cmd: `AT%CMNG=0,42,1,unquoted`, wantFinal: "+CME ERROR: 50"},
			{cmd: `AT%CMNG=0,2147483648,0,"` + testPEM + `"`, wantFinal: "+CME ERROR: 514"},
			{cmd: `AT%CMNG=0,4294967296,0,"` + testPEM + `"`, wantFinal: "+CME ERROR: 50"},
			{cmd: `AT%CMNG=0,5,8,"` + testPEM + `"`, wantFinal: "+CME ERROR: 514"},
			{cmd: "AT%CMNG=3,42,1", wantFinal: "+CME ERROR: 513"},
			{cmd: "AT+CFUN=1", wantFinal: "OK"},
			{cmd: `AT%CMNG=0,43,0,"` + testPEM + `"`, wantFinal: "+CME ERROR: 518"},
			{cmd: "AT%CMNG=3,42,0", wantFinal: "+CME ERROR: 518"},
			{cmd: "AT%CMNG=1,42,0", wantFinal: "OK", want: []string{`%CMNG: 42,0,"` + sha + `"`}},
			{cmd: "AT+CFUN=4", wantFinal: "OK"},
			{cmd: "AT%CMNG=3,42,0", wantFinal: "OK"},
			{cmd: "AT%CMNG=3,42,0", wantFinal: "+CME ERROR: 513"},
			{cmd: "AT%CMNG=1,42", wantFinal: "OK", want: []string{`%CMNG: 42,4,"` + fmt.Sprintf("%X", sha256.Sum256([]byte("identity"))) + `"`}},
			{cmd: "AT%CMNG=9", wantFinal: "+CME ERROR: 50"},
		}},
		{"cmng reserved listed", Config{}, []step{
			{cmd: "AT%CMNG=1", wantFinal: "OK", match: `^%CMNG: 429496729[23],1[01],"[0-9A-F]{64}"$`},
			{cmd: "AT+CMEE=1", wantFinal: "OK"},
			{cmd: "AT%CMNG=3,4294967292,10", wantFinal: "+CME ERROR: 514"},
		}},
		{"cmng memory full", Config{MaxCredentials: 1, HideReserved: true}, []step{
			{cmd: "AT+CMEE=1", wantFinal: "OK"},
			{cmd: `AT%CMNG=0,1,4,"a"`, wantFinal: "OK"},
			{cmd: `AT%CMNG=0,1,4,"b"`, wantFinal: "OK"},
			{cmd: `AT%CMNG=0,2,4,"c"`, wantFinal: "+CME ERROR: 515"},
		}},
		{"cereg", Config{}, []step{
			{cmd: "AT+CEREG?", wantFinal: "OK", want: []string{"+CEREG: 1,0"}},
			{cmd: "AT+CEREG=2", wantFinal: "OK"},
			{cmd: "AT+CEREG=9", wantFinal: "ERROR"},
		}},
		{"starts online", Config{FunctionalMode: 1}, []step{
			{cmd: "AT+CFUN?", wantFinal: "OK", want: []string{"+CFUN: 1"}},
			{cmd: "AT+CEREG?", wantFinal: "OK", want: []string{"+CEREG: 1,1"}},
			{cmd: "AT%CCLK?", wantFinal: "OK", match: `^%CCLK: "\d\d/`},
			{cmd: `AT%CMNG=0,1,4,"x"`, wantFinal: "ERROR"},
		}},
		{"keyinject", Config{}, []step{
			{cmd: "AT+CMEE=1", wantFinal: "OK"},
			{cmd: `AT%KEYINJECT=9,2,"blob"`, wantFinal: "OK"},
			{cmd: "AT+CFUN=1", wantFinal: "OK"},
			{cmd: `AT%KEYINJECT=9,2,"blob"`, wantFinal: "+CME ERROR: 518"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.cfg)
			runSteps(t, h, tt.steps)
		})
	}
}

func TestClockAndRegistration(t *testing.T) {
	host := time.Date(2026, 11, 23, 10, 20, 30, 0, time.UTC)
	h := newHarness(t, Config{Clock: func() time.Time { return host }})
	runSteps(t, h, []step{
		{cmd: "AT%CCLK?", wantFinal: "ERROR"},
		{cmd: "AT+CCLK?", wantFinal: "ERROR"},
		{cmd: "AT+CMEE=1", wantFinal: "OK"},
		{cmd: `AT%JWT=0,300,"",""`, wantFinal: "+CME ERROR: 525"},
		{cmd: `AT+CCLK="26/11/23,12:00:00+08"`, wantFinal: "OK"},
		{cmd: "AT%CCLK?", wantFinal: "OK", want: []string{`%CCLK: "26/11/23,12:00:00+08",0`}},
		{cmd: "AT+CCLK?", wantFinal: "OK", want: []string{`+CCLK: "26/11/23,12:00:00+08"`}},
		{cmd: `AT+CCLK="26/13/23,12:00:00+08"`, wantFinal: "ERROR"},
		{cmd: `AT+CCLK=26/11/23`, wantFinal: "ERROR"},
	})
	got, valid := h.m.Time()
	if want := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC); !valid || !got.Equal(want) {
		t.Fatalf("Time() = %v, %v; want %v (local 12:00 at +2h)", got, valid, want)
	}

	// A fresh modem gets network time when it registers.
	h2 := newHarness(t, Config{Clock: func() time.Time { return host }})
	h2.mustOK("AT+CFUN=1")
	h2.waitLine(func(l string) bool { return l == "+CEREG: 1" })
	if !h2.m.Registered() {
		t.Fatal("not registered after the +CEREG URC")
	}
	if got := h2.mustOK("AT%CCLK?"); len(got) != 1 || got[0] != `%CCLK: "26/11/23,10:20:30+00",0` {
		t.Fatalf("%%CCLK? after registration = %q", got)
	}
	h2.mustOK("AT+CFUN=4")
	h2.waitLine(func(l string) bool { return l == "+CEREG: 0" })
	if h2.m.Registered() {
		t.Fatal("still registered after +CFUN=4")
	}
}

func TestJWT(t *testing.T) {
	host := time.Date(2026, 11, 23, 10, 20, 30, 0, time.UTC)
	h := newHarness(t, Config{ClockValid: true, Clock: func() time.Time { return host }, Chip: "nrf9151"})
	tests := []struct {
		name    string
		cmd     string
		wantExp bool
		sub     string
	}{
		{"device library form", `AT%JWT=0,300,"",""`, true, ""},
		{"no expiry", `AT%JWT=0,0,"",""`, false, ""},
		{"subject", `AT%JWT=0,60,"dev","aud"`, true, "dev"},
		{"empty alg", `AT%JWT=,300,"",""`, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines := h.mustOK(tt.cmd)
			if len(lines) != 1 || !strings.HasPrefix(lines[0], `%JWT: "`) || !strings.HasSuffix(lines[0], `"`) {
				t.Fatalf("answer %q", lines)
			}
			tok := attest.CleanJWT(strings.TrimPrefix(lines[0], "%JWT: "))
			info, err := attest.VerifyJWT(tok, h.m.IdentityPublicKey(), host.Add(time.Second))
			if err != nil {
				t.Fatalf("VerifyJWT: %v", err)
			}
			if info.Chip != "nrf9151" || info.DeviceUUID != h.m.UUID() {
				t.Errorf("iss = %q.%q, want nrf9151.%s", info.Chip, info.DeviceUUID, h.m.UUID())
			}
			if !strings.HasPrefix(info.Claims.ID, "nrf9151."+h.m.FirmwareUUID()+".") {
				t.Errorf("jti = %q", info.Claims.ID)
			}
			if (info.Claims.ExpiresAt != nil) != tt.wantExp {
				t.Errorf("exp present = %v, want %v", info.Claims.ExpiresAt != nil, tt.wantExp)
			}
			if tt.wantExp && !info.Claims.IssuedAt.Equal(host) {
				t.Errorf("iat = %v, want the modem clock %v", info.Claims.IssuedAt, host)
			}
			if info.Claims.Subject != tt.sub {
				t.Errorf("sub = %q, want %q", info.Claims.Subject, tt.sub)
			}
		})
	}
	t.Run("client key in sec tag", func(t *testing.T) {
		h.mustOK("AT+CMEE=1")
		lines := h.mustOK("AT%KEYGEN=77,2,1")
		k, err := attest.VerifyKeygen(strings.TrimPrefix(lines[0], "%KEYGEN: "), h.m.IdentityPublicKey())
		if err != nil {
			t.Fatal(err)
		}
		lines = h.mustOK(`AT%JWT=0,300,"","",77,2`)
		tok := attest.CleanJWT(strings.TrimPrefix(lines[0], "%JWT: "))
		if _, err := attest.VerifyJWT(tok, k.PublicKey, host); err != nil {
			t.Fatalf("JWT by sec tag 77 does not verify with its key: %v", err)
		}
		if _, err := attest.VerifyJWT(tok, h.m.IdentityPublicKey(), host); err == nil {
			t.Fatal("JWT by sec tag 77 verifies with the identity key")
		}
		runSteps(t, h, []step{
			{cmd: `AT%JWT=0,300,"","",78,2`, wantFinal: "+CME ERROR: 513"},
			{cmd: `AT%JWT=1,300,"",""`, wantFinal: "+CME ERROR: 50"},
			{cmd: `AT%JWT=0,300,"","",77,3`, wantFinal: "+CME ERROR: 50"},
			{cmd: `AT%JWT=0,300,"","",77`, wantFinal: "+CME ERROR: 50"},
		})
	})
}

func TestAttestationToken(t *testing.T) {
	h := newHarness(t, Config{})
	lines := h.mustOK("AT%ATTESTTOKEN")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], `%ATTESTTOKEN: "`) {
		t.Fatalf("answer %q", lines)
	}
	tok := strings.Trim(strings.TrimPrefix(lines[0], "%ATTESTTOKEN: "), `"`)
	id, err := attest.VerifyToken(tok, h.m.IdentityPublicKey())
	if err != nil {
		t.Fatalf("VerifyToken: %v", err)
	}
	if attest.FormatUUID(id.DeviceUUID) != h.m.UUID() || attest.FormatUUID(id.FWUUID) != h.m.FirmwareUUID() || id.DeviceType != attest.DeviceTypeNRF9161 {
		t.Errorf("identity %+v", id)
	}
	if u, err := attest.DeviceUUID(tok); err != nil || u != h.m.UUID() {
		t.Errorf("DeviceUUID = %q, %v", u, err)
	}
	lines = h.mustOK("AT%ATTESTTOKEN=00112233445566778899aabbccddeeff")
	id, err = attest.ParseToken(strings.Trim(strings.TrimPrefix(lines[0], "%ATTESTTOKEN: "), `"`))
	if err != nil || id.Nonce != [16]byte{0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff} {
		t.Errorf("challenge did not become the nonce: %+v, %v", id.Nonce, err)
	}
	h.mustOK("AT+CMEE=1")
	if _, final := h.cmd("AT%ATTESTTOKEN=12"); final != "+CME ERROR: 50" {
		t.Errorf("short challenge: %q", final)
	}
}

func TestKeygen(t *testing.T) {
	h := newHarness(t, Config{HideReserved: true})
	h.mustOK("AT+CMEE=1")
	tests := []struct {
		name       string
		cmd        string
		wantFormat int
		wantCN     string
		tag        uint32
	}{
		{"csr", "AT%KEYGEN=16842753,2,0", attest.KeygenCSR, h.m.UUID(), 16842753},
		{"default format", "AT%KEYGEN=17,2", attest.KeygenCSR, h.m.UUID(), 17},
		{"public key", "AT%KEYGEN=18,2,1", attest.KeygenPublicKey, "", 18},
		{"attributes", `AT%KEYGEN=19,2,0,"O=Example,C=no,CN=dev-1","101010000"`, attest.KeygenCSR, "dev-1", 19},
		{"attributes without cn", `AT%KEYGEN=20,2,0,"O=Example"`, attest.KeygenCSR, h.m.UUID(), 20},
		{"overwrite", "AT%KEYGEN=16842753,2,0", attest.KeygenCSR, h.m.UUID(), 16842753},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines := h.mustOK(tt.cmd)
			if len(lines) != 1 {
				t.Fatalf("answer %q", lines)
			}
			k, err := attest.VerifyKeygen(lines[0], h.m.IdentityPublicKey())
			if err != nil {
				t.Fatalf("VerifyKeygen: %v", err)
			}
			if k.Format != tt.wantFormat || k.Payload.SecTag != tt.tag || attest.FormatUUID(k.Payload.DeviceUUID) != h.m.UUID() {
				t.Errorf("format %d tag %d uuid %x", k.Format, k.Payload.SecTag, k.Payload.DeviceUUID)
			}
			if k.CSR != nil && k.CSR.Subject.CommonName != tt.wantCN {
				t.Errorf("CN = %q, want %q", k.CSR.Subject.CommonName, tt.wantCN)
			}
			cred, ok := h.m.Credential(tt.tag, TypePrivateKey)
			if !ok {
				t.Fatal("no private key stored in the tag")
			}
			stored, err := attest.ParsePrivateKeyPEM([]byte(cred.Content))
			if err != nil || !stored.PublicKey.Equal(k.PublicKey) {
				t.Errorf("stored key does not match the answer: %v", err)
			}
		})
	}
	runSteps(t, h, []step{
		{cmd: "AT%CMNG=2,17,2", wantFinal: "+CME ERROR: 514"},
		{cmd: "AT%CMNG=1,17", wantFinal: "OK", match: `^%CMNG: 17,2,"[0-9A-F]{64}"$`},
		{cmd: "AT%KEYGEN=21,3,0", wantFinal: "+CME ERROR: 50"},
		{cmd: "AT%KEYGEN=21,2,2", wantFinal: "+CME ERROR: 50"},
		{cmd: `AT%KEYGEN=21,2,0,"bogus"`, wantFinal: "+CME ERROR: 50"},
		{cmd: "AT%KEYGEN=2147483648,2,0", wantFinal: "+CME ERROR: 514"},
		{cmd: "AT%KEYGEN=21", wantFinal: "ERROR"},
		{cmd: "AT+CFUN=21", wantFinal: "OK"},
		{cmd: "AT%KEYGEN=21,2,0", wantFinal: "+CME ERROR: 518"},
		{cmd: "AT+CFUN=2", wantFinal: "OK"},
		{cmd: "AT%KEYGEN=21,2,0", wantFinal: "+CME ERROR: 518"},
		{cmd: "AT+CFUN=20", wantFinal: "OK"},
		{cmd: "AT%KEYGEN=21,2,0", wantFinal: "OK"},
	})
	// Endorsement key: answered from the same key while it exists.
	a1 := h.mustOK("AT%KEYGEN=30,8,1")
	a2 := h.mustOK("AT%KEYGEN=30,8,1")
	d1, _, err1 := attest.ParseKeygen(a1[0])
	d2, _, err2 := attest.ParseKeygen(a2[0])
	if err1 != nil || err2 != nil || string(d1) != string(d2) {
		t.Errorf("endorsement key changed between KEYGENs: %v %v", err1, err2)
	}
}

func TestFraming(t *testing.T) {
	tests := []struct {
		name   string
		ending string
		input  string
		want   []string // every line the modem writes, in order
	}{
		{"crlf client, any", LineEndingAny, "AT\r\nAT+CFUN?\r\n", []string{"OK", "+CFUN: 0", "OK"}},
		{"cr client, any", LineEndingAny, "AT\rAT+CFUN?\r", []string{"OK", "+CFUN: 0", "OK"}},
		{"lf and nul, any", LineEndingAny, "AT\nAT\x00", []string{"OK", "OK"}},
		{"blank lines ignored", LineEndingAny, "\r\n\r\n  \r\nAT\r\n", []string{"OK"}},
		{"crlf mode needs crlf", LineEndingCRLF, "AT\rAT\r\n", []string{"ERROR"}},
		{"crlf mode", LineEndingCRLF, "AT\r\nAT+CMEE?\r\n", []string{"OK", "+CMEE: 0", "OK"}},
		{"cr mode ignores lf", LineEndingCR, "AT\r\nAT\r\n", []string{"OK", "OK"}},
		{"lf mode", LineEndingLF, "AT\nAT\r\n", []string{"OK", "OK"}},
		{"quoted terminators", LineEndingAny, "AT%CMNG=0,5,0,\"-----BEGIN CERTIFICATE-----\r\nAAAA\r\n-----END CERTIFICATE-----\r\n\"\r\nAT%CMNG=1,5\r\n",
			[]string{"OK", `%CMNG: 5,0,"` + fmt.Sprintf("%X", sha256.Sum256([]byte("-----BEGIN CERTIFICATE-----\r\nAAAA\r\n-----END CERTIFICATE-----\r\n"))) + `"`, "OK"}},
		{"too long then fine", LineEndingAny, "AT+" + strings.Repeat("A", 4200) + "\r\nAT\r\n", []string{"ERROR", "OK"}},
		{"exactly the limit", LineEndingCRLF, "AT%CMNG=0,6,4,\"" + strings.Repeat("x", 4096-2-16) + "\"\r\nAT%CMNG=1,6\r\n", []string{"OK", "", "OK"}},
		{"one over the limit", LineEndingCRLF, "AT%CMNG=0,6,4,\"" + strings.Repeat("x", 4096-2-15) + "\"\r\nAT%CMNG=1,6\r\n", []string{"ERROR", "OK"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{LineEnding: tt.ending, HideReserved: true})
			h.send(tt.input)
			for i, want := range tt.want {
				got := h.next()
				if want == "" { // any listing line
					if !strings.HasPrefix(got, "%CMNG: 6,4,") {
						t.Fatalf("line %d = %q, want a %%CMNG listing", i, got)
					}
					continue
				}
				if got != want {
					t.Fatalf("line %d = %q, want %q", i, got, want)
				}
			}
		})
	}
}

func TestEcho(t *testing.T) {
	h := newHarness(t, Config{})
	h.mustOK("ATE1")
	lines, final := h.cmd("AT+CFUN?")
	if final != "OK" || strings.Join(lines, "|") != "AT+CFUN?|+CFUN: 0" {
		t.Fatalf("echoed answer %q %q", lines, final)
	}
	h.m.DropEcho(1)
	if lines, _ = h.cmd("AT+CMEE?"); strings.Join(lines, "|") != "+CMEE: 0" {
		t.Fatalf("DropEcho answer %q", lines)
	}
	if lines, _ = h.cmd("ATE0"); strings.Join(lines, "|") != "ATE0" {
		t.Fatalf("ATE0 answer %q (the command itself is still echoed)", lines)
	}
	if lines, _ = h.cmd("AT"); len(lines) != 0 {
		t.Fatalf("echo after ATE0: %q", lines)
	}
	if !strings.Contains(strings.Join(h.m.CommandLog(), "|"), "ATE1|AT+CFUN?|AT+CMEE?|ATE0|AT") {
		t.Errorf("CommandLog = %q", h.m.CommandLog())
	}
}

func TestBanner(t *testing.T) {
	h := newHarness(t, Config{Banner: "Ready"})
	if l := h.next(); l != "Ready" {
		t.Fatalf("first line %q, want Ready", l)
	}
}

func TestNewConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"chip", Config{Chip: "nrf5340"}},
		{"line ending", Config{LineEnding: "crcr"}},
		{"uuid", Config{UUID: "nope"}},
		{"fw uuid", Config{FirmwareUUID: "nope"}},
		{"imei", Config{IMEI: "123"}},
		{"reg status", Config{RegStatus: 3}},
		{"baud", Config{Baud: -1}},
		{"functional mode", Config{FunctionalMode: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil {
				t.Fatal("New() = nil error")
			}
		})
	}
}

func TestDerivedIdentityIsStable(t *testing.T) {
	key, err := attest.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	a, _ := New(Config{Identity: key})
	b, _ := New(Config{Identity: key})
	if a.UUID() != b.UUID() || a.IMEI() != b.IMEI() {
		t.Fatalf("same identity gave %s/%s and %s/%s", a.UUID(), a.IMEI(), b.UUID(), b.IMEI())
	}
	u, _ := attest.ParseUUID(a.UUID())
	if u[6]>>4 != 4 || u[8]>>6 != 2 {
		t.Errorf("uuid %s is not version 4 / variant 10", a.UUID())
	}
	sum := 0
	for i, c := range a.IMEI() {
		d := int(c - '0')
		if i%2 == 1 {
			if d *= 2; d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	if sum%10 != 0 {
		t.Errorf("imei %s fails the Luhn check", a.IMEI())
	}
}
