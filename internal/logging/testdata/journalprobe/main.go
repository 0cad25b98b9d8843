// Command journalprobe logs a fixed set of entries through logging.New on its stderr. The
// logging tests build it with go-systemd's journal socket pointed at a socket of their own
// (the package's documented build-time override) and read what arrives there.
package main

import (
	"errors"
	"fmt"
	"os"

	"go.uber.org/zap"

	"github.com/provisiond/provisiond/internal/logging"
)

func main() {
	log, err := logging.New(logging.Config{Level: "debug",
		JournalFields: map[string]string{"PROVISIOND_MODEM_PORT": "/dev/ttyACM0"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	log.Info("provisioning event",
		logging.Message("4bd5d0c2cf5e4f1f9b0c54a1e3a25d01", "provisioning DONE: 5 commands executed"),
		zap.String("event", "DONE"), zap.Int("attempt", 3), zap.String("device_uuid", "50363154-3931-4d2d-8011-1234567890ab"))
	log.Warn("modem lost", zap.Error(errors.New("read /dev/ttyACM0: input/output error")), zap.String("port", "/dev/ttyACM0"))
	log.With(zap.String("component", "at")).Debug("at trace", zap.String("line", "AT+CFUN?\r\nOK"))
	_ = log.Sync()
}
