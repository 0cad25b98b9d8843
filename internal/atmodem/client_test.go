package atmodem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newClient starts a client on f and closes it when the test ends.
func newClient(t *testing.T, f *fakePort, cfg Config) *Client {
	t.Helper()
	c := New(f, cfg)
	t.Cleanup(func() { c.Close() })
	return c
}

const testPEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUSZ+Q\n+CEREG8fR0qp\n-----END CERTIFICATE-----\n"

func TestCommand(t *testing.T) {
	long := strings.Repeat("A", maxLineLen+10)
	tests := []struct {
		name      string
		cfg       Config
		knobs     func(f *fakePort)
		script    map[string][]item
		cmd       string
		wantLines []string
		wantFinal string
		wantRaw   string
		wantErr   error
		wantURCs  []string
	}{
		{
			name:      "plain OK",
			script:    map[string][]item{"AT\r\n": say("OK\r\n")},
			cmd:       "AT",
			wantFinal: "OK", wantRaw: "OK\r\n",
		},
		{
			name:      "information line",
			script:    map[string][]item{"AT+CFUN?\r\n": say("+CFUN: 4\r\nOK\r\n")},
			cmd:       "AT+CFUN?",
			wantLines: []string{"+CFUN: 4"}, wantFinal: "OK", wantRaw: "+CFUN: 4\r\nOK\r\n",
		},
		{
			name:      "V.250 framing with blank lines",
			script:    map[string][]item{"AT+CFUN?\r\n": say("\r\n+CFUN: 1\r\n\r\n\r\nOK\r\n")},
			cmd:       "AT+CFUN?",
			wantLines: []string{"+CFUN: 1"}, wantFinal: "OK", wantRaw: "+CFUN: 1\r\nOK\r\n",
		},
		{
			name:      "keygen raw text kept verbatim",
			script:    map[string][]item{"AT%KEYGEN=16842753,2,0\r\n": say("%KEYGEN: \"MIIB-x_y.0oRDoQEm\"\r\nOK\r\n")},
			cmd:       "AT%KEYGEN=16842753,2,0",
			wantLines: []string{`%KEYGEN: "MIIB-x_y.0oRDoQEm"`}, wantFinal: "OK",
			wantRaw: "%KEYGEN: \"MIIB-x_y.0oRDoQEm\"\r\nOK\r\n",
		},
		{
			name:      "plain ERROR",
			script:    map[string][]item{"AT%FOO\r\n": say("ERROR\r\n")},
			cmd:       "AT%FOO",
			wantFinal: "ERROR", wantRaw: "ERROR\r\n", wantErr: ErrError,
		},
		{
			name:      "CME error with code",
			script:    map[string][]item{"AT%CMNG=3,42,0\r\n": say("+CME ERROR: 518\r\n")},
			cmd:       "AT%CMNG=3,42,0",
			wantFinal: "+CME ERROR: 518", wantRaw: "+CME ERROR: 518\r\n",
			wantErr: &CMEError{Code: 518, Raw: "+CME ERROR: 518"},
		},
		{
			name:      "CME error in text form",
			script:    map[string][]item{"AT+CFUN=9\r\n": say("+CME ERROR: operation not allowed\r\n")},
			cmd:       "AT+CFUN=9",
			wantFinal: "+CME ERROR: operation not allowed", wantRaw: "+CME ERROR: operation not allowed\r\n",
			wantErr: &CMEError{Code: -1, Raw: "+CME ERROR: operation not allowed"},
		},
		{
			name:      "CMS error",
			script:    map[string][]item{"AT+CMGS=1\r\n": say("+CMS ERROR: 500\r\n")},
			cmd:       "AT+CMGS=1",
			wantFinal: "+CMS ERROR: 500", wantRaw: "+CMS ERROR: 500\r\n",
			wantErr: &CMSError{Code: 500, Raw: "+CMS ERROR: 500"},
		},
		{
			name: "URCs before, inside and after",
			script: map[string][]item{"AT+CFUN?\r\n": {
				{data: "+CEREG: 2\r\n"}, {data: "+CFUN: 1\r\n%CESQ: 54,2,16,2\r\n"},
				{data: "OK\r\n+CSCON: 1\r\n"},
			}},
			cmd:       "AT+CFUN?",
			wantLines: []string{"+CFUN: 1"}, wantFinal: "OK", wantRaw: "+CFUN: 1\r\nOK\r\n",
			wantURCs: []string{"+CEREG: 2", "%CESQ: 54,2,16,2", "+CSCON: 1"},
		},
		{
			name:      "URC prefix that is the command's own answer",
			script:    map[string][]item{"AT+CEREG?\r\n": say("+CEREG: 5,1,\"0A0B\"\r\n%XTIME: \"01\"\r\nOK\r\n")},
			cmd:       "AT+CEREG?",
			wantLines: []string{`+CEREG: 5,1,"0A0B"`}, wantFinal: "OK", wantRaw: "+CEREG: 5,1,\"0A0B\"\r\nOK\r\n",
			wantURCs: []string{`%XTIME: "01"`},
		},
		{
			name:      "echo stripped",
			knobs:     func(f *fakePort) { f.echo = true },
			script:    map[string][]item{"AT+CMEE?\r\n": say("+CMEE: 1\r\nOK\r\n")},
			cmd:       "AT+CMEE?",
			wantLines: []string{"+CMEE: 1"}, wantFinal: "OK", wantRaw: "+CMEE: 1\r\nOK\r\n",
		},
		{
			name:  "echo of a multi-line PEM command stripped",
			knobs: func(f *fakePort) { f.echo = true; f.oneByte = true },
			script: map[string][]item{
				"AT%CMNG=0,42,0,\"" + testPEM + "\"\r\n": say("OK\r\n"),
			},
			cmd:       "AT%CMNG=0,42,0,\"" + testPEM + "\"",
			wantFinal: "OK", wantRaw: "OK\r\n",
		},
		{
			name:      "URC before the echo does not end echo detection",
			script:    map[string][]item{"AT+CFUN?\r\n": say("+CEREG: 1\r\nAT+CFUN?\r\n+CFUN: 4\r\nOK\r\n")},
			cmd:       "AT+CFUN?",
			wantLines: []string{"+CFUN: 4"}, wantFinal: "OK", wantRaw: "+CFUN: 4\r\nOK\r\n",
			wantURCs: []string{"+CEREG: 1"},
		},
		{
			name:      "Ready banner ignored",
			script:    map[string][]item{"AT#XRESET\r\n": say("OK\r\nReady\r\n")},
			cmd:       "AT#XRESET",
			wantFinal: "OK", wantRaw: "OK\r\n",
		},
		{
			name:      "banner inside a response ignored",
			script:    map[string][]item{"AT+CGSN\r\n": say("Ready\r\n352656100367872\r\nOK\r\n")},
			cmd:       "AT+CGSN",
			wantLines: []string{"352656100367872"}, wantFinal: "OK", wantRaw: "352656100367872\r\nOK\r\n",
		},
		{
			name:      "NULs and invalid UTF-8 removed",
			script:    map[string][]item{"AT+CFUN?\r\n": say("\x00\x00+CFUN: \xff4\r\n\xfe\r\n\x00OK\r\n")},
			cmd:       "AT+CFUN?",
			wantLines: []string{"+CFUN: 4"}, wantFinal: "OK", wantRaw: "+CFUN: 4\r\nOK\r\n",
		},
		{
			name:      "bare CR and bare LF line ends",
			script:    map[string][]item{"AT+CFUN?\r\n": say("+CFUN: 0\rOK\n")},
			cmd:       "AT+CFUN?",
			wantLines: []string{"+CFUN: 0"}, wantFinal: "OK", wantRaw: "+CFUN: 0\r\nOK\r\n",
		},
		{
			name:      "one byte per read",
			knobs:     func(f *fakePort) { f.oneByte = true },
			script:    map[string][]item{"AT%SHORTSWVER\r\n": say("%SHORTSWVER: nrf9160_1.3.5\r\nOK\r\n")},
			cmd:       "AT%SHORTSWVER",
			wantLines: []string{"%SHORTSWVER: nrf9160_1.3.5"}, wantFinal: "OK",
			wantRaw: "%SHORTSWVER: nrf9160_1.3.5\r\nOK\r\n",
		},
		{
			name:      "short writes",
			knobs:     func(f *fakePort) { f.maxWrite = 3 },
			script:    map[string][]item{"AT%CMNG=0,42,0,\"" + testPEM + "\"\r\n": say("OK\r\n")},
			cmd:       "AT%CMNG=0,42,0,\"" + testPEM + "\"",
			wantFinal: "OK", wantRaw: "OK\r\n",
		},
		{
			name:      "CR line ending",
			cfg:       Config{LineEnding: "cr"},
			knobs:     func(f *fakePort) { f.term = "\r" },
			script:    map[string][]item{"AT+CMEE=1\r": say("OK\r\n")},
			cmd:       "AT+CMEE=1",
			wantFinal: "OK", wantRaw: "OK\r\n",
		},
		{
			name:      "LF line ending",
			cfg:       Config{LineEnding: "LF"},
			knobs:     func(f *fakePort) { f.term = "\n" },
			script:    map[string][]item{"AT+CMEE=1\n": say("OK\r\n")},
			cmd:       "AT+CMEE=1",
			wantFinal: "OK", wantRaw: "OK\r\n",
		},
		{
			name:      "overlong line inside a response",
			script:    map[string][]item{"AT+CGMR\r\n": say("mfw_nrf9160_1.3.5\r\n" + long + "\r\nOK\r\n")},
			cmd:       "AT+CGMR",
			wantLines: []string{"mfw_nrf9160_1.3.5"}, wantFinal: "OK", wantRaw: "mfw_nrf9160_1.3.5\r\nOK\r\n",
			wantErr: ErrLineTooLong,
		},
		{
			name:      "late delivery in chunks",
			script:    map[string][]item{"AT+CFUN?\r\n": {{data: "+CF", delay: time.Millisecond}, {data: "UN: 4\r", delay: time.Millisecond}, {data: "\nO"}, {data: "K\r\n"}}},
			cmd:       "AT+CFUN?",
			wantLines: []string{"+CFUN: 4"}, wantFinal: "OK", wantRaw: "+CFUN: 4\r\nOK\r\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(tc.script)
			if tc.knobs != nil {
				tc.knobs(f)
			}
			var mu sync.Mutex
			var urcs []string
			cfg := tc.cfg
			cfg.OnURC = func(l string) { mu.Lock(); urcs = append(urcs, l); mu.Unlock() }
			c := newClient(t, f, cfg)
			resp, err := c.Command(context.Background(), tc.cmd)
			checkErr(t, err, tc.wantErr)
			if !reflect.DeepEqual(resp.Lines, tc.wantLines) || resp.Final != tc.wantFinal || resp.Raw != tc.wantRaw {
				t.Errorf("got lines %q final %q raw %q, want %q %q %q", resp.Lines, resp.Final, resp.Raw,
					tc.wantLines, tc.wantFinal, tc.wantRaw)
			}
			if len(f.unknown) != 0 {
				t.Errorf("fake got unscripted commands %q", f.unknown)
			}
			if tc.wantURCs != nil {
				waitFor(t, "URCs", func() bool { mu.Lock(); defer mu.Unlock(); return len(urcs) >= len(tc.wantURCs) })
				mu.Lock()
				if !reflect.DeepEqual(urcs, tc.wantURCs) {
					t.Errorf("got URCs %q, want %q", urcs, tc.wantURCs)
				}
				mu.Unlock()
			}
		})
	}
}

