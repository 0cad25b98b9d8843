package simcloud

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/pkg/runner/periodic"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"go.uber.org/goleak"

	"github.com/provisiond/provisiond/internal/attest"
	"github.com/provisiond/provisiond/internal/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startServer starts a server on ephemeral ports and closes it when the test ends.
func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// testDevice is a simulated nRF91 identity: its key signs JWTs and attestation tokens.
type testDevice struct {
	key  *ecdsa.PrivateKey
	raw  [16]byte
	uuid string
}

func newTestDevice(t *testing.T) testDevice {
	t.Helper()
	key, err := attest.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	var raw [16]byte
	rand.Read(raw[:])
	return testDevice{key: key, raw: raw, uuid: attest.FormatUUID(raw)}
}

// jwt signs a modem-style JWT valid for 5 minutes from now.
func (d testDevice) jwt(t *testing.T) string {
	t.Helper()
	return d.jwtWith(t, attest.JWTParams{IssuedAt: time.Now(), ValidFor: 5 * time.Minute})
}

func (d testDevice) jwtWith(t *testing.T, p attest.JWTParams) string {
	t.Helper()
	if p.Key == nil {
		p.Key = d.key
	}
	if p.Chip == "" {
		p.Chip = "nrf9161"
	}
	if p.DeviceUUID == "" {
		p.DeviceUUID = d.uuid
	}
	if p.FWUUID == "" {
		p.FWUUID = "00000000-1111-2222-3333-444444444444"
	}
	tok, err := attest.SignJWT(p)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (d testDevice) token(t *testing.T) string {
	t.Helper()
	tok, err := attest.BuildToken(d.key, attest.Identity{MsgType: 1, DeviceUUID: d.raw, DeviceType: attest.DeviceTypeNRF9161})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// claimedDevice registers and claims a new device on s.
func claimedDevice(t *testing.T, s *Server) testDevice {
	t.Helper()
	d := newTestDevice(t)
	if err := s.RegisterDevice(d.uuid, &d.key.PublicKey); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(d.token(t)); err != nil {
		t.Fatal(err)
	}
	return d
}

// httpClient trusts only the simulator's CA.
func httpClient(t *testing.T, s *Server) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.CAPool(), MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// httpDevice speaks the device side of the HTTP protocol.
type httpDevice struct {
	t   *testing.T
	c   *http.Client
	s   *Server
	dev testDevice
}

func newHTTPDevice(t *testing.T, s *Server, d testDevice) *httpDevice {
	return &httpDevice{t: t, c: httpClient(t, s), s: s, dev: d}
}

func (h *httpDevice) do(method, path, token string, body []byte) (int, []byte, error) {
	h.t.Helper()
	req, err := http.NewRequestWithContext(h.t.Context(), method, h.s.HTTPURL()+path, bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/cbor")
	}
	resp, err := h.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// fetch GETs commands with the given raw query; it fails the test on a transport error.
func (h *httpDevice) fetch(query string) (int, []byte) {
	h.t.Helper()
	st, b, err := h.do(http.MethodGet, "/v1/provisioning/commands?"+query, h.dev.jwt(h.t), nil)
	if err != nil {
		h.t.Fatalf("fetch: %v", err)
	}
	return st, b
}

func (h *httpDevice) upload(body []byte) int {
	h.t.Helper()
	st, b, err := h.do(http.MethodPost, "/v1/provisioning/response", h.dev.jwt(h.t), body)
	if err != nil {
		h.t.Fatalf("upload: %v", err)
	}
	if st != http.StatusOK {
		h.t.Logf("upload answer %d: %s", st, b)
	}
	return st
}

// coapDevice speaks the device side of the CoAP protocol over one DTLS session.
type coapDevice struct {
	t   *testing.T
	cc  *udpclient.Conn
	dev testDevice
}

func newCoAPDevice(t *testing.T, s *Server, d testDevice, szx blockwise.SZX) *coapDevice {
	t.Helper()
	stop := make(chan struct{})
	cc, err := dtls.Dial(s.CoAPAddr(), dtls.NewDTLSClientOptions(
		piondtls.WithRootCAs(s.CAPool()),
		piondtls.WithServerName("localhost"),
		piondtls.WithConnectionIDGenerator(piondtls.OnlySendCIDGenerator()),
	),
		options.WithErrors(func(err error) { t.Logf("coap client: %v", err) }),
		options.WithPeriodicRunner(periodic.New(stop, 100*time.Millisecond)),
		options.WithBlockwise(true, szx, 10*time.Second),
	)
	if err != nil {
		t.Fatalf("dial coap: %v", err)
	}
	t.Cleanup(func() {
		cc.Close()
		<-cc.Done()
		close(stop)
	})
	return &coapDevice{t: t, cc: cc, dev: d}
}

func queries(qs ...string) []message.Option {
	var out []message.Option
	for _, q := range qs {
		out = append(out, message.Option{ID: message.URIQuery, Value: []byte(q)})
	}
	return out
}

func (c *coapDevice) auth(token string) (codes.Code, error) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 20*time.Second)
	defer cancel()
	resp, err := c.cc.Post(ctx, pathAuth, message.AppCBOR, strings.NewReader(token), queries("mver=mfw_nrf91x1_2.0.2", "cver=test")...)
	if err != nil {
		return 0, err
	}
	defer c.cc.ReleaseMessage(resp)
	return resp.Code(), nil
}

func (c *coapDevice) fetch(qs ...string) (codes.Code, []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 20*time.Second)
	defer cancel()
	resp, err := c.cc.Get(ctx, pathCommands, queries(qs...)...)
	if err != nil {
		c.t.Fatalf("coap fetch: %v", err)
	}
	defer c.cc.ReleaseMessage(resp)
	b, err := resp.ReadBody()
	if err != nil {
		c.t.Fatalf("coap fetch body: %v", err)
	}
	return resp.Code(), b
}

