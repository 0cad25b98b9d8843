package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/attest"
	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/simmodem"
	"github.com/provisiond/provisiond/internal/testexec"
)

// libcoapBackends are the (D)TLS builds of libcoap's tools, in the order tried. Debian's
// libcoap3-bin installs coap-client-openssl, -gnutls and -notls; a build from source installs
// plain coap-client.
var libcoapBackends = []string{"", "-openssl", "-gnutls"}

// TestLibcoapClient drives the built nrfcloudsim with libcoap's coap-client, an independent
// CoAP/DTLS stack, as a user would from a shell (docs/simulators.md, "libcoap coap-client"):
// a verified handshake and POST /p/auth-jwt, the 4.01 a fetch gets in a new DTLS session
// (authentication belongs to the session), and, through libcoap's own coap-server as a forward
// proxy that keeps one DTLS session to the service, the fetch of a queued command and the
// upload of its response. The service's owner API must show each step.
func TestLibcoapClient(t *testing.T) {
	client, server := lookLibcoap()
	if client == "" {
		t.Skip("libcoap's coap-client is not installed (apt-get install libcoap3-bin): the CoAP side is not checked against an independent stack")
	}
	t.Parallel()
	ctx := testCtx(t)
	dir := t.TempDir()
	sim := startCloudSim(t, ctx, dir)

	m, key := newLibcoapDevice(t)
	uuid := m.UUID()
	sim.registerAndClaim(t, m)
	jwtFile := filepath.Join(dir, "jwt")
	tok, err := attest.SignJWT(attest.JWTParams{Key: key, Chip: "nrf9161", DeviceUUID: uuid,
		FWUUID: m.FirmwareUUID(), IssuedAt: time.Now(), ValidFor: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, jwtFile, []byte(tok))
	base := "coaps://" + sim.coap

	t.Run("auth", func(t *testing.T) {
		out := coapClient(t, ctx, client, "-v", "7", "-R", sim.ca, "-m", "post", "-t", "60", "-f", jwtFile,
			base+"/p/auth-jwt?mver=libcoap-auth&cver=1")
		if !strings.Contains(out, "c:2.01") || !strings.Contains(out, "Max-Age:") {
			t.Errorf("coap-client got no 2.01 with Max-Age for the JWT:\n%s", out)
		}
		if d := sim.device(t, uuid); d.Mver != "libcoap-auth" {
			t.Errorf("service recorded mver %q, want libcoap-auth (the authentication did not reach it)", d.Mver)
		}
	})

	t.Run("wrong-trust-root", func(t *testing.T) {
		other := filepath.Join(dir, "other-ca.pem")
		writeFile(t, other, selfSignedCA(t))
		out := coapClient(t, ctx, client, "-B", "10", "-R", other, "-m", "post", "-t", "60", "-f", jwtFile,
			base+"/p/auth-jwt?mver=libcoap-wrong-ca&cver=1")
		if strings.Contains(out, "2.01") {
			t.Errorf("coap-client authenticated although the service's certificate is not under its trust root:\n%s", out)
		}
		if d := sim.device(t, uuid); d.Mver == "libcoap-wrong-ca" {
			t.Errorf("the request reached the service over a handshake the client should have refused")
		}
	})

	t.Run("fetch-in-new-session", func(t *testing.T) {
		out := coapClient(t, ctx, client, "-R", sim.ca, base+"/p/cmd?after=&rxMaxSize=4096&txMaxSize=4096&limit=10")
		if !strings.Contains(out, "4.01") {
			t.Errorf("a fetch in a DTLS session that never authenticated got no 4.01:\n%s", out)
		}
	})

	t.Run("proxy-fetch-upload", func(t *testing.T) {
		if server == "" {
			t.Skip("coap-server" + strings.TrimPrefix(client, "coap-client") + " is not installed: the session-keeping proxy cannot run")
		}
		proxy := startLibcoapProxy(t, ctx, server, dir, sim)
		local := strconv.Itoa(freeUDPPort(t))
		// The same local port makes each coap-client one incoming session at the proxy, which
		// keeps one DTLS session to the service for it: the authentication carries over.
		via := func(args ...string) string {
			return coapClient(t, ctx, client, append([]string{"-p", local, "-P", "coap://" + proxy}, args...)...)
		}
		if out := via("-v", "7", "-m", "post", "-t", "60", "-f", jwtFile, base+"/p/auth-jwt?mver=libcoap-proxy&cver=1"); !strings.Contains(out, "c:2.01") {
			t.Fatalf("authentication through the proxy got no 2.01:\n%s", out)
		}
		id := sim.queueAT(t, uuid, "+CGSN", "1")
		batch := filepath.Join(dir, "batch.cbor")
		out := via("-o", batch, base+"/p/cmd?after=&rxMaxSize=4096&txMaxSize=4096&limit=10")
		data, err := os.ReadFile(batch)
		if err != nil {
			t.Fatalf("coap-client wrote no batch (%v):\n%s", err, out)
		}
		cmds, err := proto.DecodeCommands(data, 10)
		if err != nil {
			t.Fatalf("fetched batch %x: %v", data, err)
		}
		if len(cmds) != 1 || cmds[0].ID != id+".e" || cmds[0].Kind != proto.KindAT ||
			cmds[0].SetCommand != "+CGSN" || cmds[0].Parameters != "1" {
			t.Fatalf("fetched %+v, want one AT command %s.e +CGSN=1", cmds, id)
		}
		const answer = "+CGSN: \"350000998317230\"\r\nOK\r\n"
		rsp, err := proto.EncodeResponses([]proto.Response{{ID: cmds[0].ID, Kind: proto.KindATResponse, Message: answer}})
		if err != nil {
			t.Fatal(err)
		}
		rspFile := filepath.Join(dir, "rsp.cbor")
		writeFile(t, rspFile, rsp)
		out = via("-v", "7", "-m", "post", "-t", "60", "-f", rspFile, base+"/p/rsp")
		if !strings.Contains(out, "c:2.04") {
			t.Errorf("upload through the proxy got no 2.04:\n%s", out)
		}
		job := sim.job(t, uuid, id)
		if job.Status != "SUCCEEDED" || job.Response.ATRequest.Message != answer {
			t.Errorf("owner API shows the command %s with response %+v, want SUCCEEDED with message %q", job.Status, job.Response, answer)
		}
	})
}

// lookLibcoap returns the first coap-client build found on PATH and the coap-server of the
// same (D)TLS backend ("" when that is missing).
func lookLibcoap() (client, server string) {
	for _, suffix := range libcoapBackends {
		if _, err := exec.LookPath("coap-client" + suffix); err != nil {
			continue
		}
		client = "coap-client" + suffix
		if _, err := exec.LookPath("coap-server" + suffix); err == nil {
			server = "coap-server" + suffix
		}
		return client, server
	}
	return "", ""
}

// coapClient runs coap-client and returns its stdout and stderr together. libcoap 4.3 exits
// 0 for error answers and even for a refused handshake, so callers judge by the output; a
// non-zero exit (bad usage, no such file) fails the test.
func coapClient(t *testing.T, ctx context.Context, bin string, args ...string) string {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// -B bounds coap-client's own wait for an answer (default 90 s).
	if !slices.Contains(args, "-B") {
		args = append([]string{"-B", "20"}, args...)
	}
	out, err := exec.CommandContext(cctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// cloudSim is a running nrfcloudsim child process.
type cloudSim struct {
	https, coap, ca string
	client          *http.Client
}

// startCloudSim builds cmd/nrfcloudsim and runs it on ephemeral loopback ports, as
// docs/simulators.md starts it, until the test ends.
func startCloudSim(t *testing.T, ctx context.Context, dir string) *cloudSim {
	t.Helper()
	bin := filepath.Join(dir, "nrfcloudsim")
	var flags []string
	if raceEnabled {
		flags = append(flags, "-race")
	}
	if err := build(ctx, bin, "github.com/provisiond/provisiond/cmd/nrfcloudsim", flags...); err != nil {
		t.Fatal(err)
	}
	cmd := testexec.Command(ctx, bin, "--state-dir", filepath.Join(dir, "cloud"),
		"--http", "127.0.0.1:0", "--coap", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		<-done
		if strings.Contains(stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("the race detector reported a data race in nrfcloudsim")
		}
		if t.Failed() {
			t.Logf("nrfcloudsim stderr:\n%s", stderr.String())
		}
	})
	lines := make(chan map[string]string, 1)
	go func() {
		defer close(done)
		kv, sent := map[string]string{}, false
		sc := bufio.NewScanner(stdout)
		for sc.Scan() && !sent {
			if k, v, ok := strings.Cut(sc.Text(), ": "); ok {
				kv[k] = v
			}
			if _, ok := kv["ca"]; ok {
				lines <- kv
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
	}()
	var kv map[string]string
	select {
	case kv = <-lines:
	case <-done:
		t.Fatalf("nrfcloudsim ended before it printed its addresses:\n%s", stderr.String())
	case <-ctx.Done():
		t.Fatalf("nrfcloudsim printed no addresses: %v", ctx.Err())
	}
	s := &cloudSim{https: kv["https"], coap: kv["coap"], ca: kv["ca"]}
	if !filepath.IsAbs(s.ca) {
		s.ca = filepath.Join(dir, s.ca)
	}
	pemData, err := os.ReadFile(s.ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		t.Fatalf("no certificate in %s", s.ca)
	}
	s.client = &http.Client{Timeout: 20 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(s.client.CloseIdleConnections)
	return s
}

// owner calls the owner API and decodes a JSON answer into out (nil: ignored); a status other
// than want fails the test.
func (s *cloudSim) owner(t *testing.T, method, path string, body []byte, want int, out any) {
	t.Helper()
	req, err := http.NewRequest(method, "https://"+s.https+"/v1"+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer sim-api-key")
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != want {
		t.Fatalf("%s %s: got %d, want %d: %s", method, path, resp.StatusCode, want, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
}

func (s *cloudSim) registerAndClaim(t *testing.T, m *simmodem.Modem) {
	t.Helper()
	s.owner(t, http.MethodPut, "/sim/devices/"+m.UUID(), m.PublicKeyPEM(), http.StatusCreated, nil)
	tok, err := m.AttestationToken()
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]string{"claimToken": tok})
	s.owner(t, http.MethodPost, "/claimed-devices", body, http.StatusCreated, nil)
}

// simDevice is the part of a /v1/sim/devices row the test reads.
type simDevice struct {
	ID   string `json:"id"`
	Mver string `json:"mver"`
}

func (s *cloudSim) device(t *testing.T, uuid string) simDevice {
	t.Helper()
	var list struct {
		Items []simDevice `json:"items"`
	}
	s.owner(t, http.MethodGet, "/sim/devices", nil, http.StatusOK, &list)
	for _, d := range list.Items {
		if d.ID == uuid {
			return d
		}
	}
	t.Fatalf("device %s not in /v1/sim/devices", uuid)
	return simDevice{}
}

func (s *cloudSim) queueAT(t *testing.T, uuid, command, params string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"request": map[string]any{
		"atRequest": map[string]string{"command": command, "parameters": params}}})
	var created struct {
		ID string `json:"id"`
	}
	s.owner(t, http.MethodPost, "/claimed-devices/"+uuid+"/provisioning", body, http.StatusCreated, &created)
	return created.ID
}

// ownerJob is the part of an owner API provisioning command the test reads.
type ownerJob struct {
	Status   string `json:"status"`
	Response struct {
		ATRequest struct {
			Message string `json:"message"`
		} `json:"atRequest"`
	} `json:"response"`
}

func (s *cloudSim) job(t *testing.T, uuid, id string) ownerJob {
	t.Helper()
	var j ownerJob
	s.owner(t, http.MethodGet, "/claimed-devices/"+uuid+"/provisioning/"+id, nil, http.StatusOK, &j)
	return j
}

// startLibcoapProxy runs libcoap's coap-server as a forward proxy on loopback and returns its
// address. It serves its clients over plain CoAP and reaches the service over DTLS, checking
// the service's certificate against the simulator's CA (-R); it needs a certificate of its
// own (-c, -j) to turn DTLS on at all, and borrows the simulator's server certificate. The
// name after the comma is one the proxy answers for itself; any other host is forwarded.
func startLibcoapProxy(t *testing.T, ctx context.Context, bin, dir string, sim *cloudSim) string {
	t.Helper()
	cloud := filepath.Dir(sim.ca)
	port := freeUDPPort(t)
	cmd := exec.CommandContext(ctx, bin, "-A", "127.0.0.1", "-p", strconv.Itoa(port),
		"-c", filepath.Join(cloud, "server.pem"), "-j", filepath.Join(cloud, "server-key.pem"),
		"-R", sim.ca, "-P", ",libcoap-proxy.invalid")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-waitErr
		if t.Failed() {
			t.Logf("%s output:\n%s", bin, out.String())
		}
	})
	// coap-server binds before it reads; a UDP port gives no connect to wait on, so wait for
	// the port to be taken.
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-waitErr:
			waitErr <- err
			t.Fatalf("%s ended: %v\n%s", bin, err, out.String())
		default:
		}
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			break
		}
		pc.Close()
		if time.Now().After(deadline) {
			t.Fatalf("%s did not bind UDP port %d", bin, port)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// freeUDPPort returns a loopback UDP port that was free a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// newLibcoapDevice makes a simulated modem (not served on a pty: the test needs only its
// identity) and returns it with its identity key, which signs the JWT as %JWT would.
func newLibcoapDevice(t *testing.T) (*simmodem.Modem, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	m, err := simmodem.New(simmodem.Config{Identity: key})
	if err != nil {
		t.Fatal(err)
	}
	return m, key
}

// selfSignedCA returns a CA certificate (PEM) that signed nothing the simulator uses.
func selfSignedCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not the simulator's CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
