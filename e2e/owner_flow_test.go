package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/attest"
	"github.com/provisiond/provisiond/internal/rootca"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/simmodem"
	"github.com/provisiond/provisiond/internal/testbed"
)

// nrfCloudSecTag is the security tag Nordic's owner tools use by default (0x01010001).
const nrfCloudSecTag = 16842753

// ownerAPI is an owner-side client of the simulated service that sends what Nordic's
// nrfcloud-utils sends: a bearer API key and a User-Agent, JSON or CSV bodies.
type ownerAPI struct {
	t    *testing.T
	ctx  context.Context
	base string // https://host:port/v1/
	c    *http.Client
}

func newOwnerAPI(t *testing.T, ctx context.Context, cloud *simcloud.Server) *ownerAPI {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cloud.CAPool(), MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &ownerAPI{t: t, ctx: ctx, base: cloud.HTTPURL() + "/v1/", c: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// do sends one request; a map or struct body goes as JSON, a []byte as is with hdr.
func (o *ownerAPI) do(method, path string, hdr map[string]string, body any) (int, []byte) {
	o.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			o.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
		if hdr == nil {
			hdr = map[string]string{"Content-Type": "application/json"}
		}
	}
	req, err := http.NewRequestWithContext(o.ctx, method, o.base+path, rd)
	if err != nil {
		o.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+simcloud.DefaultAPIKey)
	req.Header.Set("User-Agent", "nrfcloud-utils/replay")
	for k, v := range hdr {
		req.Header[k] = []string{v}
	}
	resp, err := o.c.Do(req)
	if err != nil {
		o.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		o.t.Fatal(err)
	}
	return resp.StatusCode, out
}

// create posts a provisioning command and returns its id, as create_provisioning_cmd_* do.
func (o *ownerAPI) create(uuid string, payload map[string]any) string {
	o.t.Helper()
	st, b := o.do("POST", "claimed-devices/"+uuid+"/provisioning", nil, payload)
	var res struct{ ID string }
	if st != 201 || json.Unmarshal(b, &res) != nil || res.ID == "" {
		o.t.Fatalf("create provisioning command: %d %s", st, b)
	}
	return res.ID
}

// result reads one command as wait_for_cmd_status does: status, then response.
func (o *ownerAPI) result(uuid, id string) (string, map[string]map[string]any) {
	o.t.Helper()
	st, b := o.do("GET", "claimed-devices/"+uuid+"/provisioning/"+id, nil, nil)
	var res struct {
		Status   string                    `json:"status"`
		Response map[string]map[string]any `json:"response"`
	}
	if st != 200 || json.Unmarshal(b, &res) != nil {
		o.t.Fatalf("get provisioning command: %d %s", st, b)
	}
	return res.Status, res.Response
}

// serverCerts is what Nordic's client writes as the server certificate: the Amazon root, and
// with CoAP the nRF Cloud CoAP root after it.
func serverCerts(transport string) string {
	if transport == testbed.TransportCoAP {
		return rootca.AmazonRootCA1 + "\n" + rootca.NRFCloudCoAP
	}
	return rootca.AmazonRootCA1
}

// parseCSRLikeNordic does what parse_keygen_output does with response.<type>.csr: split at
// '.', base64url-decode the first part as a DER CSR and check that the COSE payload's digest
// is the SHA-256 of it.
func parseCSRLikeNordic(t *testing.T, text string) *x509.CertificateRequest {
	t.Helper()
	parts := strings.Split(text, ".")
	if len(parts) != 2 {
		t.Fatalf("csr %q: want <base64url der>.<base64url cose>", text)
	}
	der, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[0], "="))
	if err != nil {
		t.Fatalf("csr der part: %v", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatalf("csr der part is no CSR: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("csr signature: %v", err)
	}
	k, err := attest.DecodeKeygen(text)
	if err != nil || k.Payload == nil {
		t.Fatalf("csr cose part: %v", err)
	}
	if sum := sha256.Sum256(der); !bytes.Equal(sum[:], k.Payload.Digest[:]) {
		t.Fatal("COSE digest does NOT match payload")
	}
	return csr
}

// ownerCA is the owner's own certificate authority, as claim_and_provision_device's --ca.
type ownerCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

func newOwnerCA(t *testing.T) ownerCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "owner test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return ownerCA{key: key, cert: cert}
}

