package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/atmodem"
	"github.com/provisiond/provisiond/internal/attest"
)

// startRun runs the command until the test ends and returns its printed key: value lines.
func startRun(t *testing.T, o options) map[string]string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := run(ctx, o, pw)
		_ = pw.CloseWithError(err)
		errc <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("run() = %v", err)
		}
	})
	out := map[string]string{}
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			t.Fatalf("output line %q is not key: value", sc.Text())
		}
		out[k] = v
		if k == "attestation-token" { // the last line before serving
			go func() { _, _ = io.Copy(io.Discard, pr) }()
			return out
		}
	}
	t.Fatalf("run ended early: %v", sc.Err())
	return nil
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	o := options{
		link: filepath.Join(dir, "ttyNRF"), identity: filepath.Join(dir, "id.pem"),
		publicIdentity: filepath.Join(dir, "id.pub.pem"), uuidFile: filepath.Join(dir, "uuid"),
		chip: "nrf9161", lineEnding: "any",
	}
	out := startRun(t, o)
	for _, k := range []string{"pty", "link", "uuid", "imei", "chip", "attestation-token"} {
		if out[k] == "" {
			t.Errorf("no %q in the output %v", k, out)
		}
	}
	if u, err := attest.DeviceUUID(out["attestation-token"]); err != nil || u != out["uuid"] {
		t.Errorf("token UUID %q (%v), printed uuid %q", u, err, out["uuid"])
	}
	st, err := os.Stat(o.identity)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("identity file: %v, mode %v", err, st.Mode())
	}
	pubPEM, err := os.ReadFile(o.publicIdentity)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := attest.ParsePublicKeyPEM(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.VerifyToken(out["attestation-token"], pub); err != nil {
		t.Fatalf("token does not verify with --public-identity: %v", err)
	}
	if b, _ := os.ReadFile(o.uuidFile); strings.TrimSpace(string(b)) != out["uuid"] {
		t.Errorf("uuid file %q, want %q", b, out["uuid"])
	}

	port, err := atmodem.OpenPort(o.link, 115200, "none")
	if err != nil {
		t.Fatal(err)
	}
	c := atmodem.New(port, atmodem.Config{})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if u, err := c.DeviceUUID(ctx); err != nil || u != out["uuid"] {
		t.Fatalf("DeviceUUID over the link = %q, %v", u, err)
	}
}

// TestRunSameIdentity: a saved identity gives the same device on the next run.
func TestRunSameIdentity(t *testing.T) {
	dir := t.TempDir()
	o := options{identity: filepath.Join(dir, "id.pem"), chip: "nrf9151", lineEnding: "any"}
	first := startRun(t, o)["uuid"]
	second := startRun(t, o)["uuid"]
	if first == "" || first != second {
		t.Fatalf("uuid %q then %q", first, second)
	}
}

func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		o    options
	}{
		{"bad chip", options{chip: "nrf52"}},
		{"bad identity", options{identity: bad}},
		{"bad line ending", options{lineEnding: "x"}},
		{"bad timing profile", options{timing: "fast"}},
		{"missing timing file", options{timing: filepath.Join(dir, "none.yaml")}},
		{"unwritable uuid file", options{uuidFile: filepath.Join(dir, "missing", "uuid")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := run(context.Background(), tt.o, io.Discard); err == nil {
				t.Fatal("run() = nil")
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"--link", "/tmp/x", "--latency", "0", "--baud", "0", "--echo", "--chip", "nrf9160", "--timing", "typical"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.link != "/tmp/x" || o.latency != 0 || o.baud != 0 || !o.echo || o.chip != "nrf9160" || o.timing != "typical" {
		t.Fatalf("options %+v", o)
	}
	if _, err := parseFlags([]string{"extra"}, io.Discard); err == nil {
		t.Fatal("extra argument accepted")
	}
	if _, err := parseFlags([]string{"--baud", "x"}, io.Discard); err == nil {
		t.Fatal("bad baud accepted")
	}
}

// TestRunLink: --link points at the printed pty while serving and is gone after exit, like
// a udev by-id name once the device is unplugged.
func TestRunLink(t *testing.T) {
	link := filepath.Join(t.TempDir(), "ttyNRF")
	o := options{link: link, chip: "nrf9161", lineEnding: "any"}
	t.Run("serving", func(t *testing.T) { // its cleanup stops run
		out := startRun(t, o)
		if out["link"] != link {
			t.Errorf("printed link %q, want %q", out["link"], link)
		}
		if target, err := os.Readlink(link); err != nil || target != out["pty"] {
			t.Fatalf("link -> %q (%v), want %s", target, err, out["pty"])
		}
	})
	if _, err := os.Lstat(link); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after exit: Lstat(link) = %v, want not exist", err)
	}
}
