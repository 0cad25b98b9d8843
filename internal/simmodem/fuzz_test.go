package simmodem

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

// fuzzRW collects what the engine writes.
type fuzzRW struct{ bytes.Buffer }

func (f *fuzzRW) Read([]byte) (int, error) { return 0, io.EOF }

// FuzzEngine feeds arbitrary bytes to the framer and the AT engine: it must not panic, and
// every answer must be CR LF framed lines ending in a final result.
func FuzzEngine(f *testing.F) {
	for _, s := range []string{
		"AT\r\n", "AT+CFUN=1\r", "AT%CMNG=0,1,0,\"-----BEGIN X-----\r\nAA\r\n-----END X-----\r\n\"\r\n",
		"AT%CMNG=1\n", "AT%KEYGEN=1,2,1\r\n", `AT%JWT=0,0,"a","b",1,2` + "\r\n", "AT+CCLK=\"26/01/01,00:00:00+00\"\r",
		"ATE1\rAT+CMEE=1\rAT%CMNG=2,1,0\r", "AT%ATTESTTOKEN=00112233445566778899aabbccddeeff\r", "\x00\xff\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := New(Config{MaxCommandLen: 256})
		if err != nil {
			t.Fatal(err)
		}
		rw := &fuzzRW{}
		s := &session{m: m, rw: rw, framer: framer{mode: LineEndingAny, max: 256}}
		ctx := context.Background()
		commands := 0
		for _, b := range in {
			cmd, st := s.framer.feed(b)
			if st == frameNone {
				continue
			}
			if strings.ContainsRune(cmd, 0) && !strings.Contains(cmd, `"`) {
				t.Fatalf("NUL inside an unquoted command %q", cmd)
			}
			commands++
			if err := s.execute(ctx, cmd, st == frameTooLong); err != nil {
				t.Fatal(err)
			}
		}
		out := rw.String()
		if commands == 0 {
			if out != "" {
				t.Fatalf("output %q without a command", out)
			}
			return
		}
		if !strings.HasSuffix(out, "\r\n") {
			t.Fatalf("output %q does not end in CR LF", out)
		}
		finals := 0
		for _, l := range strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n") {
			if isFinal(l) {
				finals++
			}
		}
		if finals < commands {
			t.Fatalf("%d commands but %d final results in %q", commands, finals, out)
		}
		m.mu.Lock()
		if m.regTimer != nil {
			m.regTimer.Stop()
		}
		m.mu.Unlock()
	})
}