// checkErr compares err with want: errors.Is for sentinels, field equality for the typed
// errors, nil for success.
func checkErr(t *testing.T, err, want error) {
	t.Helper()
	switch w := want.(type) {
	case nil:
		if err != nil {
			t.Fatalf("got error %v, want none", err)
		}
	case *CMEError:
		var got *CMEError
		if !errors.As(err, &got) || *got != *w {
			t.Fatalf("got error %v, want %#v", err, w)
		}
	case *CMSError:
		var got *CMSError
		if !errors.As(err, &got) || *got != *w {
			t.Fatalf("got error %v, want %#v", err, w)
		}
	default:
		if !errors.Is(err, want) {
			t.Fatalf("got error %v, want %v", err, want)
		}
	}
}

func TestCommandRefusedBeforeWriting(t *testing.T) {
	atLimit := "AT%CMNG=0,1,0,\"" + strings.Repeat("x", DefaultMaxCommandLen-2-len("AT%CMNG=0,1,0,\"\"")) + "\""
	tests := []struct {
		name    string
		cfg     Config
		cmd     string
		wantErr error
	}{
		{name: "one byte over the limit", cmd: atLimit + "x", wantErr: ErrCommandTooLong},
		{name: "over a configured limit", cfg: Config{MaxCommandLen: 10}, cmd: "AT+CFUN=44", wantErr: ErrCommandTooLong},
		{name: "cr terminator counts", cfg: Config{MaxCommandLen: 4, LineEnding: "cr"}, cmd: "AT+C", wantErr: ErrCommandTooLong},
		{name: "empty", cmd: "", wantErr: ErrInvalidCommand},
		{name: "blank", cmd: "  ", wantErr: ErrInvalidCommand},
		{name: "CRLF outside quotes", cmd: "AT\r\nAT+CFUN=0", wantErr: ErrInvalidCommand},
		{name: "LF outside quotes", cmd: "AT+CFUN=4\n", wantErr: ErrInvalidCommand},
		{name: "NUL", cmd: "AT\x00", wantErr: ErrInvalidCommand},
		{name: "unbalanced quote", cmd: `AT%CMNG=0,1,0,"abc`, wantErr: ErrInvalidCommand},
		{name: "bad line ending config", cfg: Config{LineEnding: "crcr"}, cmd: "AT", wantErr: ErrInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(nil)
			c := newClient(t, f, tc.cfg)
			_, err := c.Command(context.Background(), tc.cmd)
			checkErr(t, err, tc.wantErr)
			if got := f.commands(); len(got) != 0 || len(f.acc) != 0 {
				t.Errorf("wrote %q %q, want nothing", got, f.acc)
			}
		})
	}
	t.Run("exactly at the limit is sent", func(t *testing.T) {
		if len(atLimit)+2 != DefaultMaxCommandLen {
			t.Fatalf("test command is %d bytes", len(atLimit)+2)
		}
		f := newFake(map[string][]item{atLimit + "\r\n": say("OK\r\n")})
		c := newClient(t, f, Config{})
		if _, err := c.Command(context.Background(), atLimit); err != nil {
			t.Fatalf("got %v, want OK", err)
		}
	})
}

