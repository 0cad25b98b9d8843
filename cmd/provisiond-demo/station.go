package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/simmodem"
	"github.com/provisiond/provisiond/internal/testbed"
)

// onboardingTag is the tag nRF Cloud's auto-onboarding rule listens to; claiming a device
// with it queues the rule's commands for that device.
const onboardingTag = "nrf-cloud-onboarding"

// onboardingSecTag is the sec tag nRF Cloud's onboarding keys and certificates go to.
const onboardingSecTag = 16842753

// runStation is `make demo-station`: n simulated nRF91s (a pty each), one provisiond
// instance per modem with its control socket under one run folder, one shared simulated
// service; the station gathers the tokens, claims every device in one call with the
// onboarding tag, each instance fetches and runs the rule's commands, and `provisiond list`
// shows the result, while `provisiond dashboard` serves the live page.
func runStation(ctx context.Context, o options, out io.Writer) error {
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	say("provisiond station demo: %d simulated nRF91s, %d provisiond instances, one simulated nRF Cloud", o.station, o.station)
	started := time.Now()
	bin, cleanup, err := provisiondBinary(ctx, o, say)
	if err != nil {
		return err
	}
	defer cleanup()

	work, err := os.MkdirTemp("", "provisiond-station-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	cloud, err := simcloud.New(simcloud.Config{StateDir: filepath.Join(work, "cloud")})
	if err != nil {
		return err
	}
	if err := cloud.Start(ctx); err != nil {
		return err
	}
	defer cloud.Close()
	say("▸ simulated nRF Cloud at %s", cloud.HTTPURL())

	// Plug in the boards: a modem and an instance each, all at once.
	runDir := filepath.Join(work, "run")
	st, err := testbed.PlugIn(ctx, testbed.StationOptions{Boards: o.station, Bin: bin, RunDir: runDir, Cloud: cloud,
		Unclaimed: true, Modem: simmodem.Config{Latency: o.latency, Baud: o.baud}})
	if err != nil {
		return err
	}
	defer st.Close()
	boards := st.Boards
	say("▸ %d boards plugged in, each instance's modem answering (%.1fs); run folder %s", len(boards), time.Since(started).Seconds(), runDir)

	// The dashboard, for a person to watch while the demo runs. Port 0 means any free port:
	// pick one here so the address printed is the one served.
	listen := o.listen
	if strings.HasSuffix(listen, ":0") {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return fmt.Errorf("--listen %s: %w", listen, err)
		}
		listen = ln.Addr().String()
		ln.Close()
	}
	dash := exec.CommandContext(ctx, bin, "dashboard", "--run-dir", runDir, "--listen", listen)
	// Interrupted, the dashboard is asked to stop as Ctrl-C would, not killed.
	dash.Cancel = func() error { return dash.Process.Signal(os.Interrupt) }
	dash.WaitDelay = 5 * time.Second
	var dashErr bytes.Buffer
	dash.Stderr = &dashErr
	if err := dash.Start(); err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	defer func() { _ = dash.Process.Signal(os.Interrupt); _ = dash.Wait() }()
	say("▸ dashboard: http://%s/  (GET /api/instances, GET /metrics)", listen)

	// The owner's side: the onboarding rule exists before the claim.
	owner := &ownerClient{base: cloud.HTTPURL() + "/v1/", c: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cloud.CAPool(), MinVersion: tls.VersionTLS12}}}}
	if err := owner.post(ctx, "provisioning/tags", map[string]any{"tag": onboardingTag, "description": "onboarding"}); err != nil {
		return err
	}
	rule := map[string]any{"name": "nRF Cloud Onboarding", "active": true, "tags": []string{onboardingTag},
		"commands": []any{
			map[string]any{"request": map[string]any{"clientPrivateKeyGeneration": map[string]any{"secTag": onboardingSecTag}}},
			map[string]any{"request": map[string]any{"cloudAccessKeyGeneration": map[string]any{"secTag": onboardingSecTag}}},
		}}
	if err := owner.post(ctx, "provisioning-rules", rule); err != nil {
		return err
	}
	say("▸ auto-onboarding rule for tag %s: client key and cloud access key in sec tag %d", onboardingTag, onboardingSecTag)

	cfg, keyFile := filepath.Join(work, "owner.yaml"), filepath.Join(work, "api-key")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "owner:\n  api_url: %q\n  ca_file: %q\n", cloud.HTTPURL(), cloud.CAFile()), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, []byte(simcloud.DefaultAPIKey+"\n"), 0o600); err != nil {
		return err
	}
	csv, err := runCLI(ctx, bin, "tokens", "--csv", "--run-dir", runDir)
	if err != nil {
		return err
	}
	say("▸ provisiond tokens --csv: %d row(s), e.g.\n    %s", strings.Count(csv, "\n"), abbreviate(strings.SplitN(csv, "\n", 2)[0]))
	claimOut, err := runCLI(ctx, bin, "claim", "--config", cfg, "--run-dir", runDir, "--api-key-file", keyFile, "--tags", onboardingTag)
	say("▸ provisiond claim --tags %s:\n%s", onboardingTag, indent(claimOut))
	if err != nil {
		return err
	}

	// Every instance fetches the rule's commands now rather than at its next interval.
	if err := st.Each(func(b *testbed.Board) error {
		at := len(b.Proc.Entries())
		if _, err := b.Bed.Output(ctx, bin, "now"); err != nil {
			return err
		}
		_, _, err := b.Proc.WaitLog(ctx, at, func(e testbed.LogEntry) bool { return e.MsgID() == "results-uploaded" })
		return err
	}); err != nil {
		return err
	}
	provisioned := 0
	for _, b := range boards {
		jobs, err := cloud.Jobs(b.Bed.UUID())
		ok := err == nil && len(jobs) == 2
		for _, j := range jobs {
			ok = ok && j.Status == simcloud.StatusSucceeded
		}
		if ok {
			provisioned++
		} else {
			say("  ✗ %s: jobs %v (%v)", b.Name, jobs, err)
		}
	}

	list, listErr := runCLI(ctx, bin, "list", "--run-dir", runDir)
	say("▸ provisiond list:\n%s", indent(list))
	say("summary: %d of %d board(s) provisioned (every job SUCCEEDED at the service); list %s; wall time %.1fs",
		provisioned, len(boards), exitWord(listErr), time.Since(started).Seconds())
	var result error
	if provisioned != len(boards) || listErr != nil {
		result = errUnexpected
	}
	if o.hold {
		// The page is the point of the station demo; without this it is gone before anyone
		// opens it. Everything stops by the defers above once the signal cancels ctx.
		say("▸ holding: the simulators, %d instances and the dashboard keep running; page http://%s/ — Ctrl-C or SIGTERM to stop",
			len(boards), listen)
		<-ctx.Done()
		say("▸ stopping")
	}
	return result
}

