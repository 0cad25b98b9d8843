package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/provisiond/provisiond/internal/attest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	dir := t.TempDir()
	key, err := attest.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := attest.MarshalPublicKeyPEM(&key.PublicKey)
	keyFile := filepath.Join(dir, "dev.pem")
	os.WriteFile(keyFile, pub, 0o644)
	uuid := "504d5632-3739-42fb-80c8-1411df972166"

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--http", "127.0.0.1:0", "--coap", "127.0.0.1:0", "--state-dir", dir,
			"--device", uuid + "=" + keyFile, "--api-key", "k", "--quiet"}, pw, io.Discard)
		pw.Close()
	}()
	lines := map[string]string{}
	sc := bufio.NewScanner(pr)
	for len(lines) < 3 && sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ": ")
		lines[k] = v
	}
	go io.Copy(io.Discard, pr)
	if lines["ca"] != filepath.Join(dir, "ca.pem") || lines["https"] == "" || lines["coap"] == "" {
		t.Fatalf("output lines = %v", lines)
	}
	caPEM, err := os.ReadFile(lines["ca"])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+lines["https"]+"/v1/sim/devices", nil)
	req.Header.Set("Authorization", "Bearer k")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var l struct {
		Items []struct{ ID string } `json:"items"`
	}
	json.NewDecoder(resp.Body).Decode(&l)
	resp.Body.Close()
	if len(l.Items) != 1 || l.Items[0].ID != uuid {
		t.Errorf("registered devices = %+v", l)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run after cancel = %v, want nil", err)
	}
}

func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "bad.pem")
	os.WriteFile(notPEM, []byte("junk"), 0o644)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "device without uuid", args: []string{"--device", "key.pem"}, want: "UUID=PUBKEY.pem"},
		{name: "missing key file", args: []string{"--device", "504d5632-3739-42fb-80c8-1411df972166=" + filepath.Join(dir, "none.pem")}, want: "no such file"},
		{name: "bad key file", args: []string{"--device", "504d5632-3739-42fb-80c8-1411df972166=" + notPEM}, want: "public key"},
		{name: "bad uuid", args: []string{"--device", "nope=" + notPEM}, want: "invalid"},
		{name: "unknown flag", args: []string{"--nope"}, want: "not defined"},
		{name: "stray argument", args: []string{"serve"}, want: "unexpected arguments"},
		{name: "bad address", args: []string{"--http", "256.0.0.1:1"}, want: "listen https"},
		{name: "negative rtt", args: []string{"--rtt", "-1ms"}, want: "negative"},
		{name: "negative processing delay", args: []string{"--processing-delay", "-1ms"}, want: "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--state-dir", t.TempDir(), "--http", "127.0.0.1:0", "--coap", "127.0.0.1:0"}, tc.args...)
			err := run(t.Context(), args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("run = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	var out strings.Builder
	if err := run(t.Context(), []string{"--version"}, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "nrfcloudsim ") {
		t.Errorf("--version = %q, %v", out.String(), err)
	}
	if err := run(t.Context(), []string{"-h"}, io.Discard, io.Discard); err != nil {
		t.Errorf("-h = %v", err)
	}
}
