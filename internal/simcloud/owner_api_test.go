package simcloud

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/provisiond/provisiond/internal/attest"
)

// ownerRaw calls the owner API with the given headers and returns the status and body.
func ownerRaw(t *testing.T, s *Server, c *http.Client, method, path string, hdr map[string]string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.HTTPURL()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+DefaultAPIKey)
	for k, v := range hdr {
		req.Header[k] = []string{v} // as given: Nordic's client sends a "contentType" header
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// parseKeygenLikeNordic reads a "csr" value the way Nordic's claim tool does: split at '.',
// base64url-decode the first part as DER, and compare the COSE payload's digest with the
// SHA-256 of that DER. It returns the DER.
func parseKeygenLikeNordic(t *testing.T, text string) []byte {
	t.Helper()
	parts := strings.Split(text, ".")
	if len(parts) != 2 {
		t.Fatalf("csr %q: want <der>.<cose>", text)
	}
	der, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[0], "="))
	if err != nil {
		t.Fatalf("csr der part: %v", err)
	}
	k, err := attest.DecodeKeygen(text)
	if err != nil || k.Payload == nil {
		t.Fatalf("csr cose part: %v", err)
	}
	if sum := sha256.Sum256(der); !bytes.Equal(sum[:], k.Payload.Digest[:]) {
		t.Fatalf("cose digest does not match the der part")
	}
	return der
}

// TestOwnerJobResponseShape runs one job of each request type through a device and reads
// it back as Nordic's tools do: status, then response.<type>.
func TestOwnerJobResponseShape(t *testing.T) {
	const tag = 42
	tests := []struct {
		name    string
		req     string // the "request" object
		typ     string
		keygen  bool // response carries the %KEYGEN answer in csr
		wantCSR bool // ... and it is a CSR, not a public key
		fields  []string
	}{
		{name: "csr", req: `{"certificateSigningRequest":{"secTag":42,"attributes":"CN=dev","keyUsage":"101010000"}}`, typ: "certificateSigningRequest", keygen: true, wantCSR: true},
		{name: "client key", req: `{"clientPrivateKeyGeneration":{"secTag":42}}`, typ: "clientPrivateKeyGeneration", keygen: true, fields: []string{"publicKey"}},
		{name: "cloud access key", req: `{"cloudAccessKeyGeneration":{"secTag":42}}`, typ: "cloudAccessKeyGeneration", keygen: true, wantCSR: true},
		{name: "client certificate by the service", req: `{"clientCertificate":{"secTag":42}}`, typ: "clientCertificate", keygen: true, wantCSR: true, fields: []string{"certificate"}},
		{name: "server certificate", req: `{"serverCertificate":{"secTag":42,"content":"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"}}`, typ: "serverCertificate", fields: []string{"message"}},
		{name: "at", req: `{"atRequest":{"command":"%CMNG","parameters":"1"}}`, typ: "atRequest", fields: []string{"message"}},
		{name: "config", req: `{"config":{"properties":{"a/b":"1"}}}`, typ: "config"},
		{name: "finished", req: `{"finished":{}}`, typ: "finished"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, Config{})
			c := httpClient(t, s)
			dev := claimedDevice(t, s)
			base := "/v1/claimed-devices/" + dev.uuid + "/provisioning"
			st, b := ownerRaw(t, s, c, "POST", base, nil, []byte(`{"description":"d","request":`+tc.req+`}`))
			var created struct{ ID string }
			if st != 201 || json.Unmarshal(b, &created) != nil || created.ID == "" {
				t.Fatalf("create: %d %s", st, b)
			}
			st, b = ownerRaw(t, s, c, "GET", base+"/"+created.ID, nil, nil)
			if st != 200 || !strings.Contains(string(b), `"status":"PENDING"`) || strings.Contains(string(b), `"response"`) {
				t.Fatalf("before delivery: %d %s", st, b)
			}
			m := newFakeModem(dev)
			runHTTP(t, newHTTPDevice(t, s, dev), m)

			st, b = ownerRaw(t, s, c, "GET", base+"/"+created.ID, nil, nil)
			var got struct {
				Status   Status                                `json:"status"`
				Response map[string]map[string]json.RawMessage `json:"response"`
			}
			if st != 200 || json.Unmarshal(b, &got) != nil {
				t.Fatalf("get: %d %s", st, b)
			}
			if got.Status != StatusSucceeded {
				t.Fatalf("status %s, want SUCCEEDED: %s", got.Status, b)
			}
			if len(got.Response) != 1 || got.Response[tc.typ] == nil {
				t.Fatalf("response %s: want one object under %q", b, tc.typ)
			}
			r := got.Response[tc.typ]
			for _, f := range tc.fields {
				if r[f] == nil {
					t.Errorf("response.%s.%s missing: %s", tc.typ, f, b)
				}
			}
			if !tc.keygen {
				return
			}
			var text string
			if err := json.Unmarshal(r["csr"], &text); err != nil {
				t.Fatalf("response.%s.csr: %v in %s", tc.typ, err, b)
			}
			der := parseKeygenLikeNordic(t, text)
			_, csrErr := x509.ParseCertificateRequest(der)
			if (csrErr == nil) != tc.wantCSR {
				t.Errorf("csr DER parses as a CSR: %v, want %v", csrErr == nil, tc.wantCSR)
			}
			key := m.keys[tag]
			k, err := attest.DecodeKeygen(text)
			if err != nil || key == nil || !k.PublicKey.Equal(&key.PublicKey) {
				t.Errorf("csr does not hold the key the modem made: %v", err)
			}
			d, err := s.Device(dev.uuid)
			if wantKey := tc.typ == "cloudAccessKeyGeneration"; err != nil || (d.CloudAccessKey != "") != wantKey {
				t.Errorf("device cloudAccessKey %q, want registered: %v", d.CloudAccessKey, wantKey)
			} else if wantKey {
				pub, err := attest.ParsePublicKeyPEM([]byte(d.CloudAccessKey))
				if err != nil || !pub.Equal(&key.PublicKey) {
					t.Errorf("cloudAccessKey is not the generated key: %v", err)
				}
			}
		})
	}
}

