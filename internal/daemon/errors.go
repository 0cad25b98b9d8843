package daemon

import "errors"

// Sentinel errors. Compare with errors.Is.
var (
	// ErrInvalidConfig means New or Reconfigure was given a Config it cannot run with.
	ErrInvalidConfig = errors.New("invalid config")
	// ErrInvalidInterval means SetInterval was given a negative number of seconds.
	ErrInvalidInterval = errors.New("invalid interval")
	// ErrRunning means Run or RunOnce was called while another one is running.
	ErrRunning = errors.New("daemon already running")
	// ErrNoModem means no modem is open at the moment (it is being (re)opened or was lost).
	ErrNoModem = errors.New("modem not available")
	// ErrModemLost means the modem went away during the operation (the port was unplugged or
	// stopped answering). Run waits for it to come back; RunOnce returns it.
	ErrModemLost = errors.New("modem lost")
	// ErrNoValidTime means the modem has no valid time for a JWT and the configuration does
	// not allow setting it from the host (FAILED_NO_VALID_DATETIME).
	ErrNoValidTime = errors.New("modem has no valid date and time")
	// ErrStore means the daemon's own state (journal, outbox, saved mode) could not be
	// written, so a crash at this point could lose a result.
	ErrStore = errors.New("state not persisted")
	// ErrHashCommand means the service sent an AT #-command and Config.AllowHashCommands is
	// off: such commands reach the serial front-end's application, not the modem.
	ErrHashCommand = errors.New("#-command refused")
	// ErrRxBufMax means the service refused a fetch as too large and named a receive size
	// over Config.RxBufMax (provisioning.rx_buf_max), so the fetch was not retried.
	ErrRxBufMax = errors.New("over provisioning.rx_buf_max")
)
