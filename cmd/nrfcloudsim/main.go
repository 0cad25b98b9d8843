// Command nrfcloudsim runs the simulated nRF Cloud Provisioning Service (internal/simcloud)
// on loopback: HTTPS and CoAP/DTLS for devices, plus the owner JSON API on the HTTPS port.
//
//	nrfcloudsim [--http 127.0.0.1:8443] [--coap 127.0.0.1:5684] [--state-dir DIR]
//	            [--device UUID=PUBKEY.pem ...] [--api-key KEY]
//
// It prints "https: host:port", "coap: host:port" and "ca: path" lines once listening, and
// serves until SIGINT or SIGTERM. The owner API (claims, bulk CSV claims, provisioning
// commands, tags and rules) and the simulator's own controls are on the HTTPS port; see
// docs/simulators.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/provisiond/provisiond/internal/simcloud"
)

// version is set with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "nrfcloudsim:", err)
		os.Exit(1)
	}
}

// deviceFlags collects repeated --device UUID=PUBKEY.pem values.
type deviceFlags []string

func (d *deviceFlags) String() string { return strings.Join(*d, " ") }

func (d *deviceFlags) Set(v string) error {
	uuid, path, ok := strings.Cut(v, "=")
	if !ok || uuid == "" || path == "" {
		return fmt.Errorf("want UUID=PUBKEY.pem, got %q", v)
	}
	*d = append(*d, v)
	return nil
}

// run parses args, starts the simulator and serves until ctx ends; cancellation is a clean
// exit. Listening addresses go to stdout, diagnostics to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nrfcloudsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	httpAddr := fs.String("http", "127.0.0.1:8443", "HTTPS listen `address` (device and owner API)")
	coapAddr := fs.String("coap", "127.0.0.1:5684", "CoAP/DTLS (UDP) listen `address`")
	stateDir := fs.String("state-dir", "", "`directory` for ca.pem and the server certificate; an existing CA there is reused (default: a temporary directory removed on exit)")
	apiKey := fs.String("api-key", simcloud.DefaultAPIKey, "bearer `key` of the owner API")
	rtt := fs.Duration("rtt", 0, "simulated network round-trip `time`: one per request, a handshake's round trips per TLS/DTLS handshake")
	processing := fs.Duration("processing-delay", 0, "the service's own `time` per request, on top of --rtt")
	quiet := fs.Bool("quiet", false, "do not print diagnostics (TLS/DTLS errors, refused requests) to stderr")
	showVersion := fs.Bool("version", false, "print the version and exit")
	var devices deviceFlags
	fs.Var(&devices, "device", "register a device: `UUID=PUBKEY.pem` (the identity public key, PEM); repeatable")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *showVersion {
		fmt.Fprintln(stdout, "nrfcloudsim", version)
		return nil
	}

	cfg := simcloud.Config{HTTPAddr: *httpAddr, CoAPAddr: *coapAddr, StateDir: *stateDir, APIKey: *apiKey,
		RTT: *rtt, Processing: *processing}
	if !*quiet {
		var mu sync.Mutex // Logf is called from the server's goroutines
		cfg.Logf = func(format string, a ...any) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(stderr, format+"\n", a...)
		}
	}
	srv, err := simcloud.New(cfg)
	if err != nil {
		return err
	}
	defer srv.Close()
	for _, d := range devices {
		uuid, path, _ := strings.Cut(d, "=")
		pem, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("device %s: %w", uuid, err)
		}
		if err := srv.RegisterDevicePEM(uuid, pem); err != nil {
			return fmt.Errorf("device %s: %w", uuid, err)
		}
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "https: %s\ncoap: %s\nca: %s\n", srv.HTTPAddr(), srv.CoAPAddr(), srv.CAFile())
	<-ctx.Done()
	return srv.Close()
}