// TestOwnerJobFailureMessage: a failed key generation answers response.<type>.message with
// the CME code, and the jobs dropped after it say why too.
func TestOwnerJobFailureMessage(t *testing.T) {
	for _, typ := range []string{"certificateSigningRequest", "clientPrivateKeyGeneration", "cloudAccessKeyGeneration"} {
		t.Run(typ, func(t *testing.T) {
			s := startServer(t, Config{})
			c := httpClient(t, s)
			dev := claimedDevice(t, s)
			base := "/v1/claimed-devices/" + dev.uuid + "/provisioning"
			var ids []string
			for _, req := range []string{`{"` + typ + `":{"secTag":7}}`, `{"finished":{}}`} {
				st, b := ownerRaw(t, s, c, "POST", base, nil, []byte(`{"request":`+req+`}`))
				var created struct{ ID string }
				if st != 201 || json.Unmarshal(b, &created) != nil {
					t.Fatalf("create: %d %s", st, b)
				}
				ids = append(ids, created.ID)
			}
			m := newFakeModem(dev)
			m.fail["%KEYGEN"] = 514
			runHTTP(t, newHTTPDevice(t, s, dev), m)
			for i, want := range []struct{ typ, msg string }{{typ, "514"}, {"finished", "dropped"}} {
				st, b := ownerRaw(t, s, c, "GET", base+"/"+ids[i], nil, nil)
				var got struct {
					Status   Status `json:"status"`
					Response map[string]struct {
						Message string  `json:"message"`
						CSR     *string `json:"csr"`
					} `json:"response"`
				}
				if st != 200 || json.Unmarshal(b, &got) != nil {
					t.Fatalf("get: %d %s", st, b)
				}
				if r := got.Response[want.typ]; got.Status != StatusFailed || !strings.Contains(r.Message, want.msg) || r.CSR != nil {
					t.Errorf("job %d: %s; want FAILED with response.%s.message naming %q and no csr", i, b, want.typ, want.msg)
				}
			}
		})
	}
}

