package simmodem

import (
	"crypto/ecdsa"
	"fmt"
	"strings"
	"time"
)

// Chips the simulator can pretend to be.
const (
	ChipNRF9160 = "nrf9160"
	ChipNRF9161 = "nrf9161"
	ChipNRF9151 = "nrf9151"
)

// Line endings that end a command (Config.LineEnding).
const (
	// LineEndingAny ends a command on CR, LF or NUL, like the AT host sample (the default).
	LineEndingAny = "any"
	// LineEndingCR ends a command on CR only; an LF is ignored as leading whitespace.
	LineEndingCR = "cr"
	// LineEndingLF ends a command on LF only.
	LineEndingLF = "lf"
	// LineEndingCRLF ends a command only on CR LF, like the Serial LTE Modem; CR alone does not.
	LineEndingCRLF = "crlf"
)

// Config describes a simulated nRF91. The zero value is a usable nRF9161 with a fresh
// identity, no latency, no baud limit and no echo.
type Config struct {
	// Identity is the device identity key (signs %JWT, %ATTESTTOKEN, %KEYGEN COSE).
	// Nil generates a new P-256 key.
	Identity *ecdsa.PrivateKey
	// UUID is the device UUID (8-4-4-4-12). Empty derives it from the identity public key,
	// so a saved identity gives a stable UUID.
	UUID string
	// Chip is nrf9160, nrf9161 (default) or nrf9151.
	Chip string
	// FirmwareVersion is what %SHORTSWVER answers ("nrf91x1_2.0.2"); +CGMR adds "mfw_".
	// Empty picks one that fits Chip.
	FirmwareVersion string
	// FirmwareUUID is the modem firmware build UUID (%XMODEMUUID, JWT jti, attestation).
	// Empty derives it from FirmwareVersion.
	FirmwareUUID string
	// IMEI is 15 digits for +CGSN. Empty derives one (with a valid check digit) from the UUID.
	IMEI string
	// FunctionalMode is the +CFUN mode the modem starts in (0 by default). 1 or 21 start
	// registered, with network time, as a modem that was already online.
	FunctionalMode int
	// Latency is the processing time of every command before its answer (0 for tests).
	Latency time.Duration
	// Timing adds a time per class of command (timing.go); the zero value adds none.
	Timing Timing
	// RegistrationDelay is the time from +CFUN=1 to the registration URC. Zero means 20 ms.
	RegistrationDelay time.Duration
	// RegStatus is the +CEREG status reached when online: 1 home (default) or 5 roaming.
	RegStatus int
	// Baud limits both directions to Baud/10 bytes per second (8N1). Zero is unlimited.
	Baud int
	// Echo starts with ATE1 in effect.
	Echo bool
	// LineEnding is what ends a command: any (default), cr, lf or crlf.
	LineEnding string
	// MaxCommandLen is the AT buffer: the longest command including its terminator.
	// Zero means 4096. A longer command answers ERROR.
	MaxCommandLen int
	// Banner is written when Serve starts ("Ready" for Serial Modem builds); empty writes none.
	Banner string
	// Clock is the host time the simulated network hands out. Nil means time.Now.
	Clock func() time.Time
	// ClockValid starts the modem with valid time; otherwise it has none until +CCLK is set
	// or it registers (network time).
	ClockValid bool
	// HideReserved leaves the modem's own credentials (sec tags above 2147483647) out of
	// %CMNG lists.
	HideReserved bool
	// MaxCredentials bounds the credential store (user tags); beyond it writes answer
	// +CME ERROR: 515. Zero means 64.
	MaxCredentials int
	// Link, for ServePTY, is a symlink to the current pty that exists only while it is
	// plugged in, like a udev by-id name: removed when the line is cut, made again
	// (atomically) by Replug.
	Link string
}

func (c *Config) fill() error {
	if c.Chip == "" {
		c.Chip = ChipNRF9161
	}
	c.Chip = strings.ToLower(c.Chip)
	switch c.Chip {
	case ChipNRF9160:
		if c.FirmwareVersion == "" {
			c.FirmwareVersion = "nrf9160_1.3.7"
		}
	case ChipNRF9161, ChipNRF9151:
		if c.FirmwareVersion == "" {
			c.FirmwareVersion = "nrf91x1_2.0.2"
		}
	default:
		return fmt.Errorf("%w: chip %q (want nrf9160, nrf9161 or nrf9151)", ErrConfig, c.Chip)
	}
	if c.LineEnding == "" {
		c.LineEnding = LineEndingAny
	}
	switch c.LineEnding {
	case LineEndingAny, LineEndingCR, LineEndingLF, LineEndingCRLF:
	default:
		return fmt.Errorf("%w: line ending %q (want any, cr, lf or crlf)", ErrConfig, c.LineEnding)
	}
	if c.MaxCommandLen == 0 {
		c.MaxCommandLen = 4096
	}
	if c.RegistrationDelay == 0 {
		c.RegistrationDelay = 20 * time.Millisecond
	}
	if c.RegStatus == 0 {
		c.RegStatus = 1
	}
	if c.RegStatus != 1 && c.RegStatus != 5 {
		return fmt.Errorf("%w: reg status %d (want 1 or 5)", ErrConfig, c.RegStatus)
	}
	if c.MaxCredentials == 0 {
		c.MaxCredentials = 64
	}
	if c.Baud < 0 || c.Latency < 0 || c.MaxCommandLen < 8 || c.MaxCredentials < 0 {
		return fmt.Errorf("%w: negative baud/latency or tiny buffer", ErrConfig)
	}
	if c.IMEI != "" && (len(c.IMEI) != 15 || strings.Trim(c.IMEI, "0123456789") != "") {
		return fmt.Errorf("%w: imei %q (want 15 digits)", ErrConfig, c.IMEI)
	}
	switch c.FunctionalMode {
	case 0, 1, 2, 4, 20, 21, 44:
	default:
		return fmt.Errorf("%w: functional mode %d (want 0, 1, 2, 4, 20, 21 or 44)", ErrConfig, c.FunctionalMode)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return nil
}