func TestPortLost(t *testing.T) {
	tests := []struct {
		name  string
		reply []item
		knobs func(f *fakePort)
		wrap  func(f *fakePort) io.ReadWriter
		cause error
	}{
		{name: "EOF mid-response", reply: []item{{data: "+CFUN: 4\r\n"}, {err: io.EOF}}, cause: io.EOF},
		{name: "EIO before any answer", reply: []item{{err: syscall.EIO}}, cause: syscall.EIO},
		{name: "EOF inside a line", reply: []item{{data: "+CF"}, {err: io.EOF}}, cause: io.EOF},
		{name: "write fails", knobs: func(f *fakePort) { f.writeErr = syscall.EIO }, cause: syscall.EIO},
		{name: "writer makes no progress", wrap: func(f *fakePort) io.ReadWriter { return zeroWriter{f} }, cause: io.ErrShortWrite},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(map[string][]item{"AT+CFUN?\r\n": tc.reply})
			if tc.knobs != nil {
				tc.knobs(f)
			}
			var rw io.ReadWriter = f
			if tc.wrap != nil {
				rw = tc.wrap(f)
			}
			c := New(rw, Config{})
			defer c.Close()
			_, err := c.Command(context.Background(), "AT+CFUN?")
			if !errors.Is(err, ErrPortLost) || !errors.Is(err, tc.cause) {
				t.Fatalf("got %v, want ErrPortLost caused by %v", err, tc.cause)
			}
			<-c.Done()
			if !errors.Is(c.Err(), ErrPortLost) {
				t.Errorf("Err() = %v, want ErrPortLost", c.Err())
			}
			if _, err := c.Command(context.Background(), "AT"); !errors.Is(err, ErrPortLost) {
				t.Errorf("later command: got %v, want ErrPortLost", err)
			}
			if err := c.Close(); err != nil {
				t.Errorf("Close after loss: %v", err)
			}
		})
	}
}

// zeroWriter accepts nothing and reports no error, like a stuck driver.
type zeroWriter struct{ *fakePort }

func (zeroWriter) Write(p []byte) (int, error) { return 0, nil }

func TestPortLostWhileIdle(t *testing.T) {
	f := newFake(nil)
	c := newClient(t, f, Config{})
	urcs, _ := c.Subscribe()
	f.inject(item{data: "+CEREG: 1\r\n"}, item{err: syscall.EIO})
	if got := <-urcs; got != "+CEREG: 1" {
		t.Errorf("got URC %q", got)
	}
	<-c.Done()
	if _, ok := <-urcs; ok {
		t.Error("subscription still open after the port was lost")
	}
	if _, err := c.Command(context.Background(), "AT"); !errors.Is(err, ErrPortLost) || !errors.Is(err, syscall.EIO) {
		t.Errorf("got %v, want ErrPortLost (EIO)", err)
	}
}

func TestClose(t *testing.T) {
	f := newFake(map[string][]item{"AT%KEYGEN=1,2,0\r\n": nil})
	c := New(f, Config{})
	urcs, unsubscribe := c.Subscribe("+CEREG:")
	errc := make(chan error, 1)
	go func() {
		_, err := c.Command(context.Background(), "AT%KEYGEN=1,2,0")
		errc <- err
	}()
	waitFor(t, "the command to be written", func() bool { return len(f.commands()) == 1 })
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("in-flight command: got %v, want ErrClosed", err)
	}
	if _, err := c.Command(context.Background(), "AT"); !errors.Is(err, ErrClosed) {
		t.Errorf("later command: got %v, want ErrClosed", err)
	}
	if !errors.Is(c.Err(), ErrClosed) {
		t.Errorf("Err() = %v", c.Err())
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, ok := <-urcs; ok {
		t.Error("subscription open after Close")
	}
	unsubscribe() // after Close: a no-op, must not panic
	late, unsub2 := c.Subscribe()
	if _, ok := <-late; ok {
		t.Error("subscription after Close is open")
	}
	unsub2()
	select {
	case <-f.closed:
	default:
		t.Error("Close did not close the port")
	}
}

func TestErrWhileRunning(t *testing.T) {
	c := newClient(t, newFake(nil), Config{})
	if err := c.Err(); err != nil {
		t.Errorf("Err() = %v while running", err)
	}
}

// closeErrPort fails its Close, to check Close reports it.
type closeErrPort struct{ *fakePort }

func (p closeErrPort) Close() error { p.fakePort.Close(); return errors.New("close failed") }

func TestCloseReportsPortError(t *testing.T) {
	c := New(closeErrPort{newFake(nil)}, Config{})
	if err := c.Close(); err == nil || err.Error() != "close failed" {
		t.Errorf("got %v, want the port's close error", err)
	}
}

