package simcloud

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"

	"github.com/provisiond/provisiond/internal/proto"
)

// TestFullJobEndToEnd claims a device through the owner API, queues a client-certificate job
// and FINISHED, and lets a device carry the job out over each transport.
func TestFullJobEndToEnd(t *testing.T) {
	for _, transport := range []string{TransportHTTP, TransportCoAP} {
		t.Run(transport, func(t *testing.T) {
			s := startServer(t, Config{APIKey: "k"})
			d := newTestDevice(t)
			c := httpClient(t, s)
			pubPEM := mustPublicPEM(t, d)
			if st := owner(t, s, c, "PUT", "/v1/sim/devices/"+strings.ToUpper(d.uuid), "k", pubPEM, nil); st != http.StatusCreated {
				t.Fatalf("register: %d", st)
			}
			var dev Device
			if st := owner(t, s, c, "POST", "/v1/claimed-devices", "k", map[string]any{"claimToken": d.token(t)}, &dev); st != http.StatusCreated {
				t.Fatalf("claim: %d", st)
			}
			if dev.ID != d.uuid || !dev.Claimed || dev.DeviceType != "nrf9161" {
				t.Fatalf("claimed device = %+v", dev)
			}
			var certJob, finJob struct{ ID string }
			if st := owner(t, s, c, "POST", "/v1/claimed-devices/"+d.uuid+"/provisioning", "k",
				map[string]any{"description": "cert", "request": map[string]any{"clientCertificate": map[string]any{"secTag": 42}}}, &certJob); st != http.StatusCreated {
				t.Fatalf("queue cert: %d", st)
			}
			if st := owner(t, s, c, "POST", "/v1/claimed-devices/"+d.uuid+"/provisioning", "k",
				map[string]any{"request": map[string]any{"finished": map[string]any{}}}, &finJob); st != http.StatusCreated {
				t.Fatalf("queue finished: %d", st)
			}

			m := newFakeModem(d)
			var rounds int
			if transport == TransportHTTP {
				rounds = runHTTP(t, newHTTPDevice(t, s, d), m)
			} else {
				rounds = runCoAP(t, newCoAPDevice(t, s, d, blockwise.SZX256), m)
			}
			// Batch 1 ends at the %KEYGEN; batch 2 has the certificate write and FINISHED.
			if rounds != 2 {
				t.Errorf("rounds = %d, want 2", rounds)
			}
			key, cert := m.keys[42], m.certs[42]
			if key == nil || cert == "" {
				t.Fatalf("modem has key %v, cert %q", key != nil, cert)
			}
			verifyClientCert(t, s, cert, &key.PublicKey)

			var job Job
			if st := owner(t, s, c, "GET", "/v1/claimed-devices/"+d.uuid+"/provisioning/"+certJob.ID, "k", nil, &job); st != http.StatusOK {
				t.Fatalf("get job: %d", st)
			}
			if job.Status != StatusSucceeded || job.Response == nil || job.Response.Certificate != cert || job.Response.CSR == "" {
				t.Errorf("cert job = %+v", job)
			}
			if len(job.CommandIDs) != 4 || job.CommandIDs[3] != certJob.ID+".e.c" {
				t.Errorf("cert job commands = %v", job.CommandIDs)
			}
			if st := owner(t, s, c, "GET", "/v1/claimed-devices/"+d.uuid+"/provisioning/"+finJob.ID, "k", nil, &job); st != http.StatusOK || job.Status != StatusSucceeded {
				t.Errorf("finished job: %d %+v", st, job)
			}
			if st := owner(t, s, c, "GET", "/v1/claimed-devices/"+d.uuid, "k", nil, &dev); st != http.StatusOK || dev.Status != "PROVISIONED" || dev.ProvisionedAt == nil {
				t.Errorf("device after FINISHED: %d %+v", st, dev)
			}
			ups, err := s.Responses(d.uuid)
			if err != nil || len(ups) != 2 {
				t.Fatalf("uploads = %d, %v; want 2", len(ups), err)
			}
			for _, u := range ups {
				if u.Transport != transport || u.Err != "" || len(u.Raw) == 0 {
					t.Errorf("upload record %+v", u)
				}
			}
		})
	}
}

