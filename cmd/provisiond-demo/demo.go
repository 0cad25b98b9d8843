package main

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/simmodem"
	"github.com/provisiond/provisiond/internal/testbed"
)

// demoTimeout bounds the daemon's run; the job takes a second or two.
const demoTimeout = 60 * time.Second

// errUnexpected means the run finished but something did not happen as expected; the
// summary says what.
var errUnexpected = errors.New("the demo did not go as expected (see the summary)")

func run(ctx context.Context, o options, out io.Writer) error {
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	say("provisiond demo: the real daemon, a simulated nRF91 on a pty, a simulated nRF Cloud Provisioning Service (%s)", o.transport)

	bin := o.provisiond
	if bin == "" {
		dir, err := os.MkdirTemp("", "provisiond-demo-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "provisiond")
		say("▸ building provisiond (go build) …")
		t0 := time.Now()
		if err := build(ctx, bin); err != nil {
			return err
		}
		say("  built in %.1fs", time.Since(t0).Seconds())
	} else if abs, err := filepath.Abs(bin); err == nil {
		bin = abs
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("provisiond binary: %w", err)
	}

	started := time.Now()
	bed, err := testbed.Start(ctx, testbed.Options{
		Transport:   o.transport,
		Modem:       simmodem.Config{Latency: o.latency, Baud: o.baud},
		InitialMode: 1, // an online modem, as found in the field: the daemon takes it offline and back
	})
	if err != nil {
		return err
	}
	defer bed.Close()
	cloud, m := bed.Cloud(), bed.Modem()
	endpoint := cloud.HTTPURL()
	if o.transport == "coap" {
		endpoint = "coaps://" + cloud.CoAPAddr()
	}
	say("▸ simulated Provisioning Service at %s (its own CA: %s)", endpoint, cloud.CAFile())
	say("▸ simulated nRF91 (%s) on %s, uuid %s, %d baud, %v per command, LTE on (+CFUN=%d)",
		m.Chip(), bed.ModemPath(), bed.UUID(), o.baud, o.latency, m.FunctionalMode())
	say("▸ service: identity key registered; device claimed with its attestation token")
	if _, err := bed.QueueRealisticJob(); err != nil {
		return err
	}
	say("▸ queued: client certificate (sec tag %d), interval %d s, finished", testbed.ClientCertSecTag, testbed.JobIntervalSeconds)
	modeBefore := m.FunctionalMode()
	say("▸ provisiond run --once --config %s", bed.ConfigPath())

	look := &cloudLookup{bed: bed}
	r := &renderer{out: out, look: look, start: time.Now(), now: time.Now}
	rctx, cancel := context.WithTimeout(ctx, demoTimeout)
	defer cancel()
	p, err := bed.Start(rctx, bin, r.handle, "run", "--once")
	if err != nil {
		return err
	}
	code, err := p.Wait(rctx)
	if err != nil {
		_ = p.Kill()
		<-p.Done()
		return err
	}
	if s := strings.TrimSpace(p.Stdout()); s != "" {
		r.line("▸", "provisiond: %s", s)
	}
	return summarize(ctx, out, bed, bin, r.snapshot(), code, modeBefore, time.Since(started))
}

// build compiles provisiond from the module this demo belongs to.
func build(ctx context.Context, bin string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/provisiond/provisiond/cmd/provisiond")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build provisiond: %w", err)
	}
	return nil
}