// noCloser hides Close: the client cannot close it and must not wait for its reader.
type noCloser struct{ f *fakePort }

func (n noCloser) Read(p []byte) (int, error)  { return n.f.Read(p) }
func (n noCloser) Write(p []byte) (int, error) { return n.f.Write(p) }

func TestCloseWithoutCloser(t *testing.T) {
	f := newFake(map[string][]item{"AT\r\n": say("OK\r\n")})
	c := New(noCloser{f}, Config{})
	if _, err := c.Command(context.Background(), "AT"); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close() // the owner ends the read; goleak checks the reader then returns
	<-c.ioDone
}

func TestTimeoutThenResync(t *testing.T) {
	tests := []struct {
		name       string
		stale      string            // command that times out
		probe      string            // expected probe
		probeReply string            // what the modem sends after the probe
		next       string            // next command
		nextReply  string            //
		wantLines  []string          //
		echo       bool              //
		extra      map[string][]item // more script
	}{
		{
			name: "stale OK then probe answer", stale: "AT%KEYGEN=1,2,0", probe: "AT+CMEE?\r\n",
			probeReply: "%KEYGEN: \"late.answer\"\r\nOK\r\n+CMEE: 1\r\nOK\r\n",
			next:       "AT+CFUN?", nextReply: "+CFUN: 4\r\nOK\r\n", wantLines: []string{"+CFUN: 4"},
		},
		{
			name: "stale command was CMEE read: other probe", stale: "AT+CMEE?", probe: "AT+CFUN?\r\n",
			probeReply: "+CMEE: 0\r\nOK\r\n+CFUN: 1\r\nOK\r\n",
			next:       "AT+CGSN", nextReply: "352656100367872\r\nOK\r\n", wantLines: []string{"352656100367872"},
		},
		{
			name: "stale error and URCs around", stale: "AT%CMNG=0,1,0,\"x\"", probe: "AT+CMEE?\r\n",
			probeReply: "+CEREG: 1\r\n+CME ERROR: 518\r\n+CMEE: 1\r\n%CESQ: 1\r\nOK\r\n",
			next:       "AT+CFUN?", nextReply: "+CFUN: 4\r\nOK\r\n", wantLines: []string{"+CFUN: 4"},
		},
		{
			name: "probe answered before the stale answer is lost", stale: "AT+CGMR", probe: "AT+CMEE?\r\n",
			probeReply: "+CMEE: 1\r\nOK\r\n",
			next:       "AT+CFUN?", nextReply: "+CFUN: 4\r\nOK\r\n", wantLines: []string{"+CFUN: 4"},
		},
		{
			name: "with echo", stale: "AT+CGMR", probe: "AT+CMEE?\r\n", echo: true,
			probeReply: "mfw_nrf9160_1.3.5\r\nOK\r\n+CMEE: 1\r\nOK\r\n",
			next:       "AT+CFUN?", nextReply: "+CFUN: 4\r\nOK\r\n", wantLines: []string{"+CFUN: 4"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			script := map[string][]item{
				tc.stale + "\r\n": nil,
				tc.probe:          say(tc.probeReply),
				tc.next + "\r\n":  say(tc.nextReply),
			}
			f := newFake(script)
			f.echo = tc.echo
			c := newClient(t, f, Config{})
			_, err := c.Command(expireOn(f, tc.stale+"\r\n"), tc.stale)
			if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("got %v, want ErrTimeout", err)
			}
			resp, err := c.Command(context.Background(), tc.next)
			if err != nil {
				t.Fatalf("next command: %v", err)
			}
			if !reflect.DeepEqual(resp.Lines, tc.wantLines) {
				t.Errorf("got lines %q, want %q", resp.Lines, tc.wantLines)
			}
			want := []string{tc.stale + "\r\n", tc.probe, tc.next + "\r\n"}
			if got := f.commands(); !reflect.DeepEqual(got, want) {
				t.Errorf("wrote %q, want %q", got, want)
			}
			if got := c.Stats().Timeouts; got != 1 {
				t.Errorf("Stats.Timeouts = %d, want 1", got)
			}
		})
	}
}

func TestLateAnswerWhileIdleNeedsNoProbe(t *testing.T) {
	f := newFake(map[string][]item{
		"AT+CGMR\r\n":  nil,
		"AT+CFUN?\r\n": say("+CFUN: 4\r\nOK\r\n"),
	})
	c := newClient(t, f, Config{})
	if _, err := c.Command(expireOn(f, "AT+CGMR\r\n"), "AT+CGMR"); !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	f.inject(item{data: "mfw_nrf9160_1.3.5\r\n+CEREG: 1\r\nOK\r\n"})
	waitFor(t, "the late answer", func() bool { return c.Stats().StaleLines == 2 })
	resp, err := c.Command(context.Background(), "AT+CFUN?")
	if err != nil || resp.Raw != "+CFUN: 4\r\nOK\r\n" {
		t.Fatalf("got %q, %v", resp.Raw, err)
	}
	if got := f.commands(); len(got) != 2 {
		t.Errorf("wrote %q, want no probe", got)
	}
}

// TestLateInfoLineWhileIdleThenProbe: a timed-out read's information line comes while idle,
// its final result only once the resynchronising probe is on the wire. The probe skips that
// final result, and the command after it gets its own answer, not a discarded one.
func TestLateInfoLineWhileIdleThenProbe(t *testing.T) {
	f := newFake(map[string][]item{
		"AT+CFUN?\r\n": nil,
		"AT+CMEE?\r\n": say("OK\r\n+CMEE: 0\r\nOK\r\n"), // the late final result, then its own
		"AT+CGMR\r\n":  say("mfw_nrf91x1_2.0.2\r\nOK\r\n"),
	})
	c := newClient(t, f, Config{})
	if _, err := c.Command(expireOn(f, "AT+CFUN?\r\n"), "AT+CFUN?"); !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	f.inject(item{data: "+CFUN: 4\r\n"})
	waitFor(t, "the late information line", func() bool { return c.Stats().StaleLines == 1 })
	resp, err := c.Command(context.Background(), "AT+CGMR")
	if err != nil || resp.Raw != "mfw_nrf91x1_2.0.2\r\nOK\r\n" {
		t.Fatalf("got %q, %v; want its own answer", resp.Raw, err)
	}
	want := []string{"AT+CFUN?\r\n", "AT+CMEE?\r\n", "AT+CGMR\r\n"}
	if got := f.commands(); !reflect.DeepEqual(got, want) {
		t.Errorf("wrote %q, want %q", got, want)
	}
}

