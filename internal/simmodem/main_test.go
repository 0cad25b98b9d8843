package simmodem

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// A test re-runs this binary as another user to act as a serial client (release_test.go).
	if path := os.Getenv(clientHelperEnv); path != "" {
		os.Exit(runClientHelper(path))
	}
	goleak.VerifyTestMain(m)
}