func (c *coapDevice) upload(body []byte) codes.Code {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 20*time.Second)
	defer cancel()
	resp, err := c.cc.Post(ctx, pathResponse, message.AppCBOR, bytes.NewReader(body))
	if err != nil {
		c.t.Fatalf("coap upload: %v", err)
	}
	defer c.cc.ReleaseMessage(resp)
	return resp.Code()
}

// fakeModem executes command batches the way the device library does (docs/protocol.md §4.1),
// with just enough of an nRF91 behind it for the jobs the simulator queues.
type fakeModem struct {
	dev   testDevice
	keys  map[uint32]*ecdsa.PrivateKey // client keys made by %KEYGEN
	certs map[uint32]string            // client certificates written by %CMNG
	fail  map[string]uint64            // set command → CME error to answer
}

func newFakeModem(d testDevice) *fakeModem {
	return &fakeModem{dev: d, keys: map[uint32]*ecdsa.PrivateKey{}, certs: map[uint32]string{}, fail: map[string]uint64{}}
}

// run executes a batch and returns its responses and whether FINISHED was acknowledged.
func (m *fakeModem) run(t *testing.T, cmds []proto.Command) ([]proto.Response, bool) {
	t.Helper()
	var out []proto.Response
	finished := ""
	for _, c := range cmds {
		switch c.Kind {
		case proto.KindFinished:
			finished = c.ID
		case proto.KindConfig:
			out = append(out, proto.Response{ID: c.ID, Kind: proto.KindConfigAck})
		case proto.KindAT:
			if code, ok := m.fail[c.SetCommand]; ok {
				out = append(out, proto.Response{ID: c.ID, Kind: proto.KindError, CMEError: code, Message: fmt.Sprintf("+CME ERROR: %d", code)})
				return out, false
			}
			out = append(out, proto.Response{ID: c.ID, Kind: proto.KindATResponse, Message: m.at(t, c)})
		}
	}
	if finished != "" {
		out = append(out, proto.Response{ID: finished, Kind: proto.KindFinishedAck})
	}
	return out, finished != ""
}

func (m *fakeModem) at(t *testing.T, c proto.Command) string {
	t.Helper()
	args := strings.SplitN(c.Parameters, ",", 4)
	tag := func() uint32 {
		n, err := strconv.ParseUint(args[1], 10, 32)
		if err != nil {
			t.Fatalf("%s: sec tag %q", c.ATString(), args[1])
		}
		return uint32(n)
	}
	switch c.SetCommand {
	case "%KEYGEN":
		args = strings.SplitN(c.Parameters, ",", 4)
		n, _ := strconv.ParseUint(args[0], 10, 32)
		format, _ := strconv.Atoi(args[2])
		key, err := attest.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		ans, err := attest.BuildKeygen(attest.KeygenParams{Identity: m.dev.key, DeviceUUID: m.dev.raw,
			SecTag: uint32(n), Format: format, Key: key})
		if err != nil {
			t.Fatal(err)
		}
		m.keys[uint32(n)] = key
		return "%KEYGEN: \"" + ans + "\"\r\nOK\r\n"
	case "%CMNG":
		if args[0] == "0" && args[2] == "1" {
			m.certs[tag()] = strings.Trim(args[3], `"`)
		}
	}
	return "OK\r\n"
}