func TestUnansweredProbeGetsADifferentProbe(t *testing.T) {
	f := newFake(map[string][]item{
		"AT+CGMR\r\n":  nil,
		"AT+CMEE?\r\n": nil, // the first probe goes unanswered for now
		// The second probe brings everything late: the CGMR answer, the first probe's
		// answer (whose +CMEE: line must not be taken as this probe's), then its own.
		"AT+CFUN?\r\n": say("mfw\r\nOK\r\n+CMEE: 1\r\nOK\r\n+CFUN: 4\r\nOK\r\n"),
		"AT+CGSN\r\n":  say("352656100367872\r\nOK\r\n"),
	})
	c := newClient(t, f, Config{})
	// The first try writes the command, the second only the probe that goes unanswered.
	for _, written := range []string{"AT+CGMR\r\n", "AT+CMEE?\r\n"} {
		_, err := c.Command(expireOn(f, written), "AT+CGMR")
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("got %v, want ErrTimeout", err)
		}
	}
	resp, err := c.Command(context.Background(), "AT+CGSN")
	if err != nil || !reflect.DeepEqual(resp.Lines, []string{"352656100367872"}) {
		t.Fatalf("got %q, %v", resp.Lines, err)
	}
	want := []string{"AT+CGMR\r\n", "AT+CMEE?\r\n", "AT+CFUN?\r\n", "AT+CGSN\r\n"}
	if got := f.commands(); !reflect.DeepEqual(got, want) {
		t.Errorf("wrote %q, want %q", got, want)
	}
}

func TestTooManyTimeoutsLoseThePort(t *testing.T) {
	f := newFake(map[string][]item{"AT+CGMR\r\n": nil, "AT+CMEE?\r\n": nil, "AT+CFUN?\r\n": nil, "AT+CGSN=1\r\n": nil})
	c := newClient(t, f, Config{MaxTimeouts: 3, CommandTimeout: 2 * time.Millisecond})
	for i := 1; i <= 3; i++ {
		_, err := c.Command(context.Background(), "AT+CGMR")
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("command %d: got %v, want ErrTimeout", i, err)
		}
		if lost := errors.Is(err, ErrPortLost); lost != (i == 3) {
			t.Fatalf("command %d: ErrPortLost = %v (%v)", i, lost, err)
		}
	}
	<-c.Done()
	if _, err := c.Command(context.Background(), "AT"); !errors.Is(err, ErrPortLost) {
		t.Errorf("got %v, want ErrPortLost", err)
	}
}

func TestAnswerResetsTimeoutCount(t *testing.T) {
	f := newFake(map[string][]item{"AT+CGMR\r\n": nil, "AT+CMEE?\r\n": say("+CMEE: 1\r\nOK\r\n"), "AT\r\n": say("OK\r\n")})
	c := newClient(t, f, Config{MaxTimeouts: 2})
	for range 3 {
		_, err := c.Command(expireOn(f, "AT+CGMR\r\n"), "AT+CGMR")
		if !errors.Is(err, ErrTimeout) || errors.Is(err, ErrPortLost) {
			t.Fatalf("got %v, want ErrTimeout only", err)
		}
		if _, err := c.Command(context.Background(), "AT"); err != nil {
			t.Fatalf("AT: %v", err)
		}
	}
}

func TestDefaultTimeoutMessage(t *testing.T) {
	f := newFake(map[string][]item{"AT+CGMR\r\n": nil})
	c := newClient(t, f, Config{CommandTimeout: time.Millisecond})
	_, err := c.Command(context.Background(), "AT+CGMR")
	if !errors.Is(err, ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want ErrTimeout from the default timeout", err)
	}
	if want := "atmodem: AT+CGMR: timeout after 1ms"; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
}

func TestLongCommandsUseLongTimeout(t *testing.T) {
	f := newFake(map[string][]item{"AT+CFUN=4\r\n": {{data: "OK\r\n", delay: 50 * time.Millisecond}}})
	c := newClient(t, f, Config{CommandTimeout: time.Millisecond, LongTimeout: time.Minute})
	if _, err := c.Command(context.Background(), "AT+CFUN=4"); err != nil {
		t.Fatalf("got %v, want OK within the long timeout", err)
	}
}

func TestCancel(t *testing.T) {
	f := newFake(map[string][]item{"AT+CGMR\r\n": nil, "AT+CMEE?\r\n": say("OK\r\n+CMEE: 1\r\nOK\r\n"), "AT\r\n": say("OK\r\n")})
	c := newClient(t, f, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		waitFor(t, "the write", func() bool { return len(f.commands()) == 1 })
		cancel()
	}()
	if _, err := c.Command(ctx, "AT+CGMR"); !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if n := c.Stats().Timeouts; n != 0 {
		t.Errorf("a cancellation counted as %d timeouts", n)
	}
	if _, err := c.Command(ctx, "AT"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled ctx: got %v", err)
	}
	if _, err := c.Command(context.Background(), "AT"); err != nil {
		t.Fatalf("after cancel: %v", err)
	}
	want := []string{"AT+CGMR\r\n", "AT+CMEE?\r\n", "AT\r\n"}
	if got := f.commands(); !reflect.DeepEqual(got, want) {
		t.Errorf("wrote %q, want %q", got, want)
	}
}

// blockingWriter holds every write until release is closed, like a port held by CTS.
type blockingWriter struct {
	*fakePort
	release chan struct{}
}

func (b blockingWriter) Write(p []byte) (int, error) {
	<-b.release
	return b.fakePort.Write(p)
}

