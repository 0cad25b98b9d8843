package simcloud

import (
	"bufio"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"

	"github.com/provisiond/provisiond/internal/proto"
)

// atReq is a raw AT request whose parameters make every command distinct.
func atReq(i int, pad int) Request {
	return Request{ATRequest: &ATRequest{Command: "%XTEST", Parameters: fmt.Sprintf("%d,%s", i, strings.Repeat("x", pad))}}
}

func ids(t *testing.T, body []byte) []string {
	t.Helper()
	cmds, err := proto.DecodeCommands(body, proto.MaxCommandsCeiling)
	if err != nil {
		t.Fatalf("decode batch: %v", err)
	}
	var out []string
	for _, c := range cmds {
		out = append(out, c.ID)
	}
	return out
}

func TestFetchCursor(t *testing.T) {
	s := startServer(t, Config{})
	dev := claimedDevice(t, s)
	var reqs []Request
	for i := range 6 {
		reqs = append(reqs, atReq(i, 100))
	}
	jobs, err := s.Enqueue(dev.uuid, reqs...)
	if err != nil {
		t.Fatal(err)
	}
	id := func(i int) string { return jobs[i].ID + ".e" }
	all := func(from, to int) []string {
		var out []string
		for i := from; i < to; i++ {
			out = append(out, id(i))
		}
		return out
	}
	cmds, _ := s.Commands(dev.uuid)
	var wires []proto.Command
	for _, c := range cmds {
		wires = append(wires, c.Command)
	}
	// rxFor returns the smallest HTTP rxMaxSize that fits the first n commands.
	rxFor := func(n int) int {
		b, err := proto.EncodeCommands(wires[:n])
		if err != nil {
			t.Fatal(err)
		}
		return len(b) + httpOverhead(len(b)) + 1
	}

	tests := []struct {
		name   string
		query  string
		status int
		want   []string
	}{
		{name: "first run", query: "after=&rxMaxSize=4096&limit=10", status: 200, want: all(0, 6)},
		{name: "no query at all", query: "", status: 200, want: all(0, 6)},
		{name: "after the second", query: "after=" + id(1) + "&rxMaxSize=4096&limit=10", status: 200, want: all(2, 6)},
		{name: "after the last", query: "after=" + id(5) + "&rxMaxSize=4096", status: 204},
		{name: "unknown cursor starts over", query: "after=nope.e&rxMaxSize=4096", status: 200, want: all(0, 6)},
		{name: "limit", query: "after=&rxMaxSize=4096&limit=2", status: 200, want: all(0, 2)},
		{name: "limit after cursor", query: "after=" + id(2) + "&limit=2", status: 200, want: all(3, 5)},
		{name: "rxMaxSize fits exactly three", query: fmt.Sprintf("after=&rxMaxSize=%d", rxFor(3)), status: 200, want: all(0, 3)},
		{name: "rxMaxSize one byte short of three", query: fmt.Sprintf("after=&rxMaxSize=%d", rxFor(3)-1), status: 200, want: all(0, 2)},
		{name: "rxMaxSize too small for one", query: fmt.Sprintf("after=&rxMaxSize=%d", rxFor(1)-1), status: 400},
		{name: "limit zero", query: "after=&limit=0", status: 400},
		{name: "limit not a number", query: "after=&limit=ten", status: 400},
		{name: "negative rxMaxSize", query: "after=&rxMaxSize=-5", status: 400},
		{name: "empty txMaxSize", query: "after=&txMaxSize=", status: 400},
	}
	h := newHTTPDevice(t, s, dev)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, body := h.fetch(tc.query)
			if st != tc.status {
				t.Fatalf("status = %d (%s), want %d", st, body, tc.status)
			}
			if st == 200 {
				if got := ids(t, body); !slices.Equal(got, tc.want) {
					t.Errorf("ids = %v, want %v", got, tc.want)
				}
			}
		})
	}

	// The same table over CoAP, where rxMaxSize bounds the payload alone.
	c := newCoAPDevice(t, s, dev, blockwise.SZX256)
	if code, err := c.auth(dev.jwt(t)); err != nil || code != codes.Created {
		t.Fatalf("auth: %v %v", code, err)
	}
	payload := func(n int) int { b, _ := proto.EncodeCommands(wires[:n]); return len(b) }
	coapTests := []struct {
		name string
		qs   []string
		code codes.Code
		want []string
	}{
		{name: "first run", qs: []string{"after=", "rxMaxSize=4096", "txMaxSize=4096", "limit=10"}, code: codes.Content, want: all(0, 6)},
		{name: "after the fourth", qs: []string{"after=" + id(3), "limit=10"}, code: codes.Content, want: all(4, 6)},
		{name: "after the last", qs: []string{"after=" + id(5)}, code: codes.Content},
		{name: "rxMaxSize exact", qs: []string{"after=", fmt.Sprintf("rxMaxSize=%d", payload(4))}, code: codes.Content, want: all(0, 4)},
		{name: "rxMaxSize short", qs: []string{"after=", fmt.Sprintf("rxMaxSize=%d", payload(4)-1)}, code: codes.Content, want: all(0, 3)},
		{name: "rxMaxSize too small", qs: []string{"after=", "rxMaxSize=10"}, code: codes.BadRequest},
		{name: "bad limit", qs: []string{"after=", "limit=x"}, code: codes.BadRequest},
	}
	for _, tc := range coapTests {
		t.Run("coap "+tc.name, func(t *testing.T) {
			code, body := c.fetch(tc.qs...)
			if code != tc.code {
				t.Fatalf("code = %v (%s), want %v", code, body, tc.code)
			}
			if code == codes.Content && tc.want == nil && len(body) != 0 {
				t.Errorf("payload %x, want none", body)
			}
			if tc.want != nil {
				if got := ids(t, body); !slices.Equal(got, tc.want) {
					t.Errorf("ids = %v, want %v", got, tc.want)
				}
			}
		})
	}

	cmds, _ = s.Commands(dev.uuid)
	for _, c := range cmds {
		if c.Status != StatusInProgress || c.Deliveries == 0 {
			t.Errorf("command %s: status %s, deliveries %d; want IN_PROGRESS, >0", c.ID, c.Status, c.Deliveries)
		}
	}
}