func (ca ownerCA) sign(t *testing.T, csr *x509.CertificateRequest) string {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: csr.Subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// TestOwnerClaimAndProvision replays the owner side of Nordic's claim_and_provision_device
// request by request (unclaim, dry-run, claim, CSR job, its result parsed as the tool does,
// the certificate signed by the owner's CA, client certificate, server certificate,
// finished) against the simulated service, while the built daemon with the shipped defaults
// serves the device side.
func TestOwnerClaimAndProvision(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			b := newBed(t, ctx, testbed.Options{Transport: tr, Unclaimed: true})
			api := newOwnerAPI(t, ctx, b.Cloud())
			tok, err := b.Modem().AttestationToken()
			if err != nil {
				t.Fatal(err)
			}
			ident, err := attest.ParseToken(tok)
			if err != nil {
				t.Fatal(err)
			}
			uuid := attest.FormatUUID(ident.DeviceUUID)

			// --unclaim on a device never claimed: the tool logs the answer and goes on.
			if st, body := api.do("DELETE", "claimed-devices/"+uuid, nil, nil); st == 204 {
				t.Errorf("unclaim of an unclaimed device: %d %s", st, body)
			}
			if st, body := api.do("POST", "claimed-devices?dryrun=true", nil, map[string]any{"claimToken": tok}); st != 202 {
				t.Fatalf("dry run: %d %s, want 202", st, body)
			}
			if st, body := api.do("POST", "claimed-devices", nil, map[string]any{"claimToken": tok}); st != 201 {
				t.Fatalf("claim: %d %s, want 201", st, body)
			}
			// A second dry run says why the device cannot be claimed, in "message".
			st, body := api.do("POST", "claimed-devices?dryrun=true", nil, map[string]any{"claimToken": tok})
			var why struct{ Message string }
			if st == 202 || json.Unmarshal(body, &why) != nil || why.Message == "" {
				t.Errorf("dry run of a claimed device: %d %s, want 4xx with a message", st, body)
			}

			csrID := api.create(uuid, map[string]any{"description": "Generate CSR", "request": map[string]any{
				"certificateSigningRequest": map[string]any{"attributes": "CN=" + uuid, "keyUsage": "101010000", "secTag": nrfCloudSecTag}}})
			if status, _ := api.result(uuid, csrID); status != "PENDING" {
				t.Errorf("CSR job before the device ran: %s, want PENDING", status)
			}
			if code, _ := runOnce(t, ctx, b); code != 0 {
				t.Fatalf("run --once (CSR): exit %d", code)
			}
			status, resp := api.result(uuid, csrID)
			if status != "SUCCEEDED" {
				t.Fatalf("CSR job: %s %v, want SUCCEEDED", status, resp)
			}
			text, _ := resp["certificateSigningRequest"]["csr"].(string)
			if text == "" {
				text, _ = resp["certificateSigningRequest"]["message"].(string)
			}
			csr := parseCSRLikeNordic(t, text)
			if csr.Subject.CommonName != uuid {
				t.Errorf("CSR subject CN %q, want the device UUID", csr.Subject.CommonName)
			}
			if key := modemKey(t, b, nrfCloudSecTag); key == nil || !key.PublicKey.Equal(csr.PublicKey) {
				t.Error("the CSR does not hold the key the modem generated")
			}

			ca := newOwnerCA(t)
			certPEM := ca.sign(t, csr)
			certID := api.create(uuid, map[string]any{"description": "Update client cert", "request": map[string]any{
				"clientCertificate": map[string]any{"content": certPEM, "secTag": nrfCloudSecTag}}})
			serverID := api.create(uuid, map[string]any{"description": "Update server cert", "request": map[string]any{
				"serverCertificate": map[string]any{"content": serverCerts(tr), "secTag": nrfCloudSecTag}}})
			finID := api.create(uuid, map[string]any{"description": "Provisioning complete", "request": map[string]any{"finished": map[string]any{}}})

			code, p := runOnce(t, ctx, b)
			if code != 0 || !strings.HasPrefix(p.Stdout(), "DONE:") {
				t.Fatalf("run --once (certificates, finished): exit %d, stdout %q; want 0 and DONE", code, p.Stdout())
			}
			for _, job := range []struct{ id, typ string }{{csrID, "certificateSigningRequest"}, {certID, "clientCertificate"},
				{serverID, "serverCertificate"}, {finID, "finished"}} {
				if status, resp := api.result(uuid, job.id); status != "SUCCEEDED" || resp[job.typ] == nil {
					t.Errorf("%s job: %s %v, want SUCCEEDED with response.%s", job.typ, status, resp, job.typ)
				}
			}
			if c, ok := b.Modem().Credential(nrfCloudSecTag, simmodem.TypeClientCert); !ok || strings.TrimSpace(c.Content) != strings.TrimSpace(certPEM) {
				t.Error("the modem does not hold the owner's client certificate")
			}
			if c, ok := b.Modem().Credential(nrfCloudSecTag, simmodem.TypeRootCA); !ok || strings.TrimSpace(c.Content) != strings.TrimSpace(serverCerts(tr)) {
				t.Error("the modem does not hold the server certificates as sent")
			}
			if dev, err := b.Cloud().Device(uuid); err != nil || dev.Status != "PROVISIONED" {
				t.Errorf("device record %+v %v, want PROVISIONED", dev, err)
			}
		})
	}
}

