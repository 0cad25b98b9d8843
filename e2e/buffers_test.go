package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/testbed"
)

// bufTag is the security tag the large credential goes to.
const bufTag = 4242

// modemATLimit is the modem's AT buffer: the longest command, terminator included.
const modemATLimit = 4096

// largeCertCommand returns a %CMNG root-CA write whose AT command, with the CR LF the shipped
// config ends it with, is as close to the modem's 4 KB limit as a PEM body allows (within a
// few bytes, never over), and the PEM it writes.
func largeCertCommand(t *testing.T) (cmd, pem string) {
	t.Helper()
	build := func(n int) (string, string) {
		raw := make([]byte, n)
		if _, err := rand.Read(raw); err != nil {
			t.Fatal(err)
		}
		b64 := base64.StdEncoding.EncodeToString(raw)
		var p strings.Builder
		p.WriteString("-----BEGIN CERTIFICATE-----\n")
		for len(b64) > 64 {
			p.WriteString(b64[:64] + "\n")
			b64 = b64[64:]
		}
		p.WriteString(b64 + "\n-----END CERTIFICATE-----\n")
		return fmt.Sprintf("%%CMNG=0,%d,0,\"%s\"", bufTag, p.String()), p.String()
	}
	for n := 3100; n > 0; n-- {
		cmd, pem = build(n)
		if len("AT"+cmd+"\r\n") <= modemATLimit {
			break
		}
	}
	if got := len("AT" + cmd + "\r\n"); got < modemATLimit-8 {
		t.Fatalf("built a %d-byte command, want close to %d", got, modemATLimit)
	}
	return cmd, pem
}

// retryLogged counts the daemon's log entries about a fetch retried with a larger size.
func retryLogged(p *testbed.Process) int {
	return countID(p, "fetch-retried")
}

// checkLargeCertWritten checks the credential reached the modem byte for byte, once, in one
// AT command of the size built, and the job SUCCEEDED.
func checkLargeCertWritten(t *testing.T, b *testbed.Bed, cmd, pem string) {
	t.Helper()
	if n := count(b.ModemCommands(), "AT"+cmd); n != 1 {
		t.Errorf("the %d-byte %%CMNG command reached the modem %d times, want once", len("AT"+cmd+"\r\n"), n)
	}
	cred, ok := b.Modem().Credential(bufTag, 0)
	if !ok || cred.Content != pem {
		t.Errorf("the modem holds %d bytes in tag %d (found %v), want the %d-byte PEM", len(cred.Content), bufTag, ok, len(pem))
	}
	for _, c := range mustCommands(t, b) {
		if c.Status != simcloud.StatusSucceeded {
			t.Errorf("command %s: %s (%s), want SUCCEEDED", c.ID, c.Status, c.Reason)
		}
	}
}

// TestBuffersCertificateWrite4KB: with the shipped buffer sizes a credential write up to the
// modem's 4 KB AT command limit goes through on both transports in one fetch: no refusal by
// the service, no retry with a larger size.
func TestBuffersCertificateWrite4KB(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, tr string) {
		ctx := testCtx(t)
		b := newBed(t, ctx, testbed.Options{Transport: tr, InitialMode: 1})
		cmd, pem := largeCertCommand(t)
		queue(t, b, testbed.AT(cmd), testbed.Finished())
		code, p := runOnce(t, ctx, b)
		if code != 0 {
			t.Fatalf("run --once: exit %d, want 0", code)
		}
		if n := retryLogged(p); n != 0 {
			t.Errorf("%d fetches needed a retry with a larger size; the shipped rx_buf_size should carry the command", n)
		}
		checkLargeCertWritten(t, b, cmd, pem)
		ups := uploads(t, b)
		if len(ups) != 1 || len(ups[0].Responses) != 2 || ups[0].Responses[0].Kind != proto.KindATResponse ||
			ups[0].Responses[1].Kind != proto.KindFinishedAck {
			t.Errorf("uploads, want one with the AT response and the FINISHED ack:\n%s", describeUploads(ups))
		}
		invariants(t, ctx, b, 1)
	})
}

