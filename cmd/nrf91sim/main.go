// Command nrf91sim puts a simulated nRF91 modem on a pseudo-terminal and prints its path,
// so provisiond (or any AT tool) can be tried without hardware:
//
//	nrf91sim --link /tmp/ttyNRF --identity sim-identity.pem
//
// It prints "key: value" lines (pty, link, uuid, imei, chip, attestation-token) and serves
// until SIGINT or SIGTERM. The --link symlink exists only while the simulated modem is
// plugged in, like a udev by-id name, so it is gone once nrf91sim exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/provisiond/provisiond/internal/attest"
	"github.com/provisiond/provisiond/internal/simmodem"
)

// version is set with -ldflags "-X main.version=…".
var version = "dev"

type options struct {
	link           string
	identity       string
	publicIdentity string
	uuidFile       string
	latency        time.Duration
	timing         string
	baud           int
	echo           bool
	chip           string
	lineEnding     string
	banner         string
	clockValid     bool
	version        bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("nrf91sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.link, "link", "", "symlink at `PATH` to the pty while the modem is plugged in, like a udev by-id name (removed on exit)")
	fs.StringVar(&o.identity, "identity", "", "device identity key `FILE` (PEM EC key; created with mode 0600 if missing). Without it every run is a new device")
	fs.StringVar(&o.publicIdentity, "public-identity", "", "write the identity public key PEM to `FILE` (for the simulated service)")
	fs.StringVar(&o.uuidFile, "uuid-file", "", "write the device UUID to `FILE`")
	fs.DurationVar(&o.latency, "latency", 20*time.Millisecond, "processing time of every command (0 for tests)")
	fs.StringVar(&o.timing, "timing", "zero", "time per command class: zero, typical, or a YAML/JSON `FILE` (docs/simulators.md, \"Timing profiles\")")
	fs.IntVar(&o.baud, "baud", 115200, "simulated line rate in both directions (0 = unlimited)")
	fs.BoolVar(&o.echo, "echo", false, "start with command echo on (ATE1)")
	fs.StringVar(&o.chip, "chip", simmodem.ChipNRF9161, "chip to simulate: nrf9160, nrf9161 or nrf9151")
	fs.StringVar(&o.lineEnding, "line-ending", simmodem.LineEndingAny, "what ends a command: any, cr, lf or crlf")
	fs.StringVar(&o.banner, "banner", "", `line written when a client is served, e.g. "Ready"`)
	fs.BoolVar(&o.clockValid, "clock-valid", false, "start with valid time (otherwise none until +CCLK or registration)")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nrf91sim:", err)
		os.Exit(2)
	}
	if o.version {
		fmt.Println("nrf91sim", version)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "nrf91sim:", err)
		os.Exit(1)
	}
}

// run builds the modem, serves it on a pty and prints what a user needs to connect and to
// claim the device; it returns nil when ctx is cancelled.
func run(ctx context.Context, o options, stdout io.Writer) error {
	cfg := simmodem.Config{
		Chip: o.chip, Latency: o.latency, Baud: o.baud, Echo: o.echo, LineEnding: o.lineEnding,
		Banner: o.banner, ClockValid: o.clockValid, Link: o.link,
	}
	timing, err := simmodem.ParseTiming(o.timing)
	if err != nil {
		return err
	}
	cfg.Timing = timing
	if o.identity != "" {
		key, _, err := attest.LoadOrCreateKey(o.identity)
		if err != nil {
			return err
		}
		cfg.Identity = key
	}
	m, err := simmodem.New(cfg)
	if err != nil {
		return err
	}
	if o.publicIdentity != "" {
		if err := attest.WriteFileAtomic(o.publicIdentity, m.PublicKeyPEM(), 0o644); err != nil {
			return err
		}
	}
	if o.uuidFile != "" {
		if err := attest.WriteFileAtomic(o.uuidFile, []byte(m.UUID()+"\n"), 0o644); err != nil {
			return err
		}
	}
	tok, err := m.AttestationToken()
	if err != nil {
		return err
	}
	p, err := m.ServePTY(ctx)
	if err != nil {
		return err
	}
	defer p.Close()
	fmt.Fprintf(stdout, "pty: %s\n", p.SlavePath())
	if o.link != "" {
		fmt.Fprintf(stdout, "link: %s\n", o.link)
	}
	fmt.Fprintf(stdout, "uuid: %s\nimei: %s\nchip: %s\nattestation-token: %s\n", m.UUID(), m.IMEI(), m.Chip(), tok)
	<-ctx.Done()
	return p.Close()
}