func TestStuckWrite(t *testing.T) {
	f := newFake(map[string][]item{"AT+CMEE?\r\n": say("+CMEE: 1\r\nOK\r\n"), "AT+CFUN?\r\n": say("+CFUN: 1\r\nOK\r\n"),
		"AT+CFUN=4\r\n": say("OK\r\n")})
	f.scriptOpen = true
	bw := blockingWriter{f, make(chan struct{})}
	// The first write, the probe a new client sends before its first command, is stuck.
	// The client's own timer, which starts when it takes a command, times the stuck commands
	// out; a short context deadline could pass before that and refuse them unsent. The last
	// command is a long one, so the resync after the stuck write has all the time it needs:
	// the stuck probe's answer comes while idle, and a new client stays unsynchronised until
	// a probe is answered while it waits, so the last command probes again (another probe).
	c := New(bw, Config{CommandTimeout: 20 * time.Millisecond, LongTimeout: time.Minute})
	defer c.Close()
	for _, cmd := range []string{"AT+CGMR", "AT"} {
		// The second command waits for the stuck write of the first and times out too.
		if _, err := c.Command(context.Background(), cmd); !errors.Is(err, ErrTimeout) {
			t.Fatalf("%s: got %v, want ErrTimeout", cmd, err)
		}
	}
	close(bw.release)
	if _, err := c.Command(context.Background(), "AT+CFUN=4"); err != nil {
		t.Fatalf("after the write went through: %v", err)
	}
	want := []string{"AT+CMEE?\r\n", "AT+CFUN?\r\n", "AT+CFUN=4\r\n"}
	if got := f.commands(); !reflect.DeepEqual(got, want) {
		t.Errorf("wrote %q, want %q", got, want)
	}
}

func TestConcurrentCommands(t *testing.T) {
	script := map[string][]item{}
	for i := range 20 {
		script[fmt.Sprintf("AT+CMD%d\r\n", i)] = say(fmt.Sprintf("+CMD%d: %d\r\n+CEREG: %d\r\nOK\r\n", i, i, i))
	}
	f := newFake(script)
	f.oneByte = true
	c := newClient(t, f, Config{})
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Command(context.Background(), fmt.Sprintf("AT+CMD%d", i))
			want := fmt.Sprintf("+CMD%d: %d\r\nOK\r\n", i, i)
			if err != nil || resp.Raw != want {
				t.Errorf("command %d: got %q, %v; want %q", i, resp.Raw, err, want)
			}
		}()
	}
	wg.Wait()
}

func TestSubscribe(t *testing.T) {
	f := newFake(map[string][]item{"AT\r\n": say("OK\r\n")})
	c := newClient(t, f, Config{})
	// Until its opening probe is answered a client takes unknown lines for late answers.
	if _, err := c.Command(context.Background(), "AT"); err != nil {
		t.Fatal(err)
	}
	cereg, stopCereg := c.Subscribe("+CEREG:", "+CSCON:")
	all, _ := c.Subscribe()
	f.inject(item{data: "+CEREG: 1\r\n%XTIME: \"x\"\r\n+CSCON: 0\r\nSOMETHING ODD\r\nOK\r\n"})
	for _, want := range []string{"+CEREG: 1", "+CSCON: 0"} {
		if got := <-cereg; got != want {
			t.Errorf("filtered: got %q, want %q", got, want)
		}
	}
	for _, want := range []string{"+CEREG: 1", `%XTIME: "x"`, "+CSCON: 0", "SOMETHING ODD"} {
		if got := <-all; got != want {
			t.Errorf("all: got %q, want %q", got, want)
		}
	}
	waitFor(t, "the stray OK", func() bool { return c.Stats().StaleLines == 1 })
	stopCereg()
	stopCereg()
	if _, ok := <-cereg; ok {
		t.Error("channel open after unsubscribe")
	}
	// A subscriber that does not read loses URCs, and they are counted.
	for range 70 {
		f.inject(item{data: "+CEREG: 5\r\n"})
	}
	waitFor(t, "dropped URCs", func() bool { return c.Stats().URCsDropped == 6 })
}

func TestGarbageAndOverlongCounted(t *testing.T) {
	f := newFake(map[string][]item{"AT\r\n": say("OK\r\n")})
	c := newClient(t, f, Config{})
	f.inject(item{data: strings.Repeat("x", 3*maxLineLen) + "\r\n\x00\x01\r\n\xff\xfe\r\n"})
	waitFor(t, "the noise", func() bool {
		s := c.Stats()
		return s.OverlongLines == 1 && s.GarbageLines == 2
	})
	if _, err := c.Command(context.Background(), "AT"); err != nil {
		t.Fatalf("after noise: %v", err)
	}
}

// zeroReader returns (0, nil) a few times, as a serial port with a read timeout does.
type zeroReader struct {
	*fakePort
	mu    sync.Mutex
	zeros int
}

func (z *zeroReader) Read(p []byte) (int, error) {
	z.mu.Lock()
	if z.zeros > 0 {
		z.zeros--
		z.mu.Unlock()
		return 0, nil
	}
	z.mu.Unlock()
	return z.fakePort.Read(p)
}

func TestZeroReads(t *testing.T) {
	f := newFake(map[string][]item{"AT\r\n": say("OK\r\n")})
	z := &zeroReader{fakePort: f, zeros: 5}
	c := New(z, Config{})
	defer c.Close()
	if _, err := c.Command(context.Background(), "AT"); err != nil {
		t.Fatal(err)
	}
}

func TestZeroReadsThenClose(t *testing.T) {
	f := newFake(nil)
	z := &zeroReader{fakePort: f, zeros: 1 << 30}
	c := New(z, Config{})
	waitFor(t, "zero reads", func() bool { z.mu.Lock(); defer z.mu.Unlock(); return z.zeros < 1<<30-3 })
	c.Close()
}

func TestErrorStrings(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"CME with hint", &CMEError{Code: 518, Raw: "+CME ERROR: 518"}, "+CME ERROR: 518 (not allowed in active state; set the modem offline (AT+CFUN=4) first)"},
		{"CME unknown code", &CMEError{Code: 999, Raw: "+CME ERROR: 999"}, "+CME ERROR: 999"},
		{"CME text", &CMEError{Code: -1, Raw: "+CME ERROR: busy"}, "+CME ERROR: busy"},
		{"CMS", &CMSError{Code: 500, Raw: "+CMS ERROR: 500"}, "+CMS ERROR: 500"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	for _, code := range []int{0, 23, 50, 51, 60, 513, 514, 515, 518, 519, 520, 523, 525, 527, 528} {
		if (&CMEError{Code: code}).Hint() == "" {
			t.Errorf("no hint for CME %d", code)
		}
	}
}