// TestOwnerRequestValidation: unknown types and fields are refused with 400 and a message;
// a device takes at most 20 open commands.
func TestOwnerRequestValidation(t *testing.T) {
	s := startServer(t, Config{})
	c := httpClient(t, s)
	dev := claimedDevice(t, s)
	base := "/v1/claimed-devices/" + dev.uuid + "/provisioning"
	tests := []struct {
		name, body, msg string
		status          int
	}{
		{"unknown type", `{"request":{"clientPrivateKey":{"secTag":1}}}`, "clientPrivateKey", 400},
		{"unknown field in a type", `{"request":{"cloudAccessKeyGeneration":{"secTag":1,"size":2}}}`, "size", 400},
		{"unknown top-level field", `{"request":{"finished":{}},"priority":1}`, "priority", 400},
		{"two types", `{"request":{"finished":{},"config":{"properties":{}}}}`, "exactly one", 400},
		{"trailing data", `{"request":{"finished":{}}} {}`, "after", 400},
		{"bad key usage", `{"request":{"certificateSigningRequest":{"keyUsage":"12"}}}`, "keyUsage", 400},
		{"server certificate without content", `{"request":{"serverCertificate":{"secTag":1}}}`, "content", 400},
		{"cloud access key", `{"request":{"cloudAccessKeyGeneration":{"secTag":16842753}}}`, "", 201},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, b := ownerRaw(t, s, c, "POST", base, nil, []byte(tc.body))
			if st != tc.status {
				t.Fatalf("status %d, want %d: %s", st, tc.status, b)
			}
			if tc.status == 400 {
				var e struct{ Message string }
				if json.Unmarshal(b, &e) != nil || !strings.Contains(e.Message, tc.msg) {
					t.Errorf("message %s, want one naming %q", b, tc.msg)
				}
			}
		})
	}
	// One job is open; 19 more fit, the 21st does not.
	for i := range 19 {
		if st, b := ownerRaw(t, s, c, "POST", base, nil, []byte(`{"request":{"finished":{}}}`)); st != 201 {
			t.Fatalf("job %d: %d %s", i+2, st, b)
		}
	}
	if st, b := ownerRaw(t, s, c, "POST", base, nil, []byte(`{"request":{"finished":{}}}`)); st != 409 || !strings.Contains(string(b), "limit 20") {
		t.Errorf("21st job: %d %s, want 409 naming the limit", st, b)
	}
}