// runJob drives the session loop both transports share (docs/protocol.md §1.5, §2.4) until no
// commands or FINISHED: fetch returns the batch after the cursor (empty when none), upload
// sends a response batch.
func runJob(t *testing.T, m *fakeModem, fetch func(after string) []byte, upload func(body []byte)) (rounds int) {
	t.Helper()
	after := ""
	for rounds = 1; rounds < 20; rounds++ {
		body := fetch(after)
		if len(body) == 0 {
			return rounds
		}
		cmds, err := proto.DecodeCommands(body, 10)
		if err != nil {
			t.Fatalf("decode batch: %v", err)
		}
		rs, finished := m.run(t, cmds)
		after = cmds[len(cmds)-1].ID
		up, err := proto.EncodeResponses(rs)
		if err != nil {
			t.Fatal(err)
		}
		upload(up)
		if finished {
			return rounds
		}
	}
	t.Fatal("no end after 20 rounds")
	return rounds
}

// runHTTP runs a job over HTTP: a request per fetch and per upload.
func runHTTP(t *testing.T, h *httpDevice, m *fakeModem) (rounds int) {
	t.Helper()
	return runJob(t, m, func(after string) []byte {
		st, body := h.fetch("after=" + after + "&rxMaxSize=2304&txMaxSize=2304&mver=mfw&cver=test&limit=10")
		if st == http.StatusNoContent {
			return nil
		}
		if st != http.StatusOK || len(body) == 0 {
			t.Fatalf("fetch: status %d: %q", st, body)
		}
		return body
	}, func(up []byte) {
		if st := h.upload(up); st != http.StatusOK {
			t.Fatalf("upload: status %d", st)
		}
	})
}

// runCoAP runs a job on one DTLS session, authenticating before every fetch.
func runCoAP(t *testing.T, c *coapDevice, m *fakeModem) (rounds int) {
	t.Helper()
	jwt := c.dev.jwt(t)
	return runJob(t, m, func(after string) []byte {
		if code, err := c.auth(jwt); err != nil || code != codes.Created {
			t.Fatalf("auth: %v %v", code, err)
		}
		code, body := c.fetch("after="+after, "rxMaxSize=2304", "txMaxSize=2304", "limit=10")
		if code != codes.Content {
			t.Fatalf("fetch: %v: %s", code, body)
		}
		return body
	}, func(up []byte) {
		if code := c.upload(up); code != codes.Changed {
			t.Fatalf("upload: %v", code)
		}
	})
}

// owner calls the owner API and decodes a JSON answer into out (if not nil).
func owner(t *testing.T, s *Server, c *http.Client, method, path, key string, in any, out any) int {
	t.Helper()
	var body io.Reader
	if b, ok := in.([]byte); ok {
		body = bytes.NewReader(b)
	} else if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, s.HTTPURL()+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	if resp.StatusCode >= 300 {
		t.Logf("%s %s → %d %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode
}

// verifyClientCert checks that certPEM chains to the simulator's CA for client auth and
// certifies pub.
func verifyClientCert(t *testing.T, s *Server, certPEM string, pub *ecdsa.PublicKey) {
	t.Helper()
	blk, _ := pem.Decode([]byte(certPEM))
	if blk == nil {
		t.Fatalf("certificate is not PEM: %q", certPEM)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: s.CAPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("issued certificate does not chain to the CA: %v", err)
	}
	got, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !got.Equal(pub) {
		t.Errorf("issued certificate's public key does not match the generated key")
	}
}

func attestPublicPEM(d testDevice) ([]byte, error) {
	return attest.MarshalPublicKeyPEM(&d.key.PublicKey)
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }
func bytesReader(b []byte) *bytes.Reader     { return bytes.NewReader(b) }