func TestLineHelpers(t *testing.T) {
	t.Run("answerPrefix", func(t *testing.T) {
		for cmd, want := range map[string]string{
			"AT+CFUN?": "+CFUN:", "at%cmng=1": "%CMNG:", "AT#XSMVER": "#XSMVER:", "AT": "",
			"ATE1": "", "AT+CEREG=5": "+CEREG:", "A": "", "XX+CFUN?": "",
		} {
			if got := answerPrefix(cmd); got != want {
				t.Errorf("answerPrefix(%q) = %q, want %q", cmd, got, want)
			}
		}
	})
	t.Run("commandName", func(t *testing.T) {
		for cmd, want := range map[string]string{
			`AT%CMNG=0,1,0,"secret"`: "AT%CMNG", "AT+CFUN?": "AT+CFUN", "AT": "AT",
			"AT" + strings.Repeat("X", 40): "AT" + strings.Repeat("X", 30),
		} {
			if got := commandName(cmd); got != want {
				t.Errorf("commandName(%q) = %q, want %q", cmd, got, want)
			}
		}
	})
	t.Run("isLong", func(t *testing.T) {
		for cmd, want := range map[string]bool{
			"AT%KEYGEN=1,2,0": true, "at+cfun=4": true, "AT+CFUN?": false, "AT%CMNG=0,1,0,\"x\"": true,
			"AT%CMNG=3,1,0": true, "AT%CMNG=1": false, "AT%KEYINJECT=1,2,\"x\"": true, "AT": false,
		} {
			if got := isLong(cmd); got != want {
				t.Errorf("isLong(%q) = %v", cmd, got)
			}
		}
	})
}