// csvRows quotes every field, as Nordic's client writes its bulk claim.
func csvRows(rows ...[]string) []byte {
	var b strings.Builder
	for _, r := range rows {
		for i, f := range r {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`"` + strings.ReplaceAll(f, `"`, `""`) + `"`)
		}
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

func TestOwnerBulkClaim(t *testing.T) {
	type setup struct {
		s    *Server
		c    *http.Client
		devs []testDevice // registered, unclaimed
	}
	newSetup := func(t *testing.T, n int) setup {
		s := startServer(t, Config{})
		st := setup{s: s, c: httpClient(t, s)}
		for range n {
			d := newTestDevice(t)
			if err := s.RegisterDevice(d.uuid, &d.key.PublicKey); err != nil {
				t.Fatal(err)
			}
			st.devs = append(st.devs, d)
		}
		return st
	}
	tests := []struct {
		name    string
		hdr     map[string]string
		body    func(t *testing.T, st setup) []byte
		query   string
		status  int
		claimed int
		failed  []int // failed rows
	}{
		{name: "contentType header as Nordic sends it", hdr: map[string]string{"contentType": "text/csv"},
			body: func(t *testing.T, st setup) []byte {
				return csvRows([]string{st.devs[0].token(t)}, []string{st.devs[1].token(t), "a,b"})
			}, status: 201, claimed: 2},
		{name: "Content-Type header", hdr: map[string]string{"Content-Type": "text/csv; charset=utf-8"},
			body:   func(t *testing.T, st setup) []byte { return csvRows([]string{st.devs[0].token(t)}) },
			status: 201, claimed: 1},
		{name: "no header, unquoted", body: func(t *testing.T, st setup) []byte { return []byte(st.devs[0].token(t) + "\n") },
			status: 201, claimed: 1},
		{name: "some rows fail", hdr: map[string]string{"contentType": "text/csv"},
			body: func(t *testing.T, st setup) []byte {
				return csvRows([]string{st.devs[0].token(t)}, []string{"not-a-token"}, []string{newTestDevice(t).token(t)},
					[]string{st.devs[0].token(t)}, []string{st.devs[1].token(t), "x", "y"})
			}, status: 200, claimed: 1, failed: []int{2, 3, 4, 5}},
		{name: "no row claimed", hdr: map[string]string{"contentType": "text/csv"},
			body:   func(t *testing.T, st setup) []byte { return csvRows([]string{"garbage"}, []string{"", "tag"}) },
			status: 400, failed: []int{1, 2}},
		{name: "malformed csv", hdr: map[string]string{"contentType": "text/csv"},
			body: func(t *testing.T, st setup) []byte { return []byte("\"unterminated\n") }, status: 400},
		{name: "too many rows", hdr: map[string]string{"contentType": "text/csv"},
			body: func(t *testing.T, st setup) []byte {
				return bytes.Repeat([]byte("\"x\"\n"), maxBulkRows+1)
			}, status: 400},
		{name: "dry run", hdr: map[string]string{"contentType": "text/csv"}, query: "?dryrun=true",
			body: func(t *testing.T, st setup) []byte { return csvRows([]string{st.devs[0].token(t)}) }, status: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := newSetup(t, 2)
			code, b := ownerRaw(t, st.s, st.c, "POST", "/v1/claimed-devices"+tc.query, tc.hdr, tc.body(t, st))
			if code != tc.status {
				t.Fatalf("status %d, want %d: %s", code, tc.status, b)
			}
			var res BulkClaim
			if err := json.Unmarshal(b, &res); err != nil {
				t.Fatalf("answer %s: %v", b, err)
			}
			if len(res.ClaimedIDs) != tc.claimed {
				t.Errorf("claimedIds %v, want %d", res.ClaimedIDs, tc.claimed)
			}
			var rows []int
			for _, f := range res.Failed {
				if f.Reason == "" {
					t.Errorf("row %d failed without a reason", f.Row)
				}
				rows = append(rows, f.Row)
			}
			if fmt.Sprint(rows) != fmt.Sprint(tc.failed) && (len(rows) != 0 || len(tc.failed) != 0) {
				t.Errorf("failed rows %v, want %v", rows, tc.failed)
			}
			for i, id := range res.ClaimedIDs {
				d, err := st.s.Device(id)
				if err != nil || !d.Claimed || id != st.devs[i].uuid {
					t.Errorf("claimed id %s: %+v %v", id, d, err)
				}
			}
			if tc.name == "contentType header as Nordic sends it" {
				if d, _ := st.s.Device(st.devs[1].uuid); fmt.Sprint(d.Tags) != "[a b]" {
					t.Errorf("tags of the second row: %v, want [a b]", d.Tags)
				}
			}
		})
	}
}

