// Command provisiond-demo runs the real provisiond against a simulated nRF91 on a pty and a
// simulated nRF Cloud Provisioning Service on loopback, carries a realistic job (client
// certificate generated in the modem and signed by the service, an interval change, FINISHED)
// and shows what happens as it happens, then a summary. It exits non-zero if anything did not
// happen as expected.
//
//	go run ./cmd/provisiond-demo [--transport http|coap] [--provisiond PATH]
//	go run ./cmd/provisiond-demo --station N [--hold] [--listen ADDR] [--provisiond PATH]
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
)

type options struct {
	transport  string
	provisiond string
	latency    time.Duration
	baud       int
	station    int    // > 0: the station demo with this many boards
	listen     string // the station demo's dashboard address
	hold       bool   // the station demo keeps running after its summary until interrupted
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("provisiond-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.transport, "transport", "http", "how provisiond reaches the service: http or coap")
	fs.StringVar(&o.provisiond, "provisiond", "", "provisiond binary to run (empty: go build one into a temporary folder)")
	fs.DurationVar(&o.latency, "latency", 20*time.Millisecond, "the simulated modem's processing time per AT command")
	fs.IntVar(&o.baud, "baud", 115200, "the simulated serial line's rate (0: unlimited)")
	fs.IntVar(&o.station, "station", 0, "run the station demo with this many simulated boards and instances (1-64)")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:9273", "the station demo's dashboard address")
	fs.BoolVar(&o.hold, "hold", false, "with --station: after the summary keep the simulators, instances and dashboard running until Ctrl-C or SIGTERM")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.station < 0 || o.station > 64 {
		return o, fmt.Errorf("--station %d: want 1 to 64 boards", o.station)
	}
	if o.hold && o.station == 0 {
		return o, errors.New("--hold: only the station demo (--station N) holds")
	}
	if o.transport != "http" && o.transport != "coap" {
		return o, fmt.Errorf("--transport: %q is neither http nor coap", o.transport)
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "provisiond-demo:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	if o.station > 0 {
		err = runStation(ctx, o, os.Stdout)
	} else {
		err = run(ctx, o, os.Stdout)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "provisiond-demo:", err)
		os.Exit(1)
	}
}