func BenchmarkCommandFake(b *testing.B) {
	f := newFake(map[string][]item{"AT+CFUN?\r\n": say("+CFUN: 4\r\nOK\r\n")})
	c := New(f, Config{})
	defer c.Close()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Command(ctx, "AT+CFUN?"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestNewClientResyncs: answers to commands of the port's previous user (a process killed
// while the modem still worked on them) can arrive at any time after New. A new client
// probes before its first command, unless that command is a constant read (AT%SHORTSWVER,
// AT+CGSN=1) that is its own opening probe, and no late answer is ever taken for one of its
// commands.
func TestNewClientResyncs(t *testing.T) {
	const (
		version = "%SHORTSWVER: nrf91x1_2.0.2" // AT%SHORTSWVER's answer: a constant read
		fw      = "mfw_nrf91x1_2.0.2"          // AT+CGMR's answer: no information line of its own
		imei    = "+CGSN: \"352656100367872\""
		cfun    = "+CFUN: 1\r\nOK\r\n"
	)
	probed := func(first string) []string { return []string{"AT+CMEE?\r\n", first + "\r\n", "AT+CFUN?\r\n"} }
	unprobed := func(first string) []string { return []string{first + "\r\n", "AT+CFUN?\r\n"} }
	tests := []struct {
		name       string
		first      string   // the client's first command
		late       string   // injected right after New, before the first command
		probe      string   // what the modem sends after the opening probe, if one is written
		cmd        string   // what it sends after the first command
		idle       uint64   // if set, stale lines to wait for before the second command
		next       string   // what it sends after the second command, AT+CFUN? (default cfun)
		stale      uint64   // stale lines once both commands are done
		wantRaw    string   // the first command's answer
		wantWrites []string //
	}{
		{name: "late OK", first: "AT+CGMR", late: "OK\r\n",
			probe: "+CMEE: 0\r\nOK\r\n", cmd: fw + "\r\nOK\r\n", stale: 1,
			wantRaw: fw + "\r\nOK\r\n", wantWrites: probed("AT+CGMR")},
		{name: "late ERROR and CME ERROR", first: "AT+CGMR", late: "ERROR\r\n+CME ERROR: 514\r\n",
			probe: "+CMEE: 0\r\nOK\r\n", cmd: fw + "\r\nOK\r\n", stale: 2,
			wantRaw: fw + "\r\nOK\r\n", wantWrites: probed("AT+CGMR")},
		{name: "late information lines", first: "AT+CGMR", late: "%ATTESTTOKEN: \"a.b\"\r\nOK\r\n" + fw + "\r\nOK\r\n",
			probe: "+CMEE: 0\r\nOK\r\n", cmd: fw + "\r\nOK\r\n", stale: 4,
			wantRaw: fw + "\r\nOK\r\n", wantWrites: probed("AT+CGMR")},
		{name: "late answers after the probe was written", first: "AT+CGMR",
			probe: "%KEYGEN: \"c.s\"\r\nOK\r\n+CME ERROR: 518\r\n+CMEE: 0\r\nOK\r\n", cmd: fw + "\r\nOK\r\n", stale: 3,
			wantRaw: fw + "\r\nOK\r\n", wantWrites: probed("AT+CGMR")},
		{name: "late answers of the previous client's probes", first: "AT+CGMR",
			// The previous client's +CMEE? probe is answered first and taken for this one's;
			// then its +CFUN? probe and this client's own probe are answered, during the
			// first command.
			probe: "+CMEE: 0\r\nOK\r\n", cmd: "+CFUN: 4\r\nOK\r\n+CMEE: 0\r\nOK\r\n" + fw + "\r\nOK\r\n", stale: 4,
			wantRaw: fw + "\r\nOK\r\n", wantWrites: probed("AT+CGMR")},
		{name: "a previous probe's answer with more lines", first: "AT+CGMR",
			probe: "+CMEE: 0\r\nOK\r\n", cmd: imei + "\r\nmore\r\nOK\r\n" + fw + "\r\nOK\r\n", stale: 3,
			wantRaw: fw + "\r\nOK\r\n", wantWrites: probed("AT+CGMR")},
		{name: "a read whose value can change is probed", first: "AT+CFUN?", late: "OK\r\n",
			probe: "+CMEE: 0\r\nOK\r\n", cmd: cfun, stale: 1,
			wantRaw: cfun, wantWrites: probed("AT+CFUN?")},
		{name: "constant read: late OK", first: "AT%SHORTSWVER", late: "OK\r\n",
			cmd: version + "\r\nOK\r\n", stale: 1,
			wantRaw: version + "\r\nOK\r\n", wantWrites: unprobed("AT%SHORTSWVER")},
		{name: "constant read: late OK and errors after it was written", first: "AT%SHORTSWVER",
			cmd: "OK\r\nERROR\r\n+CME ERROR: 514\r\n" + version + "\r\nOK\r\n", stale: 3,
			wantRaw: version + "\r\nOK\r\n", wantWrites: unprobed("AT%SHORTSWVER")},
		{name: "constant read: late information lines after it was written", first: "AT%SHORTSWVER",
			cmd: "%ATTESTTOKEN: \"a.b\"\r\nOK\r\n" + fw + "\r\nOK\r\n" + version + "\r\nOK\r\n", stale: 4,
			wantRaw: version + "\r\nOK\r\n", wantWrites: unprobed("AT%SHORTSWVER")},
		{name: "constant read: a previous client's probe answer", first: "AT%SHORTSWVER",
			cmd: "+CMEE: 0\r\nOK\r\n+CFUN: 4\r\nOK\r\n" + version + "\r\nOK\r\n", stale: 4,
			wantRaw: version + "\r\nOK\r\n", wantWrites: unprobed("AT%SHORTSWVER")},
		{name: "constant read: IMEI, late ERROR", first: "AT+CGSN=1", late: "ERROR\r\n",
			cmd: "OK\r\n" + imei + "\r\nOK\r\n", stale: 2,
			wantRaw: imei + "\r\nOK\r\n", wantWrites: unprobed("AT+CGSN=1")},
		{name: "constant read: a previous user's answer to it, then its own during the next command",
			// The previous user's answer is the same (the value is constant); this client's
			// own comes after it and is not the next command's.
			first: "AT%SHORTSWVER", cmd: version + "\r\nOK\r\n",
			next: version + "\r\nOK\r\n" + cfun, stale: 2,
			wantRaw: version + "\r\nOK\r\n", wantWrites: unprobed("AT%SHORTSWVER")},
		{name: "constant read: its own answer split around the next command",
			// The own answer's information line comes while idle; its OK only once the next
			// command is written, and must not be taken for that command's.
			first: "AT%SHORTSWVER", cmd: version + "\r\nOK\r\n" + version + "\r\n", idle: 1,
			next: "OK\r\n" + cfun, stale: 2,
			wantRaw: version + "\r\nOK\r\n", wantWrites: unprobed("AT%SHORTSWVER")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := tt.next
			if next == "" {
				next = cfun
			}
			f := newFake(map[string][]item{
				"AT+CMEE?\r\n":    say(tt.probe),
				"AT+CFUN?\r\n":    say(next),
				tt.first + "\r\n": say(tt.cmd), // for AT+CFUN? first: both answers are cfun
			})
			f.scriptOpen = true
			c := newClient(t, f, Config{})
			if tt.late != "" {
				f.inject(item{data: tt.late})
				n := uint64(strings.Count(tt.late, "\n"))
				waitFor(t, "the late answers", func() bool { return c.Stats().StaleLines == n })
			}
			resp, err := c.Command(context.Background(), tt.first)
			if err != nil || resp.Raw != tt.wantRaw {
				t.Fatalf("first command: got %q, %v; want its own answer %q", resp.Raw, err, tt.wantRaw)
			}
			if tt.idle > 0 {
				waitFor(t, "the rest of the answer", func() bool { return c.Stats().StaleLines == tt.idle })
			}
			resp, err = c.Command(context.Background(), "AT+CFUN?")
			if err != nil || resp.Raw != cfun {
				t.Fatalf("second command: got %q, %v; want its own answer", resp.Raw, err)
			}
			if got := f.commands(); !reflect.DeepEqual(got, tt.wantWrites) {
				t.Errorf("wrote %q, want %q", got, tt.wantWrites)
			}
			if got := c.Stats().StaleLines; got != tt.stale {
				t.Errorf("Stats.StaleLines = %d, want %d", got, tt.stale)
			}
		})
	}
}

// TestOpeningProbeUnanswered: the opening probe gets no answer; the command fails unsent and
// the next one probes again with another probe, even if a final result came meanwhile.
func TestOpeningProbeUnanswered(t *testing.T) {
	f := newFake(map[string][]item{
		"AT+CMEE?\r\n": nil,
		"AT+CFUN?\r\n": say("+CMEE: 1\r\nOK\r\n+CFUN: 1\r\nOK\r\n"),
		"AT\r\n":       say("OK\r\n"),
	})
	f.scriptOpen = true
	c := newClient(t, f, Config{})
	if _, err := c.Command(expireOn(f, "AT+CMEE?\r\n"), "AT"); !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	f.inject(item{data: "OK\r\n"}) // a late final result: not the probe's (no +CMEE: line)
	waitFor(t, "the late OK", func() bool { return c.Stats().StaleLines == 1 })
	if resp, err := c.Command(context.Background(), "AT"); err != nil || resp.Raw != "OK\r\n" {
		t.Fatalf("got %q, %v", resp.Raw, err)
	}
	want := []string{"AT+CMEE?\r\n", "AT+CFUN?\r\n", "AT\r\n"}
	if got := f.commands(); !reflect.DeepEqual(got, want) {
		t.Errorf("wrote %q, want %q", got, want)
	}
}

// A modem that answers one command with far more than any real answer must neither grow the
// heap with it nor leave its tail to be taken for the next command's answer.
func TestResponseTooLong(t *testing.T) {
	line := strings.Repeat("x", 1022) // 1 KiB with its CR LF
	const lines = 2000
	flood := strings.Repeat(line+"\r\n", lines)
	f := newFake(map[string][]item{
		"AT+CLAC\r\n":  say("+CLAC: first\r\n" + flood + "OK\r\n"),
		"AT+CFUN?\r\n": say("+CFUN: 4\r\nOK\r\n"),
	})
	c := newClient(t, f, Config{MaxResponseLen: 16 << 10})
	resp, err := c.Command(context.Background(), "AT+CLAC")
	var tooLong *ResponseTooLongError
	if !errors.As(err, &tooLong) || !errors.Is(err, ErrResponseTooLong) {
		t.Fatalf("got error %v, want a *ResponseTooLongError", err)
	}
	kept := 0
	for _, l := range resp.Lines {
		kept += len(l) + 2
	}
	if kept > 16<<10 || len(resp.Lines) != tooLong.Kept || resp.Lines[0] != "+CLAC: first" || resp.Final != "OK" {
		t.Errorf("kept %d bytes in %d lines (error says %d), first %q, final %q; want at most 16 KiB, the first line and OK",
			kept, len(resp.Lines), tooLong.Kept, resp.Lines[0], resp.Final)
	}
	if tooLong.Kept+tooLong.Dropped != lines+1 || c.Stats().ExcessLines != uint64(tooLong.Dropped) {
		t.Errorf("kept %d + dropped %d lines, stats %d; want %d in all", tooLong.Kept, tooLong.Dropped,
			c.Stats().ExcessLines, lines+1)
	}
	resp, err = c.Command(context.Background(), "AT+CFUN?")
	if err != nil || len(resp.Lines) != 1 || resp.Lines[0] != "+CFUN: 4" {
		t.Fatalf("next command: got %q, %v; want its own answer", resp.Lines, err)
	}
}
