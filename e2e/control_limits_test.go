package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/control"
	"github.com/provisiond/provisiond/internal/testbed"
)

// daemonFDs counts the open descriptors of process pid.
func daemonFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Skipf("cannot count the daemon's descriptors: %v", err)
	}
	return len(ents)
}

// TestControlHeldConnections holds 250 connections to the control socket that send nothing:
// the daemon's descriptors stay bounded by the connection cap, an attempt still runs (no
// "too many open files"), and the socket answers again once the holders go.
func TestControlHeldConnections(t *testing.T) {
	t.Parallel()
	const held = 250
	ctx := testCtx(t)
	b := newBed(t, ctx, testbed.Options{Transport: "http", InitialMode: 1})
	queue(t, b, testbed.AT("+CGSN=1"), testbed.Finished())
	p := start(t, ctx, b, "run")
	at := 0
	waitEvent(t, ctx, p, &at, "DONE")
	waitEvent(t, ctx, p, &at, "STOP")
	before := daemonFDs(t, p.Pid())
	// The peak counts: connections held past the read timeout are closed by any daemon, so
	// only sampling during the hold shows whether they took a descriptor each.
	var peak atomic.Int64
	sampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.Pid())); err == nil && int64(len(ents)) > peak.Load() {
				peak.Store(int64(len(ents)))
			}
			select {
			case <-sampling:
				return
			default:
			}
		}
	}()

	var closedByDaemon atomic.Int64
	var wg sync.WaitGroup
	conns := make([]net.Conn, 0, held)
	for range held {
		c, err := net.Dial("unix", b.SocketPath())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		wg.Go(func() {
			// A connection over the cap is closed by the daemon: its read ends.
			if _, err := io.Copy(io.Discard, c); err == nil || !errors.Is(err, net.ErrClosed) {
				closedByDaemon.Add(1)
			}
		})
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}()
	waitUntil(t, ctx, "the daemon to turn away the connections over its cap", func() bool {
		return closedByDaemon.Load() >= held-control.DefaultMaxConns
	})
	close(sampling)
	<-sampled
	// The cap, the refusals being answered and its own self-probe at most.
	if got, limit := int(peak.Load())-before, control.DefaultMaxConns+4+2; got > limit {
		t.Errorf("the daemon held up to %d more descriptors with %d connections open, want at most %d", got, held, limit)
	}

	// An attempt is not starved of descriptors.
	queue(t, b, testbed.AT("+CGSN=1"), testbed.Finished())
	if err := p.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, ctx, p, &at, "DONE")

	for _, c := range conns {
		c.Close()
	}
	waitUntil(t, ctx, "the socket to answer again", func() bool {
		_, err := b.Output(ctx, provisiond, "status", "--json")
		return err == nil
	})
}

// TestControlHeldBodyDoesNotHoldStop sends a PUT whose body never completes, then SIGTERM:
// the daemon stops cleanly (exit 0), not after a grace with an error.
func TestControlHeldBodyDoesNotHoldStop(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	b := newBed(t, ctx, testbed.Options{Transport: "http", InitialMode: 1})
	p := start(t, ctx, b, "run")
	at := 0
	waitEvent(t, ctx, p, &at, "SCHEDULED_PROVISIONING")
	c, err := net.Dial("unix", b.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// "Expect: 100-continue" makes the daemon say when its handler starts reading the body.
	if _, err := io.WriteString(c, "PUT /v1/interval HTTP/1.1\r\nHost: provisiond\r\nContent-Type: application/json\r\n"+
		"Expect: 100-continue\r\nContent-Length: 100\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), "100 Continue") {
		t.Fatalf("daemon's answer to the request head: %q, %v; want 100 Continue", buf[:n], err)
	}
	if _, err := io.WriteString(c, "{\"sec"); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(ctx); err != nil || code != 0 {
		t.Fatalf("SIGTERM with a held request body: exit %d, %v; want 0", code, err)
	}
	if strings.Contains(p.Stderr(), "shutdown grace") {
		t.Errorf("the stop waited for the grace:\n%s", p.Stderr())
	}
}

// TestControlIntervalBounds: the interval takes what provisioning.interval takes, or 0;
// anything beyond is refused with the range named, and nothing is stored.
func TestControlIntervalBounds(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	b := newBed(t, ctx, testbed.Options{Transport: "http", InitialMode: 1})
	p := start(t, ctx, b, "run")
	at := 0
	waitEvent(t, ctx, p, &at, "SCHEDULED_PROVISIONING")
	for _, v := range []string{"99999999999", "31536001"} {
		out, err := b.Output(ctx, provisiond, "interval", v)
		if err == nil || !strings.Contains(out+err.Error(), "1..31536000 seconds") {
			t.Errorf("interval %s: %q, %v; want refused with the range", v, out, err)
		}
	}
	// The socket refuses it too, for clients other than the CLI. The largest int: a literal
	// above 2^31 does not compile for 32-bit CPUs (make test-arch, armhf).
	err := control.Dial(b.SocketPath()).SetInterval(ctx, math.MaxInt)
	var apiErr *control.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 400 || !strings.Contains(apiErr.Message, "1..31536000 seconds") {
		t.Errorf("PUT /v1/interval %d: %v, want 400 naming the range", math.MaxInt, err)
	}
	if got := ctl(t, b, "interval", "31536000"); !strings.Contains(got, "31536000") {
		t.Errorf("interval at the top of the range: %q", got)
	}
}

// TestControlStatusFailedCommand: an attempt whose command failed ends as NO_COMMANDS after
// reporting it; `status` names the command and its error.
func TestControlStatusFailedCommand(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	b := newBed(t, ctx, testbed.Options{Transport: "http", InitialMode: 1})
	queue(t, b, testbed.AT("%NOSUCHCMD=1"), testbed.Finished())
	p := start(t, ctx, b, "run")
	at := 0
	waitEvent(t, ctx, p, &at, "STOP")
	var st struct {
		Port        string `json:"port"`
		LastAttempt *struct {
			Failed        int `json:"failed"`
			FailedCommand *struct {
				CorrelationID string `json:"correlation_id"`
				Command       string `json:"command"`
				Error         string `json:"error"`
			} `json:"failed_command"`
		} `json:"last_attempt"`
	}
	raw := ctl(t, b, "status", "--json")
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatal(err)
	}
	if st.LastAttempt == nil || st.LastAttempt.Failed != 1 || st.LastAttempt.FailedCommand == nil ||
		st.LastAttempt.FailedCommand.Command != "AT%NOSUCHCMD" || st.LastAttempt.FailedCommand.Error == "" {
		t.Fatalf("status --json: %s, want the failed command named", raw)
	}
	if st.Port != b.ModemPath() {
		t.Errorf("status port %q, want %q", st.Port, b.ModemPath())
	}
	if human := ctl(t, b, "status"); !strings.Contains(human, "AT%NOSUCHCMD") {
		t.Errorf("status does not name the failed command:\n%s", human)
	}
}

// waitUntil polls cond until it holds or ctx ends.
func waitUntil(t *testing.T, ctx interface{ Err() error }, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if ctx.Err() != nil {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