// summarize prints the summary and checks every promise of the job; any miss is an error.
func summarize(ctx context.Context, out io.Writer, bed *testbed.Bed, bin string, t tally, code, modeBefore int, wall time.Duration) error {
	var problems []string
	check := func(ok bool, format string, args ...any) {
		if !ok {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	row := func(label, format string, args ...any) {
		fmt.Fprintf(out, "  %-18s %s\n", label, fmt.Sprintf(format, args...))
	}
	fmt.Fprintln(out, "\nSummary")

	outcome := "none"
	for _, ev := range t.events {
		if ev != "STOP" && ev != "START" && !strings.HasPrefix(ev, "NEED_LTE") {
			outcome = ev
		}
	}
	row("exit code", "%d", code)
	row("outcome", "%s", outcome)
	check(code == 0, "provisiond exited %d, want 0", code)
	check(outcome == "DONE", "outcome %s, want DONE", outcome)

	cmds, err := bed.Cloud().Commands(bed.UUID())
	if err != nil {
		return err
	}
	want, succeeded := 0, 0
	for _, c := range cmds {
		if c.Kind != proto.KindFinished {
			want++
		}
		if c.Status == simcloud.StatusSucceeded {
			succeeded++
		}
	}
	row("commands", "%d executed, %d failed (service queue: %d/%d SUCCEEDED)", t.executed, t.failed, succeeded, len(cmds))
	check(t.executed == want, "%d commands executed, want %d", t.executed, want)
	check(t.failed == 0, "%d commands failed", t.failed)
	check(succeeded == len(cmds), "%d of %d commands SUCCEEDED at the service", succeeded, len(cmds))

	ups, err := bed.Uploads()
	if err != nil {
		return err
	}
	responses, broken := 0, 0
	for _, u := range ups {
		responses += len(u.Responses)
		if u.Err != "" {
			broken++
		}
	}
	row("uploads", "%d recorded by the service, %d responses, %d undecodable", len(ups), responses, broken)
	check(responses == len(cmds) && broken == 0, "service recorded %d responses (%d undecodable), want %d", responses, broken, len(cmds))

	certLine, certOK := clientCert(bed)
	row("client cert", "%s", certLine)
	check(certOK, "client certificate: %s", certLine)
	_, keyOK := bed.Modem().Credential(testbed.ClientCertSecTag, simmodem.TypePrivateKey)
	keyDesc := "missing"
	if keyOK {
		keyDesc = "generated in the modem by %KEYGEN (it never left it)"
	}
	row("private key", "sec tag %d type 2: %s", testbed.ClientCertSecTag, keyDesc)
	check(keyOK, "no private key in sec tag %d", testbed.ClientCertSecTag)

	modeAfter := bed.Modem().FunctionalMode()
	row("modem mode", "+CFUN=%d before → +CFUN=%d after", modeBefore, modeAfter)
	check(modeAfter == modeBefore, "modem mode %d after, want %d", modeAfter, modeBefore)

	st, err := bed.Settings(ctx, bin)
	if err != nil {
		return err
	}
	wantCursor := ""
	if len(cmds) > 0 {
		wantCursor = cmds[len(cmds)-1].ID
	}
	row("cursor", "%s", st[testbed.CursorKey])
	row("interval", "%s s (provisiond settings --json)", st[testbed.IntervalKey])
	check(st[testbed.CursorKey] == wantCursor, "cursor %q, want %q", st[testbed.CursorKey], wantCursor)
	check(st[testbed.IntervalKey] == fmt.Sprint(testbed.JobIntervalSeconds), "interval %q, want %d", st[testbed.IntervalKey], testbed.JobIntervalSeconds)
	pending := slices.ContainsFunc(slices.Sorted(maps.Keys(st)), func(k string) bool { return strings.HasPrefix(k, "provisiond/") })
	check(!pending, "the daemon left state behind in the store: %v", slices.Sorted(maps.Keys(st)))

	row("wall time", "%.1fs", wall.Seconds())
	if len(problems) > 0 {
		fmt.Fprintln(out, "\nNot as expected:")
		for _, p := range problems {
			fmt.Fprintf(out, "  ✗ %s\n", p)
		}
		return errUnexpected
	}
	fmt.Fprintln(out, "\n✓ provisioned: every command ran once, every result reached the service, the modem is back as it was")
	return nil
}

// clientCert describes the client certificate in the modem's credential store and checks it
// chains to the service's CA.
func clientCert(bed *testbed.Bed) (string, bool) {
	c, ok := bed.Modem().Credential(testbed.ClientCertSecTag, simmodem.TypeClientCert)
	if !ok {
		return fmt.Sprintf("sec tag %d type 1: missing", testbed.ClientCertSecTag), false
	}
	desc := fmt.Sprintf("sec tag %d type 1, SHA-256 %s", c.Tag, short(c.SHA256, 16))
	block, _ := pem.Decode([]byte(c.Content))
	if block == nil {
		return desc + ": not PEM", false
	}
	sum := sha256.Sum256([]byte(c.Content))
	if !strings.EqualFold(hex.EncodeToString(sum[:]), c.SHA256) {
		return desc + ": hash does not match the content", false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return desc + ": " + err.Error(), false
	}
	desc += fmt.Sprintf(", CN=%s, issued by %q", short(cert.Subject.CommonName, 13), cert.Issuer.CommonName)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: bed.Cloud().CAPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return desc + ": does not chain to the service CA: " + err.Error(), false
	}
	return desc, true
}

// cloudLookup answers the renderer's questions from the simulated service.
type cloudLookup struct{ bed *testbed.Bed }

func (l *cloudLookup) command(id string) (proto.Command, bool) {
	cmds, err := l.bed.Cloud().Commands(l.bed.UUID())
	if err != nil {
		return proto.Command{}, false
	}
	for _, c := range cmds {
		if c.ID == id {
			return c.Command, true
		}
	}
	return proto.Command{}, false
}

func (l *cloudLookup) lastUpload() ([]proto.Response, bool) {
	ups, err := l.bed.Uploads()
	if err != nil || len(ups) == 0 {
		return nil, false
	}
	return ups[len(ups)-1].Responses, true
}

func (l *cloudLookup) certificateIssued() bool {
	jobs, err := l.bed.Cloud().Jobs(l.bed.UUID())
	if err != nil {
		return false
	}
	for _, j := range jobs {
		if j.Request.ClientCertificate != nil && j.Response != nil && j.Response.Certificate != "" {
			return true
		}
	}
	return false
}