// TestOwnerBulkClaimOnboarding claims three simulated modems with one CSV bulk claim tagged
// nrf-cloud-onboarding, after creating the tag and the rule Nordic's client creates; each
// daemon then provisions its modem from the rule alone: no command is queued per device.
func TestOwnerBulkClaimOnboarding(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			cloud, err := simcloud.New(simcloud.Config{StateDir: t.TempDir(), Logf: t.Logf})
			if err != nil {
				t.Fatal(err)
			}
			if err := cloud.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cloud.Close() })
			api := newOwnerAPI(t, ctx, cloud)

			var beds []*testbed.Bed
			var rows strings.Builder
			for range 3 {
				b := newBed(t, ctx, testbed.Options{Transport: tr, Unclaimed: true, SharedCloud: cloud})
				tok, err := b.Modem().AttestationToken()
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&rows, "%q,%q\n", tok, "nrf-cloud-onboarding")
				beds = append(beds, b)
			}

			// ensure_nrfcloud_provisioning_rule: list rules, create the tag, create the rule.
			if st, body := api.do("GET", "provisioning-rules", nil, nil); st != 200 || !strings.Contains(string(body), `"items":[]`) {
				t.Fatalf("list rules: %d %s", st, body)
			}
			if st, body := api.do("POST", "provisioning/tags", nil, map[string]any{"tag": "nrf-cloud-onboarding",
				"description": "Generated tag for rule: nRF Cloud Onboarding"}); st != 201 {
				t.Fatalf("create tag: %d %s", st, body)
			}
			rule := map[string]any{"name": "nRF Cloud Onboarding", "description": "Onboarding rule for nRF Cloud", "active": true,
				"commands": []any{
					map[string]any{"request": map[string]any{"clientPrivateKeyGeneration": map[string]any{"secTag": nrfCloudSecTag}}},
					map[string]any{"request": map[string]any{"cloudAccessKeyGeneration": map[string]any{"secTag": nrfCloudSecTag}}},
					map[string]any{"request": map[string]any{"serverCertificate": map[string]any{"secTag": nrfCloudSecTag, "content": serverCerts(tr)}}},
				},
				"tags": []string{"nrf-cloud-onboarding"}}
			if st, body := api.do("POST", "provisioning-rules", nil, rule); st != 201 {
				t.Fatalf("create rule: %d %s", st, body)
			}

			// bulk_claim_devices: the media type in a "contentType" header, every field quoted.
			st, body := api.do("POST", "claimed-devices", map[string]string{"contentType": "text/csv"}, []byte(rows.String()))
			var res struct {
				ClaimedIDs []string          `json:"claimedIds"`
				Failed     []json.RawMessage `json:"failed"`
			}
			if (st != 200 && st != 201) || json.Unmarshal(body, &res) != nil || len(res.ClaimedIDs) != 3 || len(res.Failed) != 0 {
				t.Fatalf("bulk claim: %d %s; want 3 claimed, none failed", st, body)
			}
			for i, b := range beds {
				if res.ClaimedIDs[i] != b.UUID() {
					t.Errorf("claimedIds[%d] = %s, want %s", i, res.ClaimedIDs[i], b.UUID())
				}
			}

			for _, b := range beds {
				if code, p := runOnce(t, ctx, b); code != 0 {
					t.Fatalf("run --once on %s: exit %d, stdout %q", b.UUID(), code, p.Stdout())
				}
			}
			for _, b := range beds {
				st, body := api.do("GET", "claimed-devices/"+b.UUID()+"/provisioning", nil, nil)
				var jobs struct {
					Items []json.RawMessage `json:"items"`
				}
				if st != 200 || json.Unmarshal(body, &jobs) != nil || len(jobs.Items) != 3 {
					t.Fatalf("%s: jobs %d %s, want the rule's 3", b.UUID(), st, body)
				}
				for i, raw := range jobs.Items {
					var j struct {
						Status   string                    `json:"status"`
						Response map[string]map[string]any `json:"response"`
					}
					if json.Unmarshal(raw, &j) != nil || j.Status != "SUCCEEDED" {
						t.Errorf("%s: job %d: %s, want SUCCEEDED", b.UUID(), i, raw)
					}
				}
				key := modemKey(t, b, nrfCloudSecTag)
				dev, err := cloud.Device(b.UUID())
				if err != nil || key == nil {
					t.Fatalf("%s: device %v, modem key %v", b.UUID(), err, key != nil)
				}
				if pub, err := attest.ParsePublicKeyPEM([]byte(dev.CloudAccessKey)); err != nil || !pub.Equal(&key.PublicKey) {
					t.Errorf("%s: registered cloud access key is not the modem's key: %v", b.UUID(), err)
				}
				if c, ok := b.Modem().Credential(nrfCloudSecTag, simmodem.TypeRootCA); !ok || strings.TrimSpace(c.Content) != strings.TrimSpace(serverCerts(tr)) {
					t.Errorf("%s: the modem does not hold the server certificates", b.UUID())
				}
			}
		})
	}
}
