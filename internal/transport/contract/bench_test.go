package contract

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/coaptransport"
	"github.com/provisiond/provisiond/internal/httptransport"
	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/transport"
)

// The benchmarked job: five AT commands and FINISHED, fetched two at a time, so one attempt is
// three batches (three fetches and three uploads), ending at the FINISHED acknowledgement.
const benchLimit = 2

func benchJob() []simcloud.Request {
	return []simcloud.Request{atRequest("+CGSN"), atRequest("%SHORTSWVER"), atRequest("+CGMR"),
		atRequest("%XICCID"), atRequest("+CIMI"), {Finished: &simcloud.FinishedRequest{}}}
}

// pattern carries one attempt of the benchmarked job and returns what it cost on the wire.
type pattern func(b *testing.B, d device) transport.Stats

// BenchmarkAttemptHTTP runs the three-batch job per attempt over HTTPS against the simulator:
// "keepalive" is provisiond (one TLS connection per attempt); "per-request" replays the
// device library's pattern with the same client (a new connection, so a new handshake, for
// every GET and POST; the TLS session cache resumes them, as the device's does).
func BenchmarkAttemptHTTP(b *testing.B) {
	sim := startSim(b)
	newTransport := func(b *testing.B) *httptransport.Transport {
		tr, err := httptransport.New(httptransport.Config{Hostname: "127.0.0.1", Port: port(b, sim.HTTPAddr()),
			RootCAs: sim.CAPool(), Timeout: 10 * time.Second, UserAgent: "provisiond/bench"})
		if err != nil {
			b.Fatal(err)
		}
		return tr
	}
	b.Run("keepalive", func(b *testing.B) {
		tr := newTransport(b)
		benchAttempts(b, sim, oneSession(tr.Open))
	})
	b.Run("per-request", func(b *testing.B) {
		tr := newTransport(b)
		benchAttempts(b, sim, func(b *testing.B, d device) transport.Stats {
			var total transport.Stats
			each := func(do func(u uplink)) {
				s, err := tr.Open(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				do(s)
				_ = s.Close()
				total = add(total, s.Stats())
			}
			runBenchJobWith(b, d, each, each)
			return total
		})
	})
}

// BenchmarkAttemptCoAP runs the three-batch job per attempt over CoAP/DTLS against the
// simulator: "one-session" is provisiond (one DTLS session, re-authenticated each round);
// "reconnect-per-upload" replays the device library on an nRF9160 (no keep-open: the socket is
// closed after each fetch, and a new handshake plus authentication precede each upload).
func BenchmarkAttemptCoAP(b *testing.B) {
	sim := startSim(b)
	tr, err := coaptransport.New(coaptransport.Config{Hostname: "127.0.0.1", Port: port(b, sim.CoAPAddr()),
		RootCAs: sim.CAPool(), Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("one-session", func(b *testing.B) {
		benchAttempts(b, sim, oneSession(tr.Open))
	})
	b.Run("reconnect-per-upload", func(b *testing.B) {
		benchAttempts(b, sim, func(b *testing.B, d device) transport.Stats {
			var total transport.Stats
			var cur *coaptransport.Session
			open := func() {
				var err error
				if cur, err = tr.Open(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			closeCur := func() {
				_ = cur.Close()
				total = add(total, cur.Stats())
				cur = nil
			}
			open()
			// The fetch uses the open socket, then the device closes it to run the batch.
			fetch := func(do func(u uplink)) {
				if cur == nil {
					open()
				}
				do(cur)
				closeCur()
			}
			// The upload reconnects (new handshake, new auth); the next fetch reuses that socket.
			upload := func(do func(u uplink)) {
				open()
				do(cur)
			}
			runBenchJobWith(b, d, fetch, upload)
			if cur != nil {
				closeCur()
			}
			return total
		})
	})
}

// oneSession is provisiond's pattern: the whole attempt on one session.
func oneSession[S uplink](open func(context.Context) (S, error)) pattern {
	return func(b *testing.B, d device) transport.Stats {
		s, err := open(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		runBenchJob(b, s, d)
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		return s.Stats()
	}
}

// benchAttempts runs one attempt per iteration on a fresh queue and reports the wire cost
// per attempt.
func benchAttempts(b *testing.B, sim *simcloud.Server, attempt pattern) {
	d := newDevice(b, sim, true)
	var total transport.Stats
	n := 0
	for b.Loop() {
		b.StopTimer()
		enqueue(b, sim, d, benchJob()...)
		b.StartTimer()
		total = add(total, attempt(b, d))
		n++
	}
	per := func(v int64) float64 { return float64(v) / float64(n) }
	b.ReportMetric(per(int64(total.Handshakes)), "handshakes/attempt")
	b.ReportMetric(per(int64(total.ResumedHandshakes)), "resumed/attempt")
	b.ReportMetric(per(int64(total.Requests)), "requests/attempt")
	b.ReportMetric(per(total.BytesSent), "bytes-sent/attempt")
	b.ReportMetric(per(total.BytesReceived), "bytes-recv/attempt")
	if total.DatagramsSent > 0 {
		b.ReportMetric(per(total.DatagramsSent+total.DatagramsReceived), "datagrams/attempt")
	}
}

// runBenchJob carries the job over one session.
func runBenchJob(b *testing.B, u uplink, d device) {
	b.Helper()
	if batches, finished := runJob(b, u, d, benchLimit); batches != 3 || !finished {
		b.Fatalf("got %d batches, finished %v; want 3, true", batches, finished)
	}
}

// runBenchJobWith carries the job with the caller deciding which session each fetch and each
// upload runs on.
func runBenchJobWith(b *testing.B, d device, fetchOn, uploadOn func(do func(u uplink))) {
	b.Helper()
	ctx := context.Background()
	jwt := d.jwt(b)
	after := ""
	for batches := 0; ; batches++ {
		var cmds []proto.Command
		fetchOn(func(u uplink) {
			req := d.fetchReq(b, after)
			req.Limit, req.JWT = benchLimit, jwt
			body, err := u.Fetch(ctx, req)
			if errors.Is(err, transport.ErrNoCommands) {
				b.Fatalf("no commands after %d batches", batches)
			}
			if err != nil {
				b.Fatal(err)
			}
			cmds = decode(b, body)
		})
		after = cmds[len(cmds)-1].ID
		uploadOn(func(u uplink) {
			if err := u.Upload(ctx, transport.UploadRequest{JWT: jwt, Body: encode(b, ok(cmds)...)}); err != nil {
				b.Fatal(err)
			}
		})
		if cmds[len(cmds)-1].Kind == proto.KindFinished {
			if batches != 2 {
				b.Fatalf("finished after %d batches, want 3", batches+1)
			}
			return
		}
	}
}

func add(a, b transport.Stats) transport.Stats {
	return transport.Stats{
		Handshakes:        a.Handshakes + b.Handshakes,
		ResumedHandshakes: a.ResumedHandshakes + b.ResumedHandshakes,
		Requests:          a.Requests + b.Requests,
		BytesSent:         a.BytesSent + b.BytesSent,
		BytesReceived:     a.BytesReceived + b.BytesReceived,
		DatagramsSent:     a.DatagramsSent + b.DatagramsSent,
		DatagramsReceived: a.DatagramsReceived + b.DatagramsReceived,
	}
}