// TestHTTPAnswerFitsRx reads the raw HTTP answer and checks that status line, headers and
// body together fit rxMaxSize−1 bytes, as the device's buffer requires.
func TestHTTPAnswerFitsRx(t *testing.T) {
	s := startServer(t, Config{})
	dev := claimedDevice(t, s)
	for i := range 10 {
		if _, err := s.Enqueue(dev.uuid, atReq(i, 37*i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, rx := range []int{700, 1024, 2048} {
		t.Run(fmt.Sprint(rx), func(t *testing.T) {
			conn, err := tls.Dial("tcp", s.HTTPAddr(), &tls.Config{RootCAs: s.CAPool(), ServerName: "localhost"})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// What the device sends (docs/protocol.md §1.2), Connection: close included.
			fmt.Fprintf(conn, "GET /v1/provisioning/commands?after=&rxMaxSize=%d&txMaxSize=2048&mver=m&cver=c&limit=10 HTTP/1.1\r\n"+
				"Host: provisioning-http\r\nAccept: application/cbor\r\nAuthorization: Bearer %s\r\nContent-Type: */*\r\n"+
				"User-Agent: test\r\nConnection: close\r\n\r\n", rx, dev.jwt(t))
			raw, err := io.ReadAll(conn)
			if err != nil {
				t.Fatal(err)
			}
			if len(raw) > rx-1 {
				t.Errorf("answer is %d bytes, want ≤ %d", len(raw), rx-1)
			}
			resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(raw))), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			got := ids(t, body)
			cmds, _ := s.Commands(dev.uuid)
			// Greedy: one more command would not have fit.
			if len(got) < len(cmds) {
				var wires []proto.Command
				for _, c := range cmds[:len(got)+1] {
					wires = append(wires, c.Command)
				}
				b, _ := proto.EncodeCommands(wires)
				if len(raw)-len(body)+len(b) <= rx-1 {
					t.Errorf("%d commands sent, but %d would fit", len(got), len(got)+1)
				}
			}
		})
	}
}

func TestErrorResponseDropsLaterCommands(t *testing.T) {
	for _, transport := range []string{TransportHTTP, TransportCoAP} {
		t.Run(transport, func(t *testing.T) {
			s := startServer(t, Config{})
			dev := claimedDevice(t, s)
			jobs, err := s.Enqueue(dev.uuid, atReq(0, 0), atReq(1, 0), atReq(2, 0), Request{Finished: &FinishedRequest{}})
			if err != nil {
				t.Fatal(err)
			}
			m := newFakeModem(dev)
			m.fail["%XTEST"] = 514
			// The first command succeeds, then the modem fails every %XTEST.
			first := true
			fetchUpload := func(after string) ([]string, bool) {
				var body []byte
				if transport == TransportHTTP {
					h := newHTTPDevice(t, s, dev)
					st, b := h.fetch("after=" + after)
					if st == http.StatusNoContent {
						return nil, false
					}
					body = b
				} else {
					c := newCoAPDevice(t, s, dev, blockwise.SZX1024)
					c.auth(dev.jwt(t))
					_, body = c.fetch("after=" + after)
					if len(body) == 0 {
						return nil, false
					}
				}
				cmds, err := proto.DecodeCommands(body, 10)
				if err != nil {
					t.Fatal(err)
				}
				var rs []proto.Response
				if first {
					rs = append(rs, proto.Response{ID: cmds[0].ID, Kind: proto.KindATResponse, Message: "OK"})
					more, _ := m.run(t, cmds[1:])
					rs = append(rs, more...)
					first = false
				} else {
					rs, _ = m.run(t, cmds)
				}
				up, _ := proto.EncodeResponses(rs)
				if transport == TransportHTTP {
					if st := newHTTPDevice(t, s, dev).upload(up); st != 200 {
						t.Fatalf("upload %d", st)
					}
				} else {
					c := newCoAPDevice(t, s, dev, blockwise.SZX1024)
					c.auth(dev.jwt(t))
					if code := c.upload(up); code != codes.Changed {
						t.Fatalf("upload %v", code)
					}
				}
				var got []string
				for _, c := range cmds {
					got = append(got, c.ID)
				}
				return got, true
			}
			got, _ := fetchUpload("")
			if len(got) != 4 {
				t.Fatalf("batch = %v", got)
			}
			cmds, _ := s.Commands(dev.uuid)
			want := []struct {
				st     Status
				reason bool
			}{{StatusSucceeded, false}, {StatusFailed, false}, {StatusFailed, true}, {StatusFailed, true}}
			for i, c := range cmds {
				if c.Status != want[i].st || (c.Reason != "") != want[i].reason {
					t.Errorf("command %d: %s %q, want %s (reason %v)", i, c.Status, c.Reason, want[i].st, want[i].reason)
				}
			}
			if cmds[1].Response == nil || cmds[1].Response.CMEError != 514 {
				t.Errorf("failed command response = %+v", cmds[1].Response)
			}
			js, _ := s.Jobs(dev.uuid)
			for i, st := range []Status{StatusSucceeded, StatusFailed, StatusFailed, StatusFailed} {
				if js[i].Status != st {
					t.Errorf("job %d: %s, want %s", i, js[i].Status, st)
				}
			}
			if js[1].Response == nil || js[1].Response.CMEError != 514 {
				t.Errorf("failed job response = %+v", js[1].Response)
			}
			// The cursor is now the failed command; nothing is left after it.
			if _, more := fetchUpload(jobs[1].ID + ".e"); more {
				t.Errorf("commands served after the failure")
			}
			// New work queued later is served after the failed cursor.
			late, err := s.Enqueue(dev.uuid, Request{Finished: &FinishedRequest{}})
			if err != nil {
				t.Fatal(err)
			}
			m.fail = map[string]uint64{}
			got, _ = fetchUpload(jobs[1].ID + ".e")
			if !slices.Equal(got, []string{late[0].ID + ".e"}) {
				t.Errorf("after failure, batch = %v, want the new FINISHED", got)
			}
		})
	}
}

func TestUploadForms(t *testing.T) {
	s := startServer(t, Config{})
	dev := claimedDevice(t, s)
	jobs, err := s.Enqueue(dev.uuid, Request{Config: &ConfigRequest{Properties: Properties{{Key: "provisioning/interval-sec", Value: "60"}}}},
		Request{Finished: &FinishedRequest{}})
	if err != nil {
		t.Fatal(err)
	}
	cfgID, finID := jobs[0].ID+".e", jobs[1].ID+".e"
	h := newHTTPDevice(t, s, dev)
	if st, _ := h.fetch("after="); st != 200 {
		t.Fatalf("fetch %d", st)
	}
	text38 := func(s string) string { return "78" + fmt.Sprintf("%02x", len(s)) + hex.EncodeToString([]byte(s)) }
	tests := []struct {
		name   string
		hex    string
		status int
	}{
		{name: "garbage", hex: "ffff", status: 400},
		{name: "empty array", hex: "80", status: 400},
		{name: "empty body", hex: "", status: 400},
		// [[cfgID, 101]] with indefinite-length arrays, as a non-canonical zcbor build sends it.
		{name: "indefinite config ack", hex: "9f9f" + text38(cfgID) + "1865ffff", status: 200},
		// [[finID, 102]] definite.
		{name: "definite finished ack", hex: "8182" + text38(finID) + "1866", status: 200},
		// A repeat of an upload already applied is accepted and ignored.
		{name: "repeat", hex: "8182" + text38(finID) + "1866", status: 200},
		// A response to an id the service never sent is accepted and ignored.
		{name: "unknown id", hex: "8182" + text38(strings.Repeat("u", 30)) + "1866", status: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := hex.DecodeString(tc.hex)
			if err != nil {
				t.Fatal(err)
			}
			if st := h.upload(b); st != tc.status {
				t.Errorf("status = %d, want %d", st, tc.status)
			}
		})
	}
	js, _ := s.Jobs(dev.uuid)
	if js[0].Status != StatusSucceeded || js[1].Status != StatusSucceeded {
		t.Errorf("jobs = %s, %s; want both SUCCEEDED", js[0].Status, js[1].Status)
	}
	d, _ := s.Device(dev.uuid)
	if d.Status != "PROVISIONED" {
		t.Errorf("device status = %s, want PROVISIONED", d.Status)
	}
	ups, _ := s.Responses(dev.uuid)
	if len(ups) != len(tests) {
		t.Fatalf("%d uploads recorded, want %d", len(ups), len(tests))
	}
	for i, tc := range tests {
		if (ups[i].Err != "") != (tc.status != 200) {
			t.Errorf("upload %d (%s): Err = %q", i, tc.name, ups[i].Err)
		}
		if hex.EncodeToString(ups[i].Raw) != tc.hex {
			t.Errorf("upload %d raw = %x, want %s", i, ups[i].Raw, tc.hex)
		}
	}
	if st, _, _ := h.do(http.MethodPost, "/v1/provisioning/response", dev.jwt(t), nil); st != 400 {
		t.Errorf("no-body upload = %d", st)
	}
	req := []byte{0x80}
	st, _, err := doWithType(h, "text/plain", req)
	if err != nil || st != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain upload = %d %v, want 415", st, err)
	}
}

