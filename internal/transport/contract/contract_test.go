package contract

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/provisiond/provisiond/internal/attest"
	"github.com/provisiond/provisiond/internal/coaptransport"
	"github.com/provisiond/provisiond/internal/httptransport"
	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// uplink is what the daemon uses of a transport session; both Session types satisfy it.
type uplink interface {
	Fetch(ctx context.Context, req transport.FetchRequest) ([]byte, error)
	Upload(ctx context.Context, req transport.UploadRequest) error
	Stats() transport.Stats
	Close() error
}

// opener starts one provisioning attempt against sim with the given request timeout.
type opener func(t testing.TB, sim *simcloud.Server, timeout time.Duration) (uplink, error)

// subject is one transport under test and the outcomes in which the transports differ on
// purpose.
type subject struct {
	name string
	open opener
	// silent is what the client reports when the service takes a request and never answers
	// (simcloud's "drop" fault): HTTP hangs up on it, CoAP acknowledges and stays silent.
	silent error
}

func subjects() []subject {
	return []subject{
		{name: "http", open: openHTTP, silent: transport.ErrShutdown},
		{name: "coap", open: openCoAP, silent: transport.ErrTimeout},
	}
}

func openHTTP(t testing.TB, sim *simcloud.Server, timeout time.Duration) (uplink, error) {
	t.Helper()
	tr, err := httptransport.New(httptransport.Config{
		Hostname: "127.0.0.1", Port: port(t, sim.HTTPAddr()), RootCAs: sim.CAPool(),
		Timeout: timeout, UserAgent: "provisiond/contract",
	})
	if err != nil {
		t.Fatal(err)
	}
	return asUplink(tr.Open(context.Background()))
}

