package atmodem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// parseSeeds are modem outputs for FuzzParse and TestParseEndToEnd.
var parseSeeds = []string{
	"+CFUN: 4\r\nOK\r\n",
	"\r\n+CEREG: 1\r\n+CFUN: 1\r\n%CESQ: 1\r\n",
	"AT+CFUN?\r\n+CFUN: 0\r\n",
	"+CME ERROR: 518\r\n",
	"+CMS ERROR: x\r\nERROR\r\n",
	"Ready\r\n\x00\xff\xfe+CFUN: \x01",
	"%KEYGEN: \"a.b\"\r\nOK\r\n+CSCON: 1\r\n",
	"\r\r\n\n\r",
	"%KEYGEN: \"late\"\r\nOK\r\n+CMEE: 1\r\nOK\r\n",
}

// FuzzParse feeds arbitrary modem output to a client with a command pending, followed by a
// final OK. It drives the client's line splitter and state machine on the fuzzing goroutine
// (the writer is simulated), so runs are deterministic, as coverage-guided fuzzing needs.
// Knobs: bit 0 echo, bit 1 one byte at a time, bit 2 start stale (resync probe first).
// There must be no panic, and a well-formed response whenever the command completes, which
// it must when not stale.
func FuzzParse(f *testing.F) {
	for _, seed := range parseSeeds {
		for _, k := range []byte{0, 3, 4} {
			f.Add(k, []byte(seed))
		}
	}
	f.Fuzz(func(t *testing.T, knobs byte, data []byte) {
		c := newState(nil, Config{})
		c.unsynced = false // as after the opening probe: this parses answers, not the resync
		stale := knobs&4 != 0
		if stale {
			c.unanswered, c.staleAnswer = 1, "%KEYGEN:"
		}
		req := &request{ctx: context.Background(), cmd: "AT+CFUN?", wire: []byte("AT+CFUN?\r\n"),
			name: "AT+CFUN", res: make(chan result, 1)}
		var writes []string
		pump := func() { // the writer: take each write at once
			for {
				select {
				case b := <-c.writes:
					writes = append(writes, string(b))
					if err := c.onWriteDone(nil); err != nil {
						t.Fatal(err)
					}
				default:
					return
				}
			}
		}
		c.begin(req)
		defer c.timer.Stop()
		pump()
		sp := lineSplitter{max: 40} // a short limit keeps inputs that reach it small
		feed := func(p []byte) {
			c.split(&sp, p, func(ev readEvent) bool {
				if err := c.onEvent(ev); err != nil {
					t.Fatal(err)
				}
				pump()
				return true
			})
		}
		input := append([]byte(nil), data...)
		if knobs&1 != 0 {
			input = append([]byte("AT+CFUN?\r\n"), input...)
		}
		if knobs&2 != 0 {
			for i := range input {
				feed(input[i : i+1])
			}
		} else {
			feed(input)
		}
		// An answer holding another probe's line (+CMEE:, +CFUN:, +CGSN:) is taken for a late
		// probe answer and discarded up to its final result, so the command may need more
		// final results than one; each line of input can use up at most one.
		var r result
		for range bytes.Count(input, []byte("\n")) + bytes.Count(input, []byte("\r")) + 2 {
			feed([]byte("\r\nOK\r\n"))
			select {
			case r = <-req.res:
				checkParsed(t, r.resp, r.err)
				return
			default:
			}
		}
		if !stale {
			t.Fatalf("no result; wrote %q", writes)
		}
	})
}

// TestParseOverlongEndToEnd is the overlong-line case of TestParseEndToEnd at the real limit.
func TestParseOverlongEndToEnd(t *testing.T) {
	fake := newFake(map[string][]item{"AT+CFUN?\r\n": say(strings.Repeat("A", maxLineLen+3) + "\r\nOK\r\n")})
	c := newClient(t, fake, Config{})
	resp, err := c.Command(context.Background(), "AT+CFUN?")
	checkErr(t, err, ErrLineTooLong)
	checkParsed(t, resp, err)
}

// checkParsed checks what Command returned for AT+CFUN? is a well-formed response.
func checkParsed(t *testing.T, resp Response, err error) {
	t.Helper()
	var cme *CMEError
	var cms *CMSError
	switch {
	case err == nil, errors.Is(err, ErrError), errors.As(err, &cme), errors.As(err, &cms), errors.Is(err, ErrLineTooLong):
	default:
		t.Fatalf("unexpected error %v", err)
	}
	if classifyFinal(resp.Final) == notFinal {
		t.Fatalf("final %q is not a final result", resp.Final)
	}
	var raw strings.Builder
	for _, l := range resp.Lines {
		if l == "" || !printable(l) || l != trimSpace(l) {
			t.Fatalf("bad line %q", l)
		}
		if isURC(l, "+CFUN:") || classifyFinal(l) != notFinal || isBanner(l) {
			t.Fatalf("line %q must not be in a response", l)
		}
		raw.WriteString(l + "\r\n")
	}
	raw.WriteString(resp.Final + "\r\n")
	if resp.Raw != raw.String() {
		t.Fatalf("raw %q does not match lines %q and final %q", resp.Raw, resp.Lines, resp.Final)
	}
}

// TestParseEndToEnd runs the FuzzParse seeds through a running client and the fake port.
func TestParseEndToEnd(t *testing.T) {
	for i, seed := range parseSeeds {
		for _, knobs := range []byte{0, 1, 2, 3} {
			t.Run(fmt.Sprintf("seed%d/knobs%d", i, knobs), func(t *testing.T) {
				fake := newFake(nil)
				fake.echo = knobs&1 != 0
				fake.oneByte = knobs&2 != 0
				fake.handler = func(cmd string) []item {
					if cmd == "AT+CFUN?\r\n" {
						return []item{{data: seed}, {data: "\r\nOK\r\n"}}
					}
					return nil
				}
				c := newClient(t, fake, Config{})
				resp, err := c.Command(context.Background(), "AT+CFUN?")
				checkParsed(t, resp, err)
			})
		}
	}
}

// FuzzTracer writes and reads arbitrary bytes through the tracer: no panic, every logged
// line printable, and a JWT answer's token never logged.
func FuzzTracer(f *testing.F) {
	f.Add([]byte("AT%CMNG=0,1,2,\"x\ny\"\r\n"), []byte("%JWT: \"SECRETTOKEN\"\r\n"))
	f.Add([]byte("AT%KEYINJECT=\r\n"), []byte("%CMNG: 1,3,\"a\",\"b\r\n"))
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\r\n"), []byte("%CMNG: ,,,,\r\n"))
	f.Fuzz(func(t *testing.T, tx, rx []byte) {
		fake := newFake(nil)
		fake.handler = func(string) []item { return []item{} }
		var l traceLog
		tr := NewTracer(fake, l.log)
		tr.(*tracer).rx.max, tr.(*tracer).tx.max = 40, 40 // keeps inputs that reach it small
		if _, err := tr.Write(tx); err != nil {
			t.Fatal(err)
		}
		fake.inject(item{data: string(rx) + "\r\n%JWT: \"SECRETTOKEN\"\r\n"})
		buf := make([]byte, 64)
		for read := 0; read < len(rx)+len("\r\n%JWT: \"SECRETTOKEN\"\r\n"); {
			n, err := tr.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			read += n
		}
		lines := l.get()
		for _, line := range lines {
			if !utf8.ValidString(line) {
				t.Fatalf("invalid UTF-8 logged: %q", line)
			}
		}
		if last := lines[len(lines)-1]; strings.Contains(last, "SECRETTOKEN") {
			t.Fatalf("token logged: %q", last)
		}
	})
}