func doWithType(h *httpDevice, ct string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(h.t.Context(), http.MethodPost, h.s.HTTPURL()+"/v1/provisioning/response", strings.NewReader(string(body)))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+h.dev.jwt(h.t))
	req.Header.Set("Content-Type", ct)
	resp, err := h.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, nil
}

// TestKeygenBarrier: the cursor cannot pass an open client-certificate %KEYGEN, so a client
// whose upload was lost gets the %KEYGEN again instead of the FINISHED behind it.
func TestKeygenBarrier(t *testing.T) {
	s := startServer(t, Config{})
	dev := claimedDevice(t, s)
	jobs, err := s.Enqueue(dev.uuid, Request{ClientCertificate: &ClientCertificateRequest{}}, Request{Finished: &FinishedRequest{}})
	if err != nil {
		t.Fatal(err)
	}
	h := newHTTPDevice(t, s, dev)
	_, body := h.fetch("after=")
	got := ids(t, body)
	keygen := jobs[0].ID + ".e"
	if !slices.Equal(got, []string{jobs[0].ID + ".e.r", jobs[0].ID + ".e.s", keygen}) {
		t.Fatalf("first batch = %v", got)
	}
	// Upload lost; the device fetches with its advanced cursor.
	_, body = h.fetch("after=" + keygen)
	if got := ids(t, body); !slices.Equal(got, []string{keygen}) {
		t.Errorf("batch after lost upload = %v, want the keygen again", got)
	}
	// A bad KEYGEN answer fails the job and drops FINISHED.
	bad, _ := proto.EncodeResponses([]proto.Response{{ID: keygen, Kind: proto.KindATResponse, Message: "%KEYGEN: \"bm90.Y29zZQ\"\r\nOK"}})
	if st := h.upload(bad); st != 200 {
		t.Fatalf("upload %d", st)
	}
	js, _ := s.Jobs(dev.uuid)
	if js[0].Status != StatusFailed || js[1].Status != StatusFailed {
		t.Errorf("jobs = %s, %s; want FAILED, FAILED", js[0].Status, js[1].Status)
	}
	cmds, _ := s.Commands(dev.uuid)
	if c := cmds[2]; c.Reason == "" || !strings.Contains(c.Reason, "keygen") {
		t.Errorf("keygen command reason = %q", c.Reason)
	}
}

