package simmodem

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestFaultGarbage(t *testing.T) {
	h := newHarness(t, Config{})
	h.m.SetGarbage(3)
	h.send("AT+CFUN?\r\n")
	var resp []string
	garbage := 0
	for {
		l := h.next()
		if l == "+CFUN: 0" || l == "OK" {
			resp = append(resp, l)
			if l == "OK" {
				break
			}
			continue
		}
		if l != "" && utf8.ValidString(l) && isPrintableASCII(l) {
			t.Fatalf("garbage line %q is printable text a client could take for an answer", l)
		}
		garbage++
	}
	if strings.Join(resp, "|") != "+CFUN: 0|OK" || garbage < 3 {
		t.Fatalf("answer %q with %d garbage lines before OK, want +CFUN: 0|OK and >= 3", resp, garbage)
	}
	h.m.ClearFaults()
	// The 3 trailing garbage lines are still in flight; skip them, then the line is clean.
	for range 3 {
		h.next()
	}
	if lines := h.mustOK("AT+CMEE?"); strings.Join(lines, "|") != "+CMEE: 0" {
		t.Fatalf("after ClearFaults: %q", lines)
	}
	if h.m.Stats().Garbage != 6 {
		t.Errorf("Stats().Garbage = %d, want 6", h.m.Stats().Garbage)
	}
}

func TestFaultURCStormInsideResponse(t *testing.T) {
	h := newHarness(t, Config{HideReserved: true})
	h.m.SetCredential(1, 0, testPEM)
	h.m.SetCredential(2, 0, testPEM)
	h.m.SetURCStorm(1000)
	h.send("AT%CMNG=1\r\n")
	var got []string
	urcs := 0
	for {
		l := h.next()
		if strings.HasPrefix(l, "+CSCON:") || strings.HasPrefix(l, "%CESQ:") || strings.HasPrefix(l, "%XTIME:") ||
			strings.HasPrefix(l, "+CEREG:") || strings.HasPrefix(l, "%MDMEV:") {
			urcs++
			continue
		}
		got = append(got, l)
		if l == "OK" {
			break
		}
	}
	if len(got) != 3 || !strings.HasPrefix(got[0], "%CMNG: 1,0,") || !strings.HasPrefix(got[1], "%CMNG: 2,0,") {
		t.Fatalf("answer without URCs = %q", got)
	}
	if urcs < 3 { // one before each of the three answer lines at least
		t.Fatalf("%d URCs inside the answer, want >= 3", urcs)
	}
	h.m.SetURCStorm(0)
}

func TestFaultCMEErrorFor(t *testing.T) {
	h := newHarness(t, Config{})
	h.m.CMEErrorFor("AT%KEYGEN", 523)
	runSteps(t, h, []step{
		{cmd: "AT%KEYGEN=1,2,0", wantFinal: "ERROR"},
		{cmd: "AT+CMEE=1", wantFinal: "OK"},
		{cmd: "at%keygen=1,2,0", wantFinal: "+CME ERROR: 523"},
		{cmd: "AT", wantFinal: "OK"},
	})
	if _, ok := h.m.Credential(1, TypePrivateKey); ok {
		t.Error("a command answered by an injected error was executed")
	}
	h.m.ClearFaults()
	runSteps(t, h, []step{{cmd: "AT%KEYGEN=1,2,0", wantFinal: "OK"}})
}

func TestFaultStall(t *testing.T) {
	h := newHarness(t, Config{})
	h.m.Stall()
	h.send("AT+CFUN?\r\n")
	for h.m.Stats().Commands == 0 { // received, now blocked before answering
		time.Sleep(time.Millisecond)
	}
	select {
	case l := <-h.lines:
		t.Fatalf("stalled modem answered %q", l)
	default:
	}
	h.m.Resume()
	if l := h.next(); l != "+CFUN: 0" {
		t.Fatalf("late answer %q", l)
	}
	if l := h.next(); l != "OK" {
		t.Fatalf("late final %q", l)
	}
}

func TestFaultSplitWrites(t *testing.T) {
	h := newHarness(t, Config{})
	h.m.SplitWrites(3)
	lines := h.mustOK("AT%XMODEMUUID")
	if len(lines) != 1 || lines[0] != "%XMODEMUUID: "+h.m.FirmwareUUID() {
		t.Fatalf("split answer %q", lines)
	}
}

func TestFaultUnplugDuringOnStream(t *testing.T) {
	m, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	client, server := net.Pipe()
	defer client.Close()
	collected := make(chan string, 1)
	go func() {
		var b strings.Builder
		_, _ = io.Copy(&b, client) // until the server side is closed
		collected <- b.String()
	}()
	m.UnplugDuring("AT%ATTESTTOKEN")
	errc := make(chan error, 1)
	go func() { errc <- m.Serve(context.Background(), server) }()
	go func() { _, _ = io.WriteString(client, "AT%ATTESTTOKEN\r\n") }()
	if err := <-errc; !errors.Is(err, ErrUnplugged) {
		t.Fatalf("Serve() = %v, want ErrUnplugged", err)
	}
	_ = server.Close()
	got := <-collected
	if !strings.HasPrefix(got, `%ATTESTTOKEN: "`) || strings.Contains(got, "\r\n") {
		t.Fatalf("want a partial first line, got %q", got)
	}
	if m.Stats().Unplugged != 1 {
		t.Errorf("Stats().Unplugged = %d", m.Stats().Unplugged)
	}
}

// TestBaudLimit checks the lower bound only: at 9600 baud (960 B/s) a 192-byte command
// cannot be consumed in under 200 ms.
func TestBaudLimit(t *testing.T) {
	h := newHarness(t, Config{Baud: 9600, HideReserved: true})
	start := time.Now()
	h.mustOK(`AT%CMNG=0,1,4,"` + strings.Repeat("a", 192-18) + `"`)
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Fatalf("192 bytes + answer at 9600 baud took %v, want >= 200ms", el)
	}
}

func TestGarbageLineNeverText(t *testing.T) {
	for range 10000 {
		g := garbageLine()
		if strings.ContainsAny(g, "\r\n") {
			t.Fatalf("garbage %q holds a line break", g)
		}
		for _, r := range g {
			if r != utf8.RuneError && r >= 0x20 && r != 0x7f {
				t.Fatalf("garbage %q decodes to printable %q", g, r)
			}
		}
	}
}

func TestModemUnplugStream(t *testing.T) {
	m, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	errc := make(chan error, 1)
	go func() { errc <- m.Serve(context.Background(), server) }()
	go func() { _, _ = io.Copy(io.Discard, client) }()
	if _, err := io.WriteString(client, "AT\r\n"); err != nil {
		t.Fatal(err)
	}
	for m.Stats().Commands == 0 {
		time.Sleep(time.Millisecond)
	}
	m.Unplug()
	if err := <-errc; !errors.Is(err, ErrUnplugged) {
		t.Fatalf("Serve() = %v, want ErrUnplugged", err)
	}
}