func openCoAP(t testing.TB, sim *simcloud.Server, timeout time.Duration) (uplink, error) {
	t.Helper()
	tr, err := coaptransport.New(coaptransport.Config{
		Hostname: "127.0.0.1", Port: port(t, sim.CoAPAddr()), RootCAs: sim.CAPool(), Timeout: timeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	return asUplink(tr.Open(context.Background()))
}

// asUplink passes on what a transport's Open returned, with no session (not a typed nil) on
// failure.
func asUplink[S uplink](s S, err error) (uplink, error) {
	if err != nil {
		return nil, err
	}
	return s, nil
}

func port(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// startSim runs a simulated Provisioning Service on ephemeral loopback ports.
func startSim(t testing.TB) *simcloud.Server {
	t.Helper()
	sim, err := simcloud.New(simcloud.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sim.Close(); err != nil {
			t.Errorf("simcloud Close: %v", err)
		}
	})
	return sim
}

// device is the identity side of a simulated nRF91: its key signs JWTs, attestation tokens
// and KEYGEN answers.
type device struct {
	key  *ecdsa.PrivateKey
	raw  [16]byte
	uuid string
}

// newDevice registers a fresh identity with sim and, if claim is set, claims it.
func newDevice(t testing.TB, sim *simcloud.Server, claim bool) device {
	t.Helper()
	key, err := attest.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	var d device
	d.key = key
	if _, err := rand.Read(d.raw[:]); err != nil {
		t.Fatal(err)
	}
	d.uuid = attest.FormatUUID(d.raw)
	if err := sim.RegisterDevice(d.uuid, &key.PublicKey); err != nil {
		t.Fatal(err)
	}
	if claim {
		tok, err := attest.BuildToken(key, attest.Identity{MsgType: 1, DeviceUUID: d.raw, DeviceType: attest.DeviceTypeNRF9161})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sim.Claim(tok); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// jwt signs a modem-style ES256 JWT, iss "nrf9161.<uuid>", valid for five minutes.
func (d device) jwt(t testing.TB) string {
	t.Helper()
	tok, err := attest.SignJWT(attest.JWTParams{Key: d.key, Chip: "nrf9161", DeviceUUID: d.uuid,
		FWUUID: "00000000-1111-2222-3333-444444444444", IssuedAt: time.Now(), ValidFor: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (d device) fetchReq(t testing.TB, after string) transport.FetchRequest {
	return transport.FetchRequest{After: after, RxMaxSize: 2048, TxMaxSize: 2048, Limit: 10,
		ModemVersion: "mfw_nrf9161_2.0.1", ClientVersion: "contract", JWT: d.jwt(t)}
}

func enqueue(t testing.TB, sim *simcloud.Server, d device, reqs ...simcloud.Request) []simcloud.Job {
	t.Helper()
	jobs, err := sim.Enqueue(d.uuid, reqs...)
	if err != nil {
		t.Fatal(err)
	}
	return jobs
}

func atRequest(cmd string) simcloud.Request {
	return simcloud.Request{ATRequest: &simcloud.ATRequest{Command: cmd}}
}

func decode(t testing.TB, body []byte) []proto.Command {
	t.Helper()
	cmds, err := proto.DecodeCommands(body, proto.DefaultMaxCommands)
	if err != nil {
		t.Fatalf("decode batch: %v", err)
	}
	return cmds
}

func encode(t testing.TB, rs ...proto.Response) []byte {
	t.Helper()
	b, err := proto.EncodeResponses(rs)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ok answers every command of a batch with success, as a modem that said OK would.
func ok(cmds []proto.Command) []proto.Response {
	rs := make([]proto.Response, len(cmds))
	for i, c := range cmds {
		switch c.Kind {
		case proto.KindAT:
			rs[i] = proto.Response{ID: c.ID, Kind: proto.KindATResponse, Message: "OK\r\n"}
		case proto.KindConfig:
			rs[i] = proto.Response{ID: c.ID, Kind: proto.KindConfigAck}
		case proto.KindFinished:
			rs[i] = proto.Response{ID: c.ID, Kind: proto.KindFinishedAck}
		}
	}
	return rs
}

func jobStatus(t testing.TB, sim *simcloud.Server, d device, id string) simcloud.Status {
	t.Helper()
	j, err := sim.Job(d.uuid, id)
	if err != nil {
		t.Fatal(err)
	}
	return j.Status
}

func TestUplinkContract(t *testing.T) {
	for _, s := range subjects() {
		t.Run(s.name, func(t *testing.T) { testUplink(t, s) })
	}
}

// testUplink is the behaviour the daemon relies on, whatever the transport.
func testUplink(t *testing.T, s subject) {
	ctx := context.Background()
	// attempt opens a session for one test and closes it when the test ends.
	attempt := func(t *testing.T, sim *simcloud.Server, timeout time.Duration) uplink {
		t.Helper()
		u, err := s.open(t, sim, timeout)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() {
			if err := u.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return u
	}

	t.Run("nothing queued is ErrNoCommands", func(t *testing.T) {
		sim := startSim(t)
		d := newDevice(t, sim, true)
		u := attempt(t, sim, 5*time.Second)
		_, err := u.Fetch(ctx, d.fetchReq(t, ""))
		if !errors.Is(err, transport.ErrNoCommands) {
			t.Fatalf("Fetch: got %v, want ErrNoCommands", err)
		}
	})

	t.Run("unclaimed and unknown devices are ErrNotClaimed", func(t *testing.T) {
		sim := startSim(t)
		unclaimed := newDevice(t, sim, false)
		stranger := device{key: unclaimed.key, uuid: "00000000-0000-4000-8000-000000000000"}
		u := attempt(t, sim, 5*time.Second)
		for _, d := range []device{unclaimed, stranger} {
			_, err := u.Fetch(ctx, d.fetchReq(t, ""))
			if !errors.Is(err, transport.ErrNotClaimed) {
				t.Errorf("Fetch as %s: got %v, want ErrNotClaimed", d.uuid, err)
			}
			err = u.Upload(ctx, transport.UploadRequest{JWT: d.jwt(t), Body: encode(t, proto.Response{ID: "x", Kind: proto.KindFinishedAck})})
			if !errors.Is(err, transport.ErrNotClaimed) {
				t.Errorf("Upload as %s: got %v, want ErrNotClaimed", d.uuid, err)
			}
		}
	})

	t.Run("a JWT signed by another key is refused", func(t *testing.T) {
		sim := startSim(t)
		d := newDevice(t, sim, true)
		impostor := d
		impostor.key, _ = attest.GenerateKey()
		u := attempt(t, sim, 5*time.Second)
		if _, err := u.Fetch(ctx, impostor.fetchReq(t, "")); !errors.Is(err, transport.ErrNotClaimed) {
			t.Fatalf("Fetch: got %v, want ErrNotClaimed", err)
		}
	})

	t.Run("fetch, upload and the cursor", func(t *testing.T) {
		sim := startSim(t)
		d := newDevice(t, sim, true)
		jobs := enqueue(t, sim, d, atRequest("%SHORTSWVER"), atRequest("+CGSN"), atRequest("%XMODEMUUID"))
		u := attempt(t, sim, 5*time.Second)

		req := d.fetchReq(t, "")
		req.Limit = 2
		body, err := u.Fetch(ctx, req)
		if err != nil {
			t.Fatalf("Fetch 1: %v", err)
		}
		cmds := decode(t, body)
		if len(cmds) != 2 || cmds[0].SetCommand != "%SHORTSWVER" || cmds[1].SetCommand != "+CGSN" {
			t.Fatalf("batch 1: got %+v, want the first two commands", cmds)
		}
		rs := ok(cmds)
		rs[0].Message = "%SHORTSWVER: nrf9161_2.0.1\r\nOK\r\n"
		if err := u.Upload(ctx, transport.UploadRequest{JWT: d.jwt(t), Body: encode(t, rs...)}); err != nil {
			t.Fatalf("Upload 1: %v", err)
		}
		if st := jobStatus(t, sim, d, jobs[0].ID); st != simcloud.StatusSucceeded {
			t.Errorf("job 1: got %s, want SUCCEEDED", st)
		}

		body, err = u.Fetch(ctx, d.fetchReq(t, cmds[1].ID))
		if err != nil {
			t.Fatalf("Fetch 2: %v", err)
		}
		cmds = decode(t, body)
		if len(cmds) != 1 || cmds[0].SetCommand != "%XMODEMUUID" {
			t.Fatalf("batch 2: got %+v, want the third command", cmds)
		}
		if err := u.Upload(ctx, transport.UploadRequest{JWT: d.jwt(t), Body: encode(t, ok(cmds)...)}); err != nil {
			t.Fatalf("Upload 2: %v", err)
		}
		if _, err := u.Fetch(ctx, d.fetchReq(t, cmds[0].ID)); !errors.Is(err, transport.ErrNoCommands) {
			t.Fatalf("Fetch 3: got %v, want ErrNoCommands", err)
		}
		uploads, err := sim.Responses(d.uuid)
		if err != nil {
			t.Fatal(err)
		}
		if len(uploads) != 2 || uploads[0].Transport != s.name || uploads[0].Responses[0].Message != rs[0].Message {
			t.Errorf("recorded uploads: got %+v", uploads)
		}
		dev, err := sim.Device(d.uuid)
		if err != nil {
			t.Fatal(err)
		}
		if dev.ModemVersion != "mfw_nrf9161_2.0.1" || dev.ClientVersion != "contract" {
			t.Errorf("service saw mver %q cver %q", dev.ModemVersion, dev.ClientVersion)
		}
	})

	t.Run("an error response drops the rest of the queue", func(t *testing.T) {
		sim := startSim(t)
		d := newDevice(t, sim, true)
		jobs := enqueue(t, sim, d, atRequest("+CFUN=4"), atRequest("%CMNG=1"))
		u := attempt(t, sim, 5*time.Second)
		body, err := u.Fetch(ctx, d.fetchReq(t, ""))
		if err != nil {
			t.Fatal(err)
		}
		cmds := decode(t, body)
		rs := []proto.Response{{ID: cmds[0].ID, Kind: proto.KindError, CMEError: 518, Message: "+CME ERROR: 518\r\n"}}
		if err := u.Upload(ctx, transport.UploadRequest{JWT: d.jwt(t), Body: encode(t, rs...)}); err != nil {
			t.Fatal(err)
		}
		for _, j := range jobs {
			if st := jobStatus(t, sim, d, j.ID); st != simcloud.StatusFailed {
				t.Errorf("job %s: got %s, want FAILED", j.ID, st)
			}
		}
		if _, err := u.Fetch(ctx, d.fetchReq(t, cmds[0].ID)); !errors.Is(err, transport.ErrNoCommands) {
			t.Fatalf("Fetch after the error: got %v, want ErrNoCommands", err)
		}
	})

	t.Run("a batch that does not fit rxMaxSize is a bad request naming the size", func(t *testing.T) {
		sim := startSim(t)
		d := newDevice(t, sim, true)
		enqueue(t, sim, d, atRequest("%CMNG=0,42,0,\""+strings.Repeat("A", 600)+"\""))
		u := attempt(t, sim, 5*time.Second)
		req := d.fetchReq(t, "")
		req.RxMaxSize = 256
		_, err := u.Fetch(ctx, req)
		if !errors.Is(err, transport.ErrBadRequest) {
			t.Fatalf("Fetch: got %v, want ErrBadRequest", err)
		}
		var small *transport.RxTooSmallError
		if !errors.As(err, &small) {
			t.Fatalf("Fetch: got %v (%T), want a *transport.RxTooSmallError", err, err)
		}
		if small.RxMaxSize != 256 || small.Need <= 600 {
			t.Fatalf("RxTooSmallError %+v: want RxMaxSize 256 and Need over the 600-byte certificate", small)
		}
		// Exactly the size named is enough, one byte less is not.
		req.RxMaxSize = small.Need - 1
		if _, err := u.Fetch(ctx, req); !errors.As(err, &small) {
			t.Fatalf("Fetch with one byte less than named: got %v, want a *transport.RxTooSmallError", err)
		}
		req.RxMaxSize = small.Need
		body, err := u.Fetch(ctx, req)
		if err != nil {
			t.Fatalf("Fetch with the size named: %v", err)
		}
		if cmds := decode(t, body); len(cmds) != 1 {
			t.Fatalf("Fetch with the size named: %d commands, want 1", len(cmds))
		}
	})

	faults := []struct {
		name  string
		fault simcloud.Fault
		op    string // "fetch" or "upload"
		want  error
		// fresh checks recovery with a new attempt: a slow server is still busy with the
		// abandoned request, and over CoAP it serves one session's requests in order.
		fresh bool
	}{
		{name: "busy fetch", fault: simcloud.Fault{Kind: simcloud.FaultBusy, Count: 1}, op: "fetch", want: transport.ErrBusy},
		{name: "busy 503", fault: simcloud.Fault{Kind: simcloud.FaultBusy, Count: 1, HTTPStatus: 503}, op: "fetch", want: transport.ErrBusy},
		{name: "refused upload", fault: simcloud.Fault{Kind: simcloud.FaultFailUpload, Count: 1}, op: "upload", want: transport.ErrBusy},
		{name: "unauthorized", fault: simcloud.Fault{Kind: simcloud.FaultUnauthorized, Count: 1}, op: "fetch", want: transport.ErrNotClaimed},
		{name: "slow answer times out", fault: simcloud.Fault{Kind: simcloud.FaultSlow, Count: 1, Delay: 2 * time.Second, Op: simcloud.OpFetch},
			op: "fetch", want: transport.ErrTimeout, fresh: true},
		{name: "no answer", fault: simcloud.Fault{Kind: simcloud.FaultDrop, Count: 1, Op: simcloud.OpFetch}, op: "fetch", want: s.silent},
		{name: "no answer to an upload", fault: simcloud.Fault{Kind: simcloud.FaultDrop, Count: 1, Op: simcloud.OpUpload}, op: "upload", want: s.silent},
	}
	for _, f := range faults {
		t.Run("fault "+f.name, func(t *testing.T) {
			sim := startSim(t)
			d := newDevice(t, sim, true)
			enqueue(t, sim, d, atRequest("+CGSN"))
			u := attempt(t, sim, 5*time.Second)
			if err := sim.SetFault(f.fault); err != nil {
				t.Fatal(err)
			}
			// A deadline only where the outcome is a timeout: the session's own timeout
			// bounds the handshake too, which a loaded machine may take long over, and an
			// answer that is due must not be cut short.
			rctx := ctx
			if errors.Is(f.want, transport.ErrTimeout) {
				var cancel context.CancelFunc
				rctx, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
				defer cancel()
			}
			var err error
			if f.op == "fetch" {
				_, err = u.Fetch(rctx, d.fetchReq(t, ""))
			} else {
				err = u.Upload(rctx, transport.UploadRequest{JWT: d.jwt(t), Body: encode(t, proto.Response{ID: "x", Kind: proto.KindFinishedAck})})
			}
			if !errors.Is(err, f.want) {
				t.Fatalf("%s: got %v, want %v", f.op, err, f.want)
			}
			if want := errors.Is(f.want, transport.ErrBusy) || errors.Is(f.want, transport.ErrTimeout); transport.Backoff(err) != want {
				t.Errorf("Backoff: got %v, want %v", !want, want)
			}
			// Count: 1 — the fault is spent, and the attempt goes on.
			if f.fresh {
				u = attempt(t, sim, 5*time.Second)
			}
			body, err := u.Fetch(ctx, d.fetchReq(t, ""))
			if err != nil {
				t.Fatalf("Fetch after the fault: %v", err)
			}
			if cmds := decode(t, body); len(cmds) != 1 {
				t.Fatalf("Fetch after the fault: got %d commands", len(cmds))
			}
		})
	}

	t.Run("malformed CBOR is handed on for the codec to refuse", func(t *testing.T) {
		sim := startSim(t)
		d := newDevice(t, sim, true)
		enqueue(t, sim, d, atRequest("+CGSN"))
		u := attempt(t, sim, 5*time.Second)
		if err := sim.SetFault(simcloud.Fault{Kind: simcloud.FaultMalformedCBOR, Count: 1}); err != nil {
			t.Fatal(err)
		}
		body, err := u.Fetch(ctx, d.fetchReq(t, ""))
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		if _, err := proto.DecodeCommands(body, proto.DefaultMaxCommands); !errors.Is(err, proto.ErrMalformed) {
			t.Fatalf("decode: got %v, want proto.ErrMalformed", err)
		}
	})

	t.Run("a three-batch job costs one handshake", func(t *testing.T) {
		sim := startSim(t)
		d := newDevice(t, sim, true)
		enqueue(t, sim, d, atRequest("+CGSN"), atRequest("%SHORTSWVER"), atRequest("+CGMR"),
			atRequest("%XICCID"), atRequest("+CIMI"), simcloud.Request{Finished: &simcloud.FinishedRequest{}})
		u := attempt(t, sim, 5*time.Second)
		batches, finished := runJob(t, u, d, 2)
		if batches != 3 || !finished {
			t.Fatalf("got %d batches, finished %v; want 3, true", batches, finished)
		}
		st := u.Stats()
		if st.Handshakes != 1 || st.Requests != requestsPer3Batches[s.name] {
			t.Errorf("got %d handshakes, %d requests; want 1, %d", st.Handshakes, st.Requests, requestsPer3Batches[s.name])
		}
		t.Logf("%s: %+v", s.name, st)
	})
}

// requestsPer3Batches is what a three-batch attempt sends: HTTP a GET and a POST per batch;
// CoAP an auth, a GET and a POST per round.
var requestsPer3Batches = map[string]int{"http": 6, "coap": 9}

// runJob drives the device side until FINISHED is acknowledged or nothing is left, answering
// every command with success, limit commands per batch. It returns the batches handled.
//
// It uses one JWT for the whole attempt, as the device does over CoAP (docs/protocol.md §5.1): a
// new JWT would make the CoAP session authenticate again before every upload.
func runJob(t testing.TB, u uplink, d device, limit int) (batches int, finished bool) {
	t.Helper()
	ctx := context.Background()
	jwt := d.jwt(t)
	after := ""
	for !finished {
		req := d.fetchReq(t, after)
		req.Limit, req.JWT = limit, jwt
		body, err := u.Fetch(ctx, req)
		if errors.Is(err, transport.ErrNoCommands) {
			return batches, false
		}
		if err != nil {
			t.Fatalf("Fetch %d: %v", batches+1, err)
		}
		cmds := decode(t, body)
		batches++
		for _, c := range cmds {
			finished = finished || c.Kind == proto.KindFinished
		}
		after = cmds[len(cmds)-1].ID
		if err := u.Upload(ctx, transport.UploadRequest{JWT: jwt, Body: encode(t, ok(cmds)...)}); err != nil {
			t.Fatalf("Upload %d: %v", batches, err)
		}
	}
	return batches, finished
}

// TestFullJob carries a whole provisioning job between the simulated service and each
// transport client: claim, a client certificate generated on the "modem" (%KEYGEN) and signed
// by the service, and FINISHED. The device side is played by hand.
func TestFullJob(t *testing.T) {
	const tag = 42
	for _, s := range subjects() {
		t.Run(s.name, func(t *testing.T) {
			ctx := context.Background()
			sim := startSim(t)
			d := newDevice(t, sim, true)
			jobs := enqueue(t, sim, d,
				simcloud.Request{ClientCertificate: &simcloud.ClientCertificateRequest{SecTag: tag}},
				simcloud.Request{Finished: &simcloud.FinishedRequest{}})
			u, err := s.open(t, sim, 5*time.Second)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer u.Close()

			// Batch 1: delete the old key and certificate, then %KEYGEN. The service stops the
			// batch there, because what follows depends on the CSR.
			body, err := u.Fetch(ctx, d.fetchReq(t, ""))
			if err != nil {
				t.Fatalf("Fetch 1: %v", err)
			}
			cmds := decode(t, body)
			wantAT := []string{"AT%CMNG=3,42,1", "AT%CMNG=3,42,2", "AT%KEYGEN=42,2,0"}
			if len(cmds) != len(wantAT) {
				t.Fatalf("batch 1: got %d commands, want %d", len(cmds), len(wantAT))
			}
			for i, w := range wantAT {
				if got := cmds[i].ATString(); got != w {
					t.Fatalf("batch 1 command %d: got %q, want %q", i, got, w)
				}
			}
			clientKey, err := attest.GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			answer, err := attest.BuildKeygen(attest.KeygenParams{Identity: d.key, DeviceUUID: d.raw, SecTag: tag,
				Format: attest.KeygenCSR, Key: clientKey})
			if err != nil {
				t.Fatal(err)
			}
			rs := []proto.Response{
				// Nothing to delete on a fresh modem: 513 is in the command's ignore list, so
				// the device reports it as a plain AT response.
				{ID: cmds[0].ID, Kind: proto.KindATResponse, Message: "+CME ERROR: 513\r\n"},
				{ID: cmds[1].ID, Kind: proto.KindATResponse, Message: "+CME ERROR: 513\r\n"},
				{ID: cmds[2].ID, Kind: proto.KindATResponse, Message: "%KEYGEN: \"" + answer + "\"\r\nOK\r\n"},
			}
			if err := u.Upload(ctx, transport.UploadRequest{JWT: d.jwt(t), Body: encode(t, rs...)}); err != nil {
				t.Fatalf("Upload 1: %v", err)
			}

			// Batch 2: write the certificate the service signed, then FINISHED.
			body, err = u.Fetch(ctx, d.fetchReq(t, cmds[2].ID))
			if err != nil {
				t.Fatalf("Fetch 2: %v", err)
			}
			cmds = decode(t, body)
			if len(cmds) != 2 || cmds[0].SetCommand != "%CMNG" || cmds[1].Kind != proto.KindFinished {
				t.Fatalf("batch 2: got %+v, want the certificate write and FINISHED", cmds)
			}
			cert := certificateIn(t, cmds[0].Parameters, "0,42,1,")
			roots := x509.NewCertPool()
			roots.AppendCertsFromPEM(sim.CAPEM())
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Errorf("client certificate does not chain to the service CA: %v", err)
			}
			if !clientKey.PublicKey.Equal(cert.PublicKey) {
				t.Error("client certificate is not for the key generated on the modem")
			}
			if err := u.Upload(ctx, transport.UploadRequest{JWT: d.jwt(t), Body: encode(t, ok(cmds)...)}); err != nil {
				t.Fatalf("Upload 2: %v", err)
			}

			if _, err := u.Fetch(ctx, d.fetchReq(t, cmds[1].ID)); !errors.Is(err, transport.ErrNoCommands) {
				t.Fatalf("Fetch 3: got %v, want ErrNoCommands", err)
			}
			for _, j := range jobs {
				if st := jobStatus(t, sim, d, j.ID); st != simcloud.StatusSucceeded {
					t.Errorf("job %s: got %s, want SUCCEEDED", j.Request.Type(), st)
				}
			}
			dev, err := sim.Device(d.uuid)
			if err != nil {
				t.Fatal(err)
			}
			if dev.ProvisionedAt == nil {
				t.Errorf("device: got %+v, want it provisioned", dev)
			}
			// One full handshake for the whole job. net/http may still open a second
			// connection: it reuses one only once its writer goroutine has reported the request
			// written, and waits 50 ms for that, which a starved goroutine on a loaded machine
			// can miss. Such a reconnect resumes the session, so it is not counted here (the
			// transport's own tests count connections).
			if st := u.Stats(); st.Handshakes-st.ResumedHandshakes != 1 {
				t.Errorf("full handshakes: got %d of %d, want 1", st.Handshakes-st.ResumedHandshakes, st.Handshakes)
			}
		})
	}
}

// certificateIn extracts the PEM certificate from %CMNG write parameters `<prefix>"<pem>"`.
func certificateIn(t testing.TB, params, prefix string) *x509.Certificate {
	t.Helper()
	rest, found := strings.CutPrefix(params, prefix)
	if !found || len(rest) < 2 || rest[0] != '"' || rest[len(rest)-1] != '"' {
		t.Fatalf("certificate write: got parameters %q", params)
	}
	block, _ := pem.Decode([]byte(rest[1 : len(rest)-1]))
	if block == nil {
		t.Fatal("certificate write: no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