func TestEnqueueValidation(t *testing.T) {
	s := startServer(t, Config{MaxJobs: 3})
	dev := claimedDevice(t, s)
	unclaimed := newTestDevice(t)
	s.RegisterDevice(unclaimed.uuid, &unclaimed.key.PublicKey)
	many := Properties{}
	for i := range 11 {
		many = append(many, proto.Property{Key: fmt.Sprint("k", i), Value: "v"})
	}
	tests := []struct {
		name string
		uuid string
		reqs []Request
		err  error
	}{
		{name: "no type", uuid: dev.uuid, reqs: []Request{{}}, err: ErrInvalid},
		{name: "two types", uuid: dev.uuid, reqs: []Request{{Finished: &FinishedRequest{}, Config: &ConfigRequest{}}}, err: ErrInvalid},
		{name: "empty AT command", uuid: dev.uuid, reqs: []Request{{ATRequest: &ATRequest{Command: "AT"}}}, err: ErrInvalid},
		{name: "too many ignore codes", uuid: dev.uuid, reqs: []Request{{ATRequest: &ATRequest{Command: "%X", IgnoreCMEErrors: []uint64{1, 2, 3, 4, 5, 6, 7}}}}, err: ErrInvalid},
		{name: "too many properties", uuid: dev.uuid, reqs: []Request{{Config: &ConfigRequest{Properties: many}}}, err: ErrInvalid},
		{name: "bad key usage", uuid: dev.uuid, reqs: []Request{{ClientCertificate: &ClientCertificateRequest{KeyUsage: "12"}}}, err: ErrInvalid},
		{name: "empty server certificate", uuid: dev.uuid, reqs: []Request{{ServerCertificate: &CredentialRequest{}}}, err: ErrInvalid},
		{name: "bad uuid", uuid: "x", reqs: []Request{{Finished: &FinishedRequest{}}}, err: ErrInvalid},
		{name: "unknown device", uuid: newTestDevice(t).uuid, reqs: []Request{{Finished: &FinishedRequest{}}}, err: ErrUnknownDevice},
		{name: "unclaimed device", uuid: unclaimed.uuid, reqs: []Request{{Finished: &FinishedRequest{}}}, err: ErrNotClaimed},
		{name: "over the job limit", uuid: dev.uuid, reqs: make([]Request, 4), err: ErrInvalid}, // zero requests are invalid first
		{name: "full", uuid: dev.uuid, reqs: []Request{atReq(0, 0), atReq(1, 0), atReq(2, 0), atReq(3, 0)}, err: ErrQueueFull},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Enqueue(tc.uuid, tc.reqs...); !errors.Is(err, tc.err) {
				t.Errorf("Enqueue error = %v, want %v", err, tc.err)
			}
		})
	}
	if js, _ := s.Jobs(dev.uuid); len(js) != 0 {
		t.Errorf("%d jobs queued by failed calls", len(js))
	}
}