func mustPublicPEM(t *testing.T, d testDevice) []byte {
	t.Helper()
	b, err := attestPublicPEM(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConcurrentDevices runs several devices over both transports at once while fault rules
// change underneath them; with -race it checks the server's locking.
func TestConcurrentDevices(t *testing.T) {
	s := startServer(t, Config{})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			s.SetFault(Fault{Kind: FaultSlow, Delay: time.Millisecond, Count: 1})
			s.Faults()
			s.Devices()
			time.Sleep(time.Millisecond)
		}
	}()
	t.Run("devices", func(t *testing.T) {
		for i := range 6 {
			transport := TransportHTTP
			if i%2 == 1 {
				transport = TransportCoAP
			}
			t.Run(fmt.Sprint(transport, i), func(t *testing.T) {
				t.Parallel()
				d := claimedDevice(t, s)
				if _, err := s.Enqueue(d.uuid, Request{ClientCertificate: &ClientCertificateRequest{}},
					Request{Config: &ConfigRequest{Properties: Properties{{Key: "provisioning/interval-sec", Value: "60"}}}},
					Request{Finished: &FinishedRequest{}}); err != nil {
					t.Fatal(err)
				}
				m := newFakeModem(d)
				if transport == TransportHTTP {
					runHTTP(t, newHTTPDevice(t, s, d), m)
				} else {
					runCoAP(t, newCoAPDevice(t, s, d, blockwise.SZX512), m)
				}
				js, _ := s.Jobs(d.uuid)
				for _, j := range js {
					if j.Status != StatusSucceeded {
						t.Errorf("job %s (%s): %s", j.ID, j.Request.Type(), j.Status)
					}
				}
				verifyClientCert(t, s, m.certs[DefaultSecTag], &m.keys[DefaultSecTag].PublicKey)
			})
		}
	})
	close(stop)
	<-done
}

// TestCoAPLargeTransfers moves a batch and an upload that exceed one datagram: go-coap
// must split the batch with Block2 (at the block size the client asks for, as Zephyr does
// with its initial Block2 option) and reassemble a Block1 upload.
func TestCoAPLargeTransfers(t *testing.T) {
	s := startServer(t, Config{})
	dev := claimedDevice(t, s)
	big := strings.Repeat("A", 3000)
	for _, szx := range []blockwise.SZX{blockwise.SZX64, blockwise.SZX256, blockwise.SZX1024} {
		t.Run(fmt.Sprint(szx.Size()), func(t *testing.T) {
			jobs, err := s.Enqueue(dev.uuid, Request{ServerCertificate: &CredentialRequest{SecTag: 1, Content: big}})
			if err != nil {
				t.Fatal(err)
			}
			c := newCoAPDevice(t, s, dev, szx)
			if code, err := c.auth(dev.jwt(t)); err != nil || code != codes.Created {
				t.Fatalf("auth %v %v", code, err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			req, err := c.cc.NewGetRequest(ctx, pathCommands, queries("after=", "rxMaxSize=8192")...)
			if err != nil {
				t.Fatal(err)
			}
			block, err := blockwise.EncodeBlockOption(szx, 0, false)
			if err != nil {
				t.Fatal(err)
			}
			req.SetOptionUint32(message.Block2, block)
			resp, err := c.cc.Do(req)
			c.cc.ReleaseMessage(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := resp.ReadBody()
			c.cc.ReleaseMessage(resp)
			if err != nil {
				t.Fatal(err)
			}
			cmds, err := proto.DecodeCommands(body, 10)
			if err != nil || len(cmds) != 1 || !strings.Contains(cmds[0].Parameters, big) {
				t.Fatalf("batch of %d bytes: %v", len(body), err)
			}
			up, err := proto.EncodeResponses([]proto.Response{{ID: jobs[0].ID + ".e", Kind: proto.KindError, CMEError: 527, Message: big}})
			if err != nil {
				t.Fatal(err)
			}
			if code := c.upload(up); code != codes.Changed {
				t.Fatalf("upload: %v", code)
			}
			ups, _ := s.Responses(dev.uuid)
			last := ups[len(ups)-1]
			if !bytes.Equal(last.Raw, up) || last.Transport != TransportCoAP {
				t.Errorf("recorded upload differs: %d bytes, want %d", len(last.Raw), len(up))
			}
		})
	}
}
