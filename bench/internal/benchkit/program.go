package benchkit

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// BinFlag declares -bin on the command line: the provisiond binary a bench program measures,
// or "" for a stripped build of this module (Binary).
func BinFlag() *string {
	return flag.String("bin", "", "provisiond binary (default: build ./cmd/provisiond stripped into a temporary folder)")
}

// Main runs a bench program's body with a context that Ctrl-C and SIGTERM cancel, so that the
// simulators and daemons it started are torn down, and exits with status 1 and "name: error"
// when the body fails.
func Main(name string, body func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := body(ctx)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}