// TestBuffersRefusedFetchRetried: with a receive buffer too small for the certificate the
// service refuses the fetch and names the size it needs; provisiond fetches again at once with
// that size (within the shipped provisioning.rx_buf_max), says so in the log, and the job
// completes in the same attempt.
func TestBuffersRefusedFetchRetried(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, tr string) {
		ctx := testCtx(t)
		b := newBed(t, ctx, testbed.Options{Transport: tr, InitialMode: 1,
			Settings: map[string]any{"provisioning.rx_buf_size": 1024}})
		cmd, pem := largeCertCommand(t)
		queue(t, b, testbed.AT(cmd), testbed.Finished())
		code, p := runOnce(t, ctx, b)
		if code != 0 {
			t.Fatalf("run --once: exit %d, want 0\n%s", code, p.Stderr())
		}
		var retries []testbed.LogEntry
		for _, e := range p.Entries() {
			if strings.Contains(e.Msg, "retrying at once with the size the service names") {
				retries = append(retries, e)
			}
		}
		if len(retries) != 1 {
			t.Fatalf("%d retry log entries, want 1", len(retries))
		}
		asked, _ := strconv.Atoi(retries[0].Str("rx_max_size"))
		need, _ := strconv.Atoi(retries[0].Str("needed"))
		if asked != 1024 || need <= modemATLimit-8 || need > 65536 {
			t.Errorf("retry logged rx_max_size %d needed %d; want 1024 and more than the %d-byte command", asked, need, modemATLimit)
		}
		// The retried fetch asks for exactly the size named, which fits the certificate write
		// alone: FINISHED comes in the next batch of the same attempt.
		checkLargeCertWritten(t, b, cmd, pem)
		invariants(t, ctx, b, 1)
	})
}

// bufStatus is the part of `status --json` these tests read.
type bufStatus struct {
	State          string `json:"state"`
	BackoffSeconds int64  `json:"backoff_seconds"`
	LastAttempt    *struct {
		Event  string `json:"event"`
		Reason string `json:"reason"`
	} `json:"last_attempt"`
}

// TestBuffersPastTheCap: when the size the service names is over provisioning.rx_buf_max the
// fetch is not retried; the attempt fails with a reason naming the key to raise, and the
// daemon backs off (as for any 4xx but 401/403) instead of asking again every interval.
// Raising the key lets the job through.
func TestBuffersPastTheCap(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, tr string) {
		ctx := testCtx(t)
		b := newBed(t, ctx, testbed.Options{Transport: tr, InitialMode: 1,
			Settings: map[string]any{"provisioning.rx_buf_size": 1024, "provisioning.rx_buf_max": 2048}})
		cmd, pem := largeCertCommand(t)
		queue(t, b, testbed.AT(cmd), testbed.Finished())

		p := onceFails(t, ctx, b, "FAILED")
		if !strings.Contains(p.Stderr(), "raise it") || !strings.Contains(p.Stderr(), "provisioning.rx_buf_max 2048") {
			t.Errorf("run --once: stderr does not name the key to raise:\n%s", p.Stderr())
		}
		if n := retryLogged(p); n != 0 {
			t.Errorf("%d retries past the cap", n)
		}
		noJobCommands(t, b)

		d := daemon(t, ctx, b)
		at := 0
		// Two failures: the second comes after the first backoff, so status has taken it.
		waitEvent(t, ctx, d, &at, "FAILED")
		waitEvent(t, ctx, d, &at, "FAILED")
		var st bufStatus
		if err := json.Unmarshal([]byte(ctl(t, b, "status", "--json")), &st); err != nil {
			t.Fatal(err)
		}
		if st.LastAttempt == nil || st.LastAttempt.Event != "FAILED" || !strings.Contains(st.LastAttempt.Reason, "provisioning.rx_buf_max") {
			t.Errorf("status last attempt %+v, want FAILED naming provisioning.rx_buf_max", st.LastAttempt)
		}
		if st.BackoffSeconds <= 0 || (st.State != "backoff" && st.State != "provisioning") {
			t.Errorf("status state %q backoff %ds, want backing off", st.State, st.BackoffSeconds)
		}
		text := ctl(t, b, "status")
		if !strings.Contains(text, "backoff") {
			t.Errorf("status does not show the backoff:\n%s", text)
		}
		stop(t, ctx, d)

		if err := b.WriteConfig(map[string]any{"provisioning.rx_buf_max": nil}); err != nil {
			t.Fatal(err)
		}
		if code, p := runOnce(t, ctx, b); code != 0 {
			t.Fatalf("run --once with the shipped cap: exit %d\n%s", code, p.Stderr())
		}
		checkLargeCertWritten(t, b, cmd, pem)
		invariants(t, ctx, b, 1)
	})
}

// TestStreamedBatch: a batch served with indefinite lengths, as a streaming encoder writes
// it, is run as the device runs it; the job completes in one attempt.
func TestStreamedBatch(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, tr string) {
		ctx := testCtx(t)
		b := newBed(t, ctx, testbed.Options{Transport: tr, InitialMode: 1})
		queue(t, b, testbed.RealisticJob()...)
		setFault(t, b, simcloud.Fault{Kind: simcloud.FaultNonCanonical, Op: simcloud.OpFetch})
		if code, p := runOnce(t, ctx, b); code != 0 {
			t.Fatalf("run --once: exit %d\n%s", code, p.Stderr())
		}
		checkUploads(t, b, realisticUploads(t, b))
		checkExecutedTimes(t, b, mustCommands(t, b), 1)
		jobDone(t, b)
		invariants(t, ctx, b, 1)
	})
}
