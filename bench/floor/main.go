// Command floor measures the wall time of a provisioning attempt against the least it could
// cost, with the simulated modem on the `typical` timing profile at a real line rate and the
// simulated service behind a network round-trip time (docs/simulators.md, section 8):
//
//	floor = serial bytes / (baud/10) + modem time of the commands the job needs
//	        + round trips × RTT
//
// where the round trips are one handshake (HTTPS: TCP + TLS 1.3 = 2; CoAP: DTLS 1.2 with
// the cookie exchange = 3, plus the auth-jwt request = 1) and one fetch and one upload per
// batch. It measures a running daemon's attempt (`provisiond now`, from the START to the
// DONE event's log timestamps) and a `run --once` (process wall time), for the realistic
// job and the 10-command batch, on both transports, and prints the ratio. With -trace it
// also prints every log entry of the last attempt with its offset from START, which is where
// the time went.
//
// Usage: go run ./bench/floor [-bin path] [-n 3] [-rtt 50ms,300ms] [-transport http,coap]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/provisiond/provisiond/bench/internal/benchkit"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/simmodem"
	"github.com/provisiond/provisiond/internal/testbed"
)

func main() {
	bin := benchkit.BinFlag()
	n := flag.Int("n", 3, "attempts per cell (daemon) and runs per cell (--once)")
	rtts := flag.String("rtt", "50ms,300ms", "network round-trip times, comma-separated")
	transports := flag.String("transport", "http,coap", "transports, comma-separated")
	baud := flag.Int("baud", 115200, "serial line rate")
	trace := flag.Bool("trace", false, "print the log entries of each cell's last daemon attempt with their offsets")
	flag.Parse()
	benchkit.Main("floor", func(ctx context.Context) error {
		return run(ctx, *bin, *n, *rtts, *transports, *baud, *trace)
	})
}

// notNeeded are commands an attempt may send that the job does not need (docs/design.md).
var notNeeded = []string{"AT%ATTESTTOKEN", "AT%CCLK?"}

type measure struct {
	wall    time.Duration
	cmds    []string
	serial  int64
	entries []stamped
}

type stamped struct {
	at    time.Time
	entry testbed.LogEntry
}

func run(ctx context.Context, bin string, n int, rttList, transportList string, baud int, trace bool) error {
	if bin == "" {
		root, err := benchkit.ModuleRoot()
		if err != nil {
			return err
		}
		dir, err := os.MkdirTemp("", "floor")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if bin, err = benchkit.Build(ctx, root, dir, true); err != nil {
			return err
		}
	}
	var rtts []time.Duration
	for _, s := range strings.Split(rttList, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-rtt: %w", err)
		}
		rtts = append(rtts, d)
	}
	fmt.Printf("# floor: %s, baud %d, modem profile typical, binary %s\n\n", benchkit.Machine(), baud, filepath.Base(bin))
	fmt.Println("| job | transport | RTT | floor: serial + modem + round trips | daemon attempt (START→DONE), median | ratio | `run --once` wall, median | ratio | AT commands (daemon / once) |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	var traces []string
	for _, tr := range strings.Split(transportList, ",") {
		for _, rtt := range rtts {
			for _, job := range []benchkit.Job{benchkit.Realistic, benchkit.Batch10} {
				row, tx, err := cell(ctx, bin, strings.TrimSpace(tr), rtt, baud, job, n)
				if err != nil {
					return fmt.Errorf("%s %s %v: %w", job.Name, tr, rtt, err)
				}
				fmt.Println(row)
				if trace {
					traces = append(traces, tx)
				}
			}
		}
	}
	for _, t := range traces {
		fmt.Println()
		fmt.Print(t)
	}
	return nil
}

// floor is the least an attempt with these commands and this many batches can cost.
func floor(cmds []string, serial int64, baud int, transport string, rtt time.Duration, batches int) (total, line, modem, net time.Duration) {
	line = time.Duration(serial * 10 * int64(time.Second) / int64(baud))
	for _, c := range cmds {
		if !slices.Contains(notNeeded, c) {
			modem += simmodem.TypicalTiming.For(c)
		}
	}
	trips := 2 // TCP + TLS 1.3
	if transport == "coap" {
		trips = 3 + 1 // DTLS 1.2 with the cookie exchange, then POST auth-jwt
	}
	trips += 2 * batches
	net = time.Duration(trips) * rtt
	return line + modem + net, line, modem, net
}