func TestRequestExpansion(t *testing.T) {
	tests := []struct {
		name string
		req  Request
		want []string // ATString of each command, or kind names
	}{
		{name: "raw AT", req: Request{ATRequest: &ATRequest{Command: "%CMNG", Parameters: "1"}}, want: []string{"AT%CMNG=1"}},
		{name: "AT prefix and = split", req: Request{ATRequest: &ATRequest{Command: "AT%XSYSTEMMODE=1,0,0,0"}}, want: []string{"AT%XSYSTEMMODE=1,0,0,0"}},
		{name: "config", req: Request{Config: &ConfigRequest{}}, want: []string{"config"}},
		{name: "finished", req: Request{Finished: &FinishedRequest{}}, want: []string{"finished"}},
		{name: "client certificate flow", req: Request{ClientCertificate: &ClientCertificateRequest{SecTag: 7, Attributes: "O=ACME,CN=dev", KeyUsage: "101010000"}},
			want: []string{"AT%CMNG=3,7,1", "AT%CMNG=3,7,2", `AT%KEYGEN=7,2,0,"O=ACME,CN=dev","101010000"`}},
		{name: "client certificate content", req: Request{ClientCertificate: &ClientCertificateRequest{Content: "PEM"}},
			want: []string{`AT%CMNG=0,16842753,1,"PEM"`}},
		{name: "server certificate", req: Request{ServerCertificate: &CredentialRequest{SecTag: 9, Content: "CA"}}, want: []string{`AT%CMNG=0,9,0,"CA"`}},
		{name: "csr", req: Request{CertificateSigningRequest: &CSRRequest{SecTag: 5}}, want: []string{"AT%CMNG=3,5,2", "AT%KEYGEN=5,2,0"}},
		{name: "key generation", req: Request{ClientPrivateKeyGeneration: &KeyGenerationRequest{}}, want: []string{"AT%CMNG=3,16842753,2", "AT%KEYGEN=16842753,2,1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ps, err := tc.req.plan()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range ps {
				if p.cmd.Kind == proto.KindAT {
					got = append(got, p.cmd.ATString())
				} else {
					got = append(got, p.cmd.Kind.String())
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("commands = %q, want %q", got, tc.want)
			}
		})
	}
}
