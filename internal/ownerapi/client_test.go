package ownerapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/provisiond/provisiond/internal/attest"
	"github.com/provisiond/provisiond/internal/simcloud"
)

const testKey = "owner-key-0123456789abcdef"

// startCloud runs the simulated service with testKey as its API key.
func startCloud(t *testing.T) *simcloud.Server {
	t.Helper()
	s, err := simcloud.New(simcloud.Config{StateDir: t.TempDir(), APIKey: testKey, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

type device struct {
	uuid  string
	token string
}

// newDevice makes a device identity and its attestation token; register puts its key on s.
func newDevice(t *testing.T, s *simcloud.Server, register bool) device {
	t.Helper()
	key, err := attest.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	tok, err := attest.BuildToken(key, attest.Identity{MsgType: 1, DeviceUUID: raw, DeviceType: attest.DeviceTypeNRF9161})
	if err != nil {
		t.Fatal(err)
	}
	d := device{uuid: attest.FormatUUID(raw), token: tok}
	if register {
		if err := s.RegisterDevice(d.uuid, key.Public().(*ecdsa.PublicKey)); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func client(t *testing.T, s *simcloud.Server, key string) *Client {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(s.CAPEM())
	c, err := New(s.HTTPURL(), key, "provisiond/test", roots)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestBulkCSV(t *testing.T) {
	got := string(BulkCSV([]ClaimRow{{Token: "a.b"}, {Token: "c.d", Tags: []string{"x", "nrf-cloud-onboarding"}}, {Token: `q"t`}}))
	want := "\"a.b\"\n\"c.d\",\"x,nrf-cloud-onboarding\"\n\"q\"\"t\"\n"
	if got != want {
		t.Fatalf("BulkCSV = %q, want %q", got, want)
	}
}

// TestBulkClaim claims a mixed batch against the simulated service: rows that fail are
// reported by row with the service's reason, the others are claimed with their tags.
func TestBulkClaim(t *testing.T) {
	s := startCloud(t)
	ok1, ok2 := newDevice(t, s, true), newDevice(t, s, true)
	unknown := newDevice(t, s, false)
	before := newDevice(t, s, true)
	c := client(t, s, testKey)
	ctx := context.Background()
	if _, err := c.BulkClaim(ctx, []ClaimRow{{Token: before.token}}); err != nil {
		t.Fatal(err)
	}

	res, err := c.BulkClaim(ctx, []ClaimRow{
		{Token: ok1.token, Tags: []string{"lab", "line-2"}}, {Token: unknown.token},
		{Token: before.token}, {Token: ok2.token}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.ClaimedIDs, " ") != ok1.uuid+" "+ok2.uuid {
		t.Errorf("claimed %v, want %s and %s", res.ClaimedIDs, ok1.uuid, ok2.uuid)
	}
	if len(res.Failed) != 2 || res.Failed[0].Row != 2 || res.Failed[1].Row != 3 ||
		!strings.Contains(res.Failed[1].Reason, "already claimed") {
		t.Errorf("failed = %+v, want rows 2 (unknown) and 3 (already claimed)", res.Failed)
	}
	d, err := s.Device(ok1.uuid)
	if err != nil || strings.Join(d.Tags, ",") != "lab,line-2" {
		t.Errorf("device %s: tags %v (%v), want lab,line-2", ok1.uuid, d.Tags, err)
	}

	// No row claimed: the service answers an error status, and the rows still say why.
	res, err = c.BulkClaim(ctx, []ClaimRow{{Token: unknown.token}})
	if err != nil || len(res.ClaimedIDs) != 0 || len(res.Failed) != 1 {
		t.Errorf("all rows failing: %+v, %v; want one failed row and no error", res, err)
	}
}

func TestDryRun(t *testing.T) {
	s := startCloud(t)
	free, unknown := newDevice(t, s, true), newDevice(t, s, false)
	c := client(t, s, testKey)
	ctx := context.Background()
	if err := c.DryRun(ctx, free.token); err != nil {
		t.Fatalf("dry run of a claimable device: %v", err)
	}
	if _, err := s.Device(free.uuid); err != nil {
		t.Fatal(err)
	}
	if d, _ := s.Device(free.uuid); d.Claimed {
		t.Fatal("a dry run claimed the device")
	}
	var ae *APIError
	if err := c.DryRun(ctx, unknown.token); !errors.As(err, &ae) || ae.Status != http.StatusNotFound || ae.Message == "" {
		t.Fatalf("dry run of an unknown device: %v, want a 404 APIError with the service's message", err)
	}
}

// TestKeyNeverInErrors uses a wrong key, a service that echoes it and a dead address: no
// error may hold the key.
func TestKeyNeverInErrors(t *testing.T) {
	s := startCloud(t)
	dev := newDevice(t, s, true)
	const wrong = "wrong-key-fedcba9876543210"
	ctx := context.Background()

	c := client(t, s, wrong)
	_, err := c.BulkClaim(ctx, []ClaimRow{{Token: dev.token}})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Fatalf("wrong key: %v, want a 401 APIError", err)
	}
	if err := c.DryRun(ctx, dev.token); err == nil || strings.Contains(err.Error(), wrong) {
		t.Fatalf("dry run with a wrong key: %v", err)
	}
	if strings.Contains(err.Error(), wrong) {
		t.Fatalf("error %q holds the key", err)
	}

	// A service message that quotes the key is redacted.
	echo := &Client{key: wrong}
	if msg := echo.apiError("op", 401, []byte(`{"message":"bad key `+wrong+`"}`)).Error(); strings.Contains(msg, wrong) || !strings.Contains(msg, redacted) {
		t.Fatalf("echoed key not redacted: %q", msg)
	}

	dead, err := New("https://127.0.0.1:1", wrong, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dead.BulkClaim(ctx, []ClaimRow{{Token: dev.token}}); err == nil || strings.Contains(err.Error(), wrong) {
		t.Fatalf("unreachable service: %v", err)
	}
}

func TestNewRefusesBadInput(t *testing.T) {
	for _, tt := range []struct{ url, key string }{
		{"http://api.example", "k"}, {"api.example", "k"}, {"https://", "k"}, {"https://api.example", " "},
	} {
		if _, err := New(tt.url, tt.key, "", nil); err == nil {
			t.Errorf("New(%q, %q) accepted", tt.url, tt.key)
		}
	}
}