func cell(ctx context.Context, bin, transport string, rtt time.Duration, baud int, job benchkit.Job, n int) (string, string, error) {
	bed, err := testbed.Start(ctx, testbed.Options{
		Transport: transport,
		Modem:     simmodem.Config{Timing: simmodem.TypicalTiming, Baud: baud},
		Cloud:     simcloud.Config{RTT: rtt},
		Timeout:   30 * time.Second,
	})
	if err != nil {
		return "", "", err
	}
	defer bed.Close()

	var once []measure
	for range n {
		m, err := runOnce(ctx, bed, bin, job)
		if err != nil {
			return "", "", fmt.Errorf("run --once: %w", err)
		}
		once = append(once, m)
	}
	daemon, err := runDaemon(ctx, bed, bin, job, n)
	if err != nil {
		return "", "", fmt.Errorf("daemon: %w", err)
	}
	dm, om := median(daemon), median(once)
	df, dl, dmod, dnet := floor(dm.cmds, dm.serial, baud, transport, rtt, job.Batches)
	of, _, _, _ := floor(om.cmds, om.serial, baud, transport, rtt, job.Batches)
	row := fmt.Sprintf("| %s | %s | %v | %s = %s + %s + %s (once: %s) | %s | **%.2f×** | %s | **%.2f×** | %d / %d |",
		job.Name, transport, rtt, ms(df), ms(dl), ms(dmod), ms(dnet), ms(of),
		ms(dm.wall), float64(dm.wall)/float64(df), ms(om.wall), float64(om.wall)/float64(of), len(dm.cmds), len(om.cmds))
	return row, traceOf(job.Name, transport, rtt, daemon[len(daemon)-1]), nil
}

func median(ms []measure) measure {
	s := slices.Clone(ms)
	slices.SortFunc(s, func(a, b measure) int { return int(a.wall - b.wall) })
	return s[len(s)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

func runOnce(ctx context.Context, bed *testbed.Bed, bin string, job benchkit.Job) (measure, error) {
	if _, err := bed.Queue(job.Reqs()...); err != nil {
		return measure{}, err
	}
	n0 := len(bed.ModemCommands())
	st0 := bed.Modem().Stats()
	cmd := bed.Command(ctx, bin, "run", "--once")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		return measure{}, fmt.Errorf("%w: %s", err, stderr.String())
	}
	wall := time.Since(t0)
	st1 := bed.Modem().Stats()
	return measure{wall: wall, cmds: bed.ModemCommands()[n0:], serial: st1.BytesIn - st0.BytesIn + st1.BytesOut - st0.BytesOut}, nil
}

// runDaemon starts `run`, lets its first attempt (nothing queued) pass, then makes n
// attempts of job with `provisiond now`.
func runDaemon(ctx context.Context, bed *testbed.Bed, bin string, job benchkit.Job, n int) ([]measure, error) {
	p, err := bed.Start(ctx, bin, nil, "run")
	if err != nil {
		return nil, err
	}
	defer func() {
		_ = p.Signal(syscall.SIGTERM)
		wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := p.Wait(wctx); err != nil {
			_ = p.Kill()
		}
	}()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, _, err := p.WaitEvent(wctx, 0, "STOP"); err != nil {
		return nil, fmt.Errorf("first attempt: %w (stderr %s)", err, p.Stderr())
	}
	var out []measure
	for range n {
		if _, err := bed.Queue(job.Reqs()...); err != nil {
			return nil, err
		}
		from := len(p.Entries())
		n0 := len(bed.ModemCommands())
		st0 := bed.Modem().Stats()
		if err := bed.Command(ctx, bin, "now").Run(); err != nil {
			return nil, fmt.Errorf("provisiond now: %w", err)
		}
		actx, cancel := context.WithTimeout(ctx, 60*time.Second)
		_, _, err := p.WaitEvent(actx, from, "STOP")
		cancel()
		if err != nil {
			return nil, err
		}
		st1 := bed.Modem().Stats()
		entries := p.Entries()
		var start, done time.Time
		var got []stamped
		for i := from; i < len(entries); i++ {
			ts, ok := stamp(entries[i])
			if !ok {
				continue
			}
			switch entries[i].Event() {
			case "START":
				start = ts
			case "DONE":
				done = ts
			}
			got = append(got, stamped{ts, entries[i]})
		}
		if start.IsZero() || done.IsZero() {
			return nil, errors.New("attempt without START and DONE events (did it fail?)")
		}
		out = append(out, measure{wall: done.Sub(start), cmds: bed.ModemCommands()[n0:],
			serial: st1.BytesIn - st0.BytesIn + st1.BytesOut - st0.BytesOut, entries: got})
	}
	return out, nil
}

// stamp is a log entry's own timestamp (the "ts" member, ISO 8601 with milliseconds).
func stamp(e testbed.LogEntry) (time.Time, bool) {
	var m struct {
		TS string `json:"ts"`
	}
	if json.Unmarshal([]byte(e.Raw), &m) != nil || m.TS == "" {
		return time.Time{}, false
	}
	t, err := time.Parse("2006-01-02T15:04:05.000Z0700", m.TS)
	return t, err == nil
}

func traceOf(job, transport string, rtt time.Duration, m measure) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## where the time went: %s, %s, RTT %v (last daemon attempt, %s START→DONE)\n\n", job, transport, rtt, ms(m.wall))
	var start time.Time
	for _, s := range m.entries {
		if s.entry.Event() == "START" {
			start = s.at
		}
	}
	for _, s := range m.entries {
		what := s.entry.Msg
		if ev := s.entry.Event(); ev != "" {
			what += " " + ev
		}
		if id := s.entry.MsgID(); id != "" {
			what += " [" + id + "]"
		}
		fmt.Fprintf(&b, "    %+7.0f ms  %s\n", float64(s.at.Sub(start))/float64(time.Millisecond), what)
	}
	return b.String()
}
