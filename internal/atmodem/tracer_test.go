package atmodem

import (
	"context"
	"errors"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"
)

type traceLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *traceLog) log(dir, line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, dir+" "+line)
}

func (l *traceLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

const privPEM = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"

func TestTracer(t *testing.T) {
	jwt := "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJuUkY5MTYwLjUwNGQ1NjMyIn0.c2lnbmF0dXJlc2VjcmV0"
	tests := []struct {
		name    string
		tx, rx  []string // chunks written and read
		want    []string
		secrets []string // must not appear in any logged line
	}{
		{
			name: "plain lines, split reads joined",
			tx:   []string{"AT+CFUN?\r\n"},
			rx:   []string{"+CF", "UN: 4\r", "\nOK\r\n"},
			want: []string{"tx AT+CFUN?", "rx +CFUN: 4", "rx OK"},
		},
		{
			name:    "JWT answer",
			tx:      []string{`AT%JWT=0,300,"",""` + "\r\n"},
			rx:      []string{`%JWT: "` + jwt + "\"\r\nOK\r\n"},
			want:    []string{`tx AT%JWT=0,300,"",""`, "rx %JWT: " + fingerprint(jwt), "rx OK"},
			secrets: []string{"c2lnbmF0dXJlc2VjcmV0", "eyJpc3Mi"},
		},
		{
			name:    "attestation token",
			rx:      []string{"%ATTESTTOKEN: \"2dn3hQFQUE1WMjc5QvuAyBQR.0oRDoQEm\"\r\n"},
			want:    []string{"rx %ATTESTTOKEN: " + fingerprint("2dn3hQFQUE1WMjc5QvuAyBQR.0oRDoQEm")},
			secrets: []string{"2dn3hQFQUE1WMjc5QvuAyBQR"},
		},
		{
			name: "KEYINJECT over several lines, then a normal command",
			tx:   []string{"AT%KEYINJECT=42,2,\"" + privPEM + "\"\r\n", "AT\r\n"},
			want: []string{
				"tx AT%KEYINJECT=" + fingerprint("42,2,\"-----BEGIN PRIVATE KEY-----"),
				"tx <redacted>", "tx <redacted>", "tx <redacted>", "tx AT",
			},
			secrets: []string{"MIGHAgEAMBMG"},
		},
		{
			name: "secrets in every part of a concatenated command",
			tx: []string{`AT+CFUN=4;%CMNG=0,42,3,"70736b736563726574";+CFUN?;%KEYINJECT=43,2,"a;b"` + "\r\n",
				`at+cfun=4;%cmng=0,44,2,"` + privPEM + "\"\r\n", "AT+CFUN?;+CMEE?\r\n"},
			want: []string{
				"tx AT+CFUN=4;%CMNG=0,42,3," + fingerprint(`"70736b736563726574"`) + ";+CFUN?;%KEYINJECT=" + fingerprint(`43,2,"a;b"`),
				"tx at+cfun=4;%cmng=0,44,2," + fingerprint(`"-----BEGIN PRIVATE KEY-----`),
				"tx <redacted>", "tx <redacted>", "tx <redacted>",
				"tx AT+CFUN?;+CMEE?",
			},
			secrets: []string{"70736b736563726574", "a;b", "MIGHAgEAMBMG"},
		},
		{
			name: "CMNG private key write, echoed",
			tx:   []string{"AT%CMNG=0,42,2,\"" + privPEM + "\"\r\n"},
			rx:   []string{"AT%CMNG=0,42,2,\"" + privPEM + "\"\r\n", "OK\r\n"},
			want: []string{
				"tx AT%CMNG=0,42,2," + fingerprint(`"-----BEGIN PRIVATE KEY-----`),
				"tx <redacted>", "tx <redacted>", "tx <redacted>",
				"rx AT%CMNG=0,42,2," + fingerprint(`"-----BEGIN PRIVATE KEY-----`),
				"rx <redacted>", "rx <redacted>", "rx <redacted>", "rx OK",
			},
			secrets: []string{"MIGHAgEAMBMG"},
		},
		{
			name:    "CMNG PSK write on one line",
			tx:      []string{"AT%CMNG=0,7,3,\"0011223344\"\r\n"},
			want:    []string{"tx AT%CMNG=0,7,3," + fingerprint(`"0011223344"`)},
			secrets: []string{"0011223344"},
		},
		{
			name: "CMNG certificate write is not secret",
			tx:   []string{"AT%CMNG=0,42,0,\"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\"\r\n"},
			want: []string{"tx AT%CMNG=0,42,0,\"-----BEGIN CERTIFICATE-----", "tx MIIB", "tx -----END CERTIFICATE-----\""},
		},
		{
			name: "CMNG list lines are not secret",
			rx:   []string{"%CMNG: 42,2,\"0123ABCD\"\r\n%CMNG: 42\r\n"},
			want: []string{"rx %CMNG: 42,2,\"0123ABCD\"", "rx %CMNG: 42"},
		},
		{
			name:    "CMNG read of a PSK",
			rx:      []string{"%CMNG: 7,3,\"AB\",\"0011223344\"\r\n"},
			want:    []string{"rx %CMNG: 7,3,\"AB\"," + fingerprint(`"0011223344"`)},
			secrets: []string{"0011223344"},
		},
		{
			name:    "bare PEM private key",
			rx:      []string{privPEM, "OK\r\n"},
			want:    []string{"rx <redacted private key>", "rx <redacted private key>", "rx <redacted private key>", "rx OK"},
			secrets: []string{"MIGHAgEAMBMG"},
		},
		{
			name: "non-printable bytes quoted",
			rx:   []string{"\x00OK\xff\r\n"},
			want: []string{`rx "\x00OK\xff"`},
		},
		{
			name: "overlong line truncated",
			rx:   []string{strings.Repeat("x", maxLineLen+5) + "\r\n"},
			want: []string{"rx " + strings.Repeat("x", maxLineLen) + " …(5 more bytes)"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(nil)
			f.handler = func(string) []item { return []item{} } // a modem that never answers
			var l traceLog
			tr := NewTracer(f, l.log)
			for _, s := range tc.tx {
				if _, err := tr.Write([]byte(s)); err != nil {
					t.Fatal(err)
				}
			}
			for _, s := range tc.rx {
				f.inject(item{data: s})
				buf := make([]byte, len(s))
				if _, err := io.ReadFull(tr, buf); err != nil {
					t.Fatal(err)
				}
			}
			got := l.get()
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
			for _, line := range got {
				for _, s := range tc.secrets {
					if strings.Contains(line, s) {
						t.Errorf("secret %q logged in %q", s, line)
					}
				}
			}
		})
	}
}

func TestTracerWithClient(t *testing.T) {
	f := newFake(map[string][]item{"AT+CFUN?\r\n": say("+CEREG: 1\r\n+CFUN: 4\r\nOK\r\n")})
	var l traceLog
	c := New(NewTracer(f, l.log), Config{})
	if _, err := c.Command(context.Background(), "AT+CFUN?"); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil { // closes the fake through the tracer
		t.Fatal(err)
	}
	want := []string{"tx AT+CMEE?", "rx +CMEE: 0", "rx OK", // the opening probe
		"tx AT+CFUN?", "rx +CEREG: 1", "rx +CFUN: 4", "rx OK"}
	if got := l.get(); !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestTracerCloseWithoutCloser(t *testing.T) {
	tr := NewTracer(noCloser{newFake(nil)}, func(string, string) {})
	if err := tr.(io.Closer).Close(); err != nil {
		t.Errorf("got %v", err)
	}
}

func TestTracerPassesErrors(t *testing.T) {
	f := newFake(nil)
	f.writeErr = errors.New("broken")
	tr := NewTracer(f, func(string, string) {})
	if _, err := tr.Write([]byte("AT\r\n")); err == nil {
		t.Error("write error swallowed")
	}
}

func TestTracerShortWrites(t *testing.T) {
	f := newFake(nil)
	f.maxWrite = 3
	f.handler = func(string) []item { return []item{} }
	var l traceLog
	tr := NewTracer(f, l.log)
	if err := writeFull(tr, []byte("AT+CFUN=4\r\n")); err != nil {
		t.Fatal(err)
	}
	// A caller that gives up after a short write and sends something else is logged as sent.
	if _, err := tr.Write([]byte("AT+CMEE?\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Write([]byte("AT\r\n")); err != nil {
		t.Fatal(err)
	}
	want := []string{"tx AT+CFUN=4", "tx AT+CMEE?", "tx AT"}
	if got := l.get(); !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
