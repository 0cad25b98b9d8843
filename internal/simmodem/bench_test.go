//go:build linux

package simmodem

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/atmodem"
)

// discardRW is an in-memory stream: writes go to a buffer that is reset per command.
type discardRW struct{ bytes.Buffer }

func (d *discardRW) Read([]byte) (int, error) { return 0, nil }

// engineOnce frames and executes one "AT\r\n" without any transport: the simulator's own
// processing time for a trivial command.
func engineOnce(ctx context.Context, s *session, rw *discardRW, in []byte) error {
	rw.Reset()
	for _, b := range in {
		cmd, st := s.framer.feed(b)
		if st == frameNone {
			continue
		}
		if err := s.execute(ctx, cmd, st == frameTooLong); err != nil {
			return err
		}
	}
	if rw.String() != "OK\r\n" {
		return fmt.Errorf("answer %q", rw.String())
	}
	return nil
}

func newEngineSession(tb testing.TB) (*session, *discardRW) {
	tb.Helper()
	m, err := New(Config{})
	if err != nil {
		tb.Fatal(err)
	}
	rw := &discardRW{}
	s := &session{m: m, rw: rw, framer: framer{mode: m.cfg.LineEnding, max: m.cfg.MaxCommandLen}}
	return s, rw
}

// BenchmarkEngineInMemory is the simulator's own per-command time for a bare AT (framing,
// parsing, state, answer formatting), with no stream in between.
func BenchmarkEngineInMemory(b *testing.B) {
	s, rw := newEngineSession(b)
	ctx := context.Background()
	in := []byte("AT\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if err := engineOnce(ctx, s, rw, in); err != nil {
			b.Fatal(err)
		}
	}
}

// engineNsPerOp measures BenchmarkEngineInMemory's figure inline, so the pty benchmark can
// report its overhead above the simulator in the same run.
func engineNsPerOp(tb testing.TB) float64 {
	s, rw := newEngineSession(tb)
	ctx := context.Background()
	in := []byte("AT\r\n")
	const n = 20000
	start := time.Now()
	for range n {
		if err := engineOnce(ctx, s, rw, in); err != nil {
			tb.Fatal(err)
		}
	}
	return float64(time.Since(start).Nanoseconds()) / n
}

// BenchmarkRoundTripPTY is a trivial AT through the whole path the daemon uses: atmodem
// client → go.bug.st/serial → pty → simulator (latency 0) → back. It also reports
// ns-above-sim/op: the round trip minus the simulator's own time (target < 100 µs).
func BenchmarkRoundTripPTY(b *testing.B) {
	_, p := startPTY(b, Config{})
	c := dial(b, p.SlavePath(), atmodem.Config{})
	ctx := context.Background()
	if _, err := c.Command(ctx, "AT"); err != nil { // warm up
		b.Fatal(err)
	}
	engine := engineNsPerOp(b)
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		if _, err := c.Command(ctx, "AT"); err != nil {
			b.Fatal(err)
		}
	}
	per := float64(time.Since(start).Nanoseconds()) / float64(b.N)
	b.ReportMetric(engine, "sim-ns/op")
	b.ReportMetric(per-engine, "ns-above-sim/op")
}

// BenchmarkRoundTripPTYRaw is the same round trip without the AT client: a plain file
// write of "AT\r\n" and reads until "OK\r\n", to split the overhead between tty and client.
func BenchmarkRoundTripPTYRaw(b *testing.B) {
	_, p := startPTY(b, Config{})
	f, err := os.OpenFile(p.SlavePath(), os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64)
	for b.Loop() {
		if _, err := f.Write([]byte("AT\r\n")); err != nil {
			b.Fatal(err)
		}
		got := 0
		for got < 4 {
			n, err := f.Read(buf[got:])
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
}

// BenchmarkCertWrite115200 writes a 4 KB certificate (%CMNG write, the command just under
// the modem's 4096-byte buffer) through the pty with the simulator limiting both directions
// to 115200 baud 8N1 (11520 B/s). lineRate is the fraction of the line rate achieved:
// (command + "OK\r\n" bytes) / 11520 B/s divided by the measured time (target >= 0.9).
func BenchmarkCertWrite115200(b *testing.B) {
	const baud = 115200
	_, p := startPTY(b, Config{Baud: baud, HideReserved: true})
	c := dial(b, p.SlavePath(), atmodem.Config{})
	ctx := context.Background()
	prefix := `AT%CMNG=0,42,0,""` + "\r\n"
	cert := certPEM(b, 4096-len(prefix))
	wire := len(prefix) + len(cert) + len("OK\r\n")
	ideal := time.Duration(float64(wire) / (baud / 10) * float64(time.Second))
	b.SetBytes(int64(wire))
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		if err := c.WriteCredential(ctx, 42, 0, cert); err != nil {
			b.Fatal(err)
		}
	}
	per := time.Since(start) / time.Duration(b.N)
	b.ReportMetric(float64(ideal)/float64(per), "lineRate")
	b.ReportMetric(float64(wire), "wire-bytes")
}
