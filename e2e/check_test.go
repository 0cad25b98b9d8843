package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/provisiond/provisiond/internal/attest"
	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/simmodem"
	"github.com/provisiond/provisiond/internal/testbed"
)

// Keys the daemon keeps for itself in the store; none may be left once everything was
// delivered.
const (
	outboxKey   = "provisiond/outbox"
	ownPrefix   = "provisiond/"
	keygenFinal = "\"\r\nOK\r\n"
)

// wantResp is an expected response: Message is exact unless Check is set.
type wantResp struct {
	ID      string
	Kind    proto.ResponseKind
	CME     uint64
	Message string
	Check   func(t *testing.T, msg string)
}

// checkUploads compares every recorded upload, response by response, and checks that each
// upload is the canonical encoding of its responses.
func checkUploads(t *testing.T, b *testbed.Bed, want [][]wantResp) []simcloud.Upload {
	t.Helper()
	ups := uploads(t, b)
	if len(ups) != len(want) {
		t.Errorf("service recorded %d uploads, want %d:\n%s", len(ups), len(want), describeUploads(ups))
	}
	for i := range min(len(ups), len(want)) {
		got, w := ups[i].Responses, want[i]
		if len(got) != len(w) {
			t.Errorf("upload %d: %d responses, want %d:\n%s", i, len(got), len(w), describeUploads(ups[i:i+1]))
			continue
		}
		for j, r := range got {
			x := w[j]
			if r.ID != x.ID || r.Kind != x.Kind || r.CMEError != x.CME {
				t.Errorf("upload %d response %d: got %s, want id %s kind %s cme %d", i, j, respString(r), x.ID, kindName(x.Kind), x.CME)
			}
			if x.Check != nil {
				x.Check(t, r.Message)
			} else if r.Message != x.Message {
				t.Errorf("upload %d response %d (%s): message %q, want %q", i, j, r.ID, r.Message, x.Message)
			}
		}
		enc, err := proto.EncodeResponses(got)
		if err != nil || !bytes.Equal(enc, ups[i].Raw) {
			t.Errorf("upload %d is not the canonical encoding of its responses (err %v)", i, err)
		}
	}
	return ups
}

func describeUploads(ups []simcloud.Upload) string {
	var s strings.Builder
	for i, u := range ups {
		fmt.Fprintf(&s, "  upload %d (%s, err %q):\n", i, u.Transport, u.Err)
		for _, r := range u.Responses {
			fmt.Fprintf(&s, "    %s\n", respString(r))
		}
	}
	return s.String()
}

// checkKeygen returns a Check for a %KEYGEN response: the modem's text verbatim, a CSR signed
// (COSE) by the device identity for the key now in the modem's tag.
func checkKeygen(b *testbed.Bed, tag uint32) func(t *testing.T, msg string) {
	return func(t *testing.T, msg string) {
		t.Helper()
		body, ok := strings.CutPrefix(msg, `%KEYGEN: "`)
		if !ok || !strings.HasSuffix(body, keygenFinal) {
			t.Errorf("KEYGEN response %q: want %%KEYGEN: \"...\"\\r\\nOK\\r\\n", msg)
			return
		}
		kg, err := attest.VerifyKeygen(strings.TrimSuffix(body, keygenFinal), b.Modem().IdentityPublicKey())
		if err != nil {
			t.Errorf("KEYGEN response does not verify against the device identity: %v", err)
			return
		}
		key := modemKey(t, b, tag)
		if key == nil || !key.PublicKey.Equal(kg.PublicKey) {
			t.Errorf("KEYGEN response is not for the key in sec tag %d (key generated twice?)", tag)
		}
	}
}

// modemKey returns the private key the modem holds in tag, or nil.
func modemKey(t *testing.T, b *testbed.Bed, tag uint32) *ecdsa.PrivateKey {
	t.Helper()
	c, ok := b.Modem().Credential(tag, simmodem.TypePrivateKey)
	if !ok {
		return nil
	}
	k, err := attest.ParsePrivateKeyPEM([]byte(c.Content))
	if err != nil {
		t.Errorf("modem key in sec tag %d: %v", tag, err)
		return nil
	}
	return k
}