// provisiondBinary returns the binary to run: --provisiond, or one built for the demo.
func provisiondBinary(ctx context.Context, o options, say func(string, ...any)) (string, func(), error) {
	if o.provisiond != "" {
		abs, err := filepath.Abs(o.provisiond)
		return abs, func() {}, err
	}
	dir, err := os.MkdirTemp("", "provisiond-demo-bin-")
	if err != nil {
		return "", nil, err
	}
	bin := filepath.Join(dir, "provisiond")
	say("▸ building provisiond (go build) …")
	if err := build(ctx, bin); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// runCLI runs the station CLI and returns its stdout; a non-zero exit is an error that
// carries its stderr.
func runCLI(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("provisiond %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func exitWord(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// abbreviate shortens a CSV row's long token for the screen.
func abbreviate(row string) string {
	f := strings.Split(row, ",")
	if len(f) == 4 && len(f[2]) > 24 {
		f[2] = f[2][:12] + "…" + f[2][len(f[2])-8:]
	}
	return strings.Join(f, ",")
}

// ownerClient is the owner's side of the simulated service, as Nordic's tools use it.
type ownerClient struct {
	base string
	c    *http.Client
}

func (o *ownerClient) post(ctx context.Context, path string, body any) error {
	j, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.base+path, bytes.NewReader(j))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+simcloud.DefaultAPIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := o.c.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s: %s", path, resp.Status, data)
	}
	return nil
}