func TestOwnerTagsAndRules(t *testing.T) {
	s := startServer(t, Config{})
	c := httpClient(t, s)
	const onboarding = `{"name":"nRF Cloud Onboarding","description":"d","active":true,"commands":[` +
		`{"request":{"clientPrivateKeyGeneration":{"secTag":16842753}}},` +
		`{"request":{"cloudAccessKeyGeneration":{"secTag":16842753}}},` +
		`{"request":{"serverCertificate":{"secTag":16842753,"content":"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"}}}],` +
		`"tags":["nrf-cloud-onboarding"]}`
	steps := []struct {
		name, method, path, body string
		status                   int
		want                     string // in the answer
	}{
		{"list tags, none", "GET", "/v1/provisioning/tags", "", 200, `"items":[]`},
		{"create tag", "POST", "/v1/provisioning/tags", `{"tag":"nrf-cloud-onboarding","description":"Generated tag"}`, 201, `"tag":"nrf-cloud-onboarding"`},
		{"create tag again", "POST", "/v1/provisioning/tags", `{"tag":"nrf-cloud-onboarding","description":""}`, 409, "exists"},
		{"tag with a comma", "POST", "/v1/provisioning/tags", `{"tag":"a,b"}`, 400, "comma"},
		{"tag unknown field", "POST", "/v1/provisioning/tags", `{"tag":"x","colour":"red"}`, 400, "colour"},
		{"list tags", "GET", "/v1/provisioning/tags", "", 200, `"description":"Generated tag"`},
		{"list rules, none", "GET", "/v1/provisioning-rules", "", 200, `"items":[]`},
		{"create onboarding rule", "POST", "/v1/provisioning-rules", onboarding, 201, `"cloudAccessKeyGeneration"`},
		{"create inactive rule", "POST", "/v1/provisioning-rules", `{"name":"off","active":false,"commands":[{"request":{"finished":{}}}],"tags":["nrf-cloud-onboarding"]}`, 201, `"active":false`},
		{"rule without active", "POST", "/v1/provisioning-rules", `{"name":"r","commands":[{"request":{"finished":{}}}],"tags":["t"]}`, 400, "active"},
		{"rule without tags", "POST", "/v1/provisioning-rules", `{"name":"r","active":true,"commands":[{"request":{"finished":{}}}]}`, 400, "tags"},
		{"rule without commands", "POST", "/v1/provisioning-rules", `{"name":"r","active":true,"commands":[],"tags":["t"]}`, 400, "commands"},
		{"rule with unknown type", "POST", "/v1/provisioning-rules", `{"name":"r","active":true,"commands":[{"request":{"psk":{}}}],"tags":["t"]}`, 400, "psk"},
		{"rule with a bad command", "POST", "/v1/provisioning-rules", `{"name":"r","active":true,"commands":[{"request":{"serverCertificate":{}}}],"tags":["t"]}`, 400, "command 1"},
		{"rule with 21 commands", "POST", "/v1/provisioning-rules", `{"name":"r","active":true,"commands":[` +
			strings.Repeat(`{"request":{"finished":{}}},`, 20) + `{"request":{"finished":{}}}],"tags":["t"]}`, 400, "21 commands"},
		{"list rules", "GET", "/v1/provisioning-rules", "", 200, `"total":2`},
		{"unknown rule", "GET", "/v1/provisioning-rules/nope", "", 404, "not found"},
		{"delete unknown rule", "DELETE", "/v1/provisioning-rules/nope", "", 404, "not found"},
	}
	for _, tc := range steps {
		t.Run(tc.name, func(t *testing.T) {
			st, b := ownerRaw(t, s, c, tc.method, tc.path, nil, []byte(tc.body))
			if st != tc.status || !strings.Contains(string(b), tc.want) {
				t.Errorf("%d %s, want %d containing %s", st, b, tc.status, tc.want)
			}
		})
	}
	rules := s.Rules()
	if len(rules) != 2 {
		t.Fatalf("rules %+v", rules)
	}
	if st, _ := ownerRaw(t, s, c, "GET", "/v1/provisioning-rules/"+rules[0].ID, nil, nil); st != 200 {
		t.Errorf("get rule: %d", st)
	}

	// Claims: with the tag (JSON, as Nordic's client sends it, and CSV), without, with another.
	claims := []struct {
		name string
		body func(d testDevice) []byte
		hdr  map[string]string
		jobs []string
	}{
		{"json with the tag", func(d testDevice) []byte {
			return []byte(`{"claimToken":"` + d.token(t) + `","tags":["nrf-cloud-onboarding"]}`)
		}, nil, []string{"clientPrivateKeyGeneration", "cloudAccessKeyGeneration", "serverCertificate"}},
		{"json with the tag among others", func(d testDevice) []byte {
			return []byte(`{"claimToken":"` + d.token(t) + `","tags":["x,nrf-cloud-onboarding"]}`)
		}, nil, []string{"clientPrivateKeyGeneration", "cloudAccessKeyGeneration", "serverCertificate"}},
		{"csv with the tag", func(d testDevice) []byte { return csvRows([]string{d.token(t), "nrf-cloud-onboarding"}) },
			map[string]string{"contentType": "text/csv"}, []string{"clientPrivateKeyGeneration", "cloudAccessKeyGeneration", "serverCertificate"}},
		{"json without tags", func(d testDevice) []byte { return []byte(`{"claimToken":"` + d.token(t) + `"}`) }, nil, nil},
		{"json with another tag", func(d testDevice) []byte {
			return []byte(`{"claimToken":"` + d.token(t) + `","tags":["other"]}`)
		}, nil, nil},
	}
	for _, tc := range claims {
		t.Run(tc.name, func(t *testing.T) {
			d := newTestDevice(t)
			if err := s.RegisterDevice(d.uuid, &d.key.PublicKey); err != nil {
				t.Fatal(err)
			}
			if st, b := ownerRaw(t, s, c, "POST", "/v1/claimed-devices", tc.hdr, tc.body(d)); st != 201 {
				t.Fatalf("claim: %d %s", st, b)
			}
			jobs, err := s.Jobs(d.uuid)
			if err != nil {
				t.Fatal(err)
			}
			var types []string
			for _, j := range jobs {
				types = append(types, j.Request.Type())
			}
			if fmt.Sprint(types) != fmt.Sprint(tc.jobs) {
				t.Errorf("queued %v, want %v", types, tc.jobs)
			}
		})
	}
	// A deleted rule no longer applies.
	if st, _ := ownerRaw(t, s, c, "DELETE", "/v1/provisioning-rules/"+rules[0].ID, nil, nil); st != 204 {
		t.Fatalf("delete rule: %d", st)
	}
	d := newTestDevice(t)
	if err := s.RegisterDevice(d.uuid, &d.key.PublicKey); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(d.token(t), "nrf-cloud-onboarding"); err != nil {
		t.Fatal(err)
	}
	if jobs, _ := s.Jobs(d.uuid); len(jobs) != 0 {
		t.Errorf("a deleted rule queued %d jobs", len(jobs))
	}
}