// checkClientCert checks that the modem holds, in tag, a certificate issued by the service's
// CA for the private key the modem generated there.
func checkClientCert(t *testing.T, b *testbed.Bed, tag uint32) {
	t.Helper()
	c, ok := b.Modem().Credential(tag, simmodem.TypeClientCert)
	if !ok {
		t.Errorf("no client certificate in sec tag %d", tag)
		return
	}
	block, _ := pem.Decode([]byte(c.Content))
	if block == nil {
		t.Errorf("client certificate in sec tag %d is not PEM: %q", tag, c.Content)
		return
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Errorf("client certificate: %v", err)
		return
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: b.Cloud().CAPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("client certificate does not chain to the service CA: %v", err)
	}
	if key := modemKey(t, b, tag); key == nil || !key.PublicKey.Equal(cert.PublicKey) {
		t.Errorf("client certificate is not for the key the modem generated in sec tag %d", tag)
	}
}

// realisticUploads is what the realistic job must upload, given the service's queue after
// the job ran (the certificate write is queued only once the CSR came back).
func realisticUploads(t *testing.T, b *testbed.Bed) [][]wantResp {
	t.Helper()
	cmds := mustCommands(t, b)
	if len(cmds) != 6 {
		t.Fatalf("realistic job: %d device commands, want 6: %+v", len(cmds), cmds)
	}
	return [][]wantResp{
		{
			{ID: cmds[0].ID, Kind: proto.KindATResponse, Message: "+CME ERROR: 513\r\n"},
			{ID: cmds[1].ID, Kind: proto.KindATResponse, Message: "+CME ERROR: 513\r\n"},
			{ID: cmds[2].ID, Kind: proto.KindATResponse, Check: checkKeygen(b, testbed.ClientCertSecTag)},
		},
		{
			{ID: cmds[3].ID, Kind: proto.KindATResponse, Message: "OK\r\n"},
			{ID: cmds[4].ID, Kind: proto.KindConfigAck},
			{ID: cmds[5].ID, Kind: proto.KindFinishedAck},
		},
	}
}

// checkRunOnceCounts checks each AT command of the service's queue reached the modem exactly
// want times.
func checkExecutedTimes(t *testing.T, b *testbed.Bed, cmds []simcloud.Command, want int) {
	t.Helper()
	log := b.ModemCommands()
	for _, c := range cmds {
		if c.Kind != proto.KindAT {
			continue
		}
		if n := count(log, c.ATString()); n != want {
			t.Errorf("%s (%s) reached the modem %d times, want %d", short(c.ATString()), c.ID, n, want)
		}
	}
}

func count(log []string, line string) int {
	n := 0
	for _, l := range log {
		if l == line {
			n++
		}
	}
	return n
}

func short(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// checkSettings checks the cursor and interval in `provisiond settings --json` and that the
// daemon left none of its own state behind (everything delivered, modem restored).
func checkSettings(t *testing.T, st map[string]string, cursor, interval string) {
	t.Helper()
	if got := st[testbed.CursorKey]; got != cursor {
		t.Errorf("settings: cursor %q, want %q", got, cursor)
	}
	if got, ok := st[testbed.IntervalKey]; got != interval || (interval == "" && ok) {
		t.Errorf("settings: interval %q, want %q", got, interval)
	}
	for k, v := range st {
		if strings.HasPrefix(k, ownPrefix) {
			t.Errorf("settings: daemon state left behind: %s=%s", k, v)
		}
	}
}

// storedOutbox decodes the daemon's pending outbox from `provisiond settings --json`, so a
// test can compare it with what is uploaded after a restart.
func storedOutbox(t *testing.T, st map[string]string) []proto.Response {
	t.Helper()
	v, ok := st[outboxKey]
	if !ok {
		t.Fatalf("settings: no %s; keys %v", outboxKey, slices.Sorted(maps.Keys(st)))
	}
	var ob struct {
		Responses []struct {
			ID   string `json:"id"`
			Kind uint64 `json:"kind"`
			CME  uint64 `json:"cme"`
			Msg  string `json:"msg"`
		} `json:"responses"`
	}
	if err := json.Unmarshal([]byte(v), &ob); err != nil {
		t.Fatalf("settings: %s: %v", outboxKey, err)
	}
	rs := make([]proto.Response, 0, len(ob.Responses))
	for _, r := range ob.Responses {
		rs = append(rs, proto.Response{ID: r.ID, Kind: proto.ResponseKind(r.Kind), CMEError: r.CME, Message: r.Msg})
	}
	return rs
}