// TestOnboardingRuleRuns: the rule Nordic's client creates runs to the end on a device.
func TestOnboardingRuleRuns(t *testing.T) {
	s := startServer(t, Config{})
	if _, err := s.CreateRule(Rule{Name: "nRF Cloud Onboarding", Active: true, Tags: []string{"nrf-cloud-onboarding"},
		Commands: []RuleCommand{
			{Request: Request{ClientPrivateKeyGeneration: &KeyGenerationRequest{SecTag: DefaultSecTag}}},
			{Request: Request{CloudAccessKeyGeneration: &KeyGenerationRequest{SecTag: DefaultSecTag}}},
			{Request: Request{ServerCertificate: &CredentialRequest{SecTag: DefaultSecTag, Content: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"}}},
		}}); err != nil {
		t.Fatal(err)
	}
	d := newTestDevice(t)
	if err := s.RegisterDevice(d.uuid, &d.key.PublicKey); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(d.token(t), "nrf-cloud-onboarding"); err != nil {
		t.Fatal(err)
	}
	m := newFakeModem(d)
	c := newCoAPDevice(t, s, d, 6)
	runCoAP(t, c, m)
	jobs, err := s.Jobs(d.uuid)
	if err != nil || len(jobs) != 3 {
		t.Fatalf("jobs %+v %v", jobs, err)
	}
	for _, j := range jobs {
		if j.Status != StatusSucceeded {
			t.Errorf("job %s: %s", j.Request.Type(), j.Status)
		}
	}
	dev, _ := s.Device(d.uuid)
	if pub, err := attest.ParsePublicKeyPEM([]byte(dev.CloudAccessKey)); err != nil || !pub.Equal(&m.keys[DefaultSecTag].PublicKey) {
		t.Errorf("cloud access key not the last key generated in the tag: %v", err)
	}
}
