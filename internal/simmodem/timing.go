package simmodem

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Timing is how long the simulated modem works on each class of command before it answers,
// on top of Config.Latency. The zero value answers at once (tests). docs/simulators.md
// ("Timing profiles") gives the source of every typical value, or says it is our estimate.
type Timing struct {
	// Read is a plain read or test command (AT+CGSN, AT%XMODEMUUID, AT+CFUN?, AT+CCLK?, …).
	Read time.Duration `yaml:"read"`
	// Set is any other set command (AT+CMEE=1, ATE0, AT+CEREG=5, …).
	Set time.Duration `yaml:"set"`
	// CFUNOffline is +CFUN=0 or +CFUN=4 (detach, radio off).
	CFUNOffline time.Duration `yaml:"cfun_offline"`
	// CFUNOnline is +CFUN=1 (or 21) until OK; registration follows later as a URC.
	CFUNOnline time.Duration `yaml:"cfun_online"`
	// KeyGen is %KEYGEN: a key pair made in the modem, its CSR signed.
	KeyGen time.Duration `yaml:"keygen"`
	// CMNGWrite is a %CMNG write (opcode 0) regardless of size; CMNGWritePerKiB adds per KiB
	// of the command line (the credential goes to non-volatile memory).
	CMNGWrite       time.Duration `yaml:"cmng_write"`
	CMNGWritePerKiB time.Duration `yaml:"cmng_write_per_kib"`
	// CMNGOther is a %CMNG list or delete (opcodes 1 and 3).
	CMNGOther time.Duration `yaml:"cmng_other"`
	// JWT is %JWT (one signature with the identity key).
	JWT time.Duration `yaml:"jwt"`
	// AttestToken is %ATTESTTOKEN.
	AttestToken time.Duration `yaml:"attesttoken"`
}

// TypicalTiming is the `typical` profile: figures reported for nRF91 modems where a public one
// exists, our estimates elsewhere (docs/simulators.md, "Timing profiles").
var TypicalTiming = Timing{
	Read:            5 * time.Millisecond,
	Set:             10 * time.Millisecond,
	CFUNOffline:     1000 * time.Millisecond,
	CFUNOnline:      500 * time.Millisecond,
	KeyGen:          1000 * time.Millisecond,
	CMNGWrite:       150 * time.Millisecond,
	CMNGWritePerKiB: 50 * time.Millisecond,
	CMNGOther:       20 * time.Millisecond,
	JWT:             300 * time.Millisecond,
	AttestToken:     300 * time.Millisecond,
}

// ErrTiming is returned for a timing profile that cannot be used.
var ErrTiming = errors.New("simmodem: bad timing profile")

// ParseTiming reads a profile: "zero", "typical", or the path of a YAML or JSON file with the
// keys of Timing as Go durations ("250ms"). Keys the file leaves out are zero; an unknown key
// or a negative duration is an error, so a typo cannot silently mean "instant".
func ParseTiming(spec string) (Timing, error) {
	switch spec {
	case "", "zero":
		return Timing{}, nil
	case "typical":
		return TypicalTiming, nil
	}
	data, err := os.ReadFile(spec)
	if err != nil {
		return Timing{}, fmt.Errorf("%w: want zero, typical or a file: %w", ErrTiming, err)
	}
	return decodeTiming(data)
}

func decodeTiming(data []byte) (Timing, error) {
	var raw map[string]string
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return Timing{}, fmt.Errorf("%w: %w", ErrTiming, err)
	}
	var t Timing
	fields := map[string]*time.Duration{
		"read": &t.Read, "set": &t.Set, "cfun_offline": &t.CFUNOffline, "cfun_online": &t.CFUNOnline,
		"keygen": &t.KeyGen, "cmng_write": &t.CMNGWrite, "cmng_write_per_kib": &t.CMNGWritePerKiB,
		"cmng_other": &t.CMNGOther, "jwt": &t.JWT, "attesttoken": &t.AttestToken,
	}
	for k, v := range raw {
		p, ok := fields[k]
		if !ok {
			return Timing{}, fmt.Errorf("%w: unknown key %q", ErrTiming, k)
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return Timing{}, fmt.Errorf("%w: %s: %w", ErrTiming, k, err)
		}
		if d < 0 {
			return Timing{}, fmt.Errorf("%w: %s: negative duration %s", ErrTiming, k, v)
		}
		*p = d
	}
	return t, nil
}

// For is the time the modem works on one command line (as received, without its terminator).
func (t Timing) For(raw string) time.Duration {
	cmd := strings.TrimSpace(raw)
	if len(cmd) < 2 || !strings.EqualFold(cmd[:2], "AT") {
		return t.Set
	}
	cmd = cmd[2:]
	name, args, isSet := strings.Cut(cmd, "=")
	name = strings.ToUpper(name)
	if strings.HasSuffix(name, "?") || (isSet && args == "?") || (!isSet && name == "") {
		return t.Read
	}
	switch name {
	case "+CFUN":
		if a := strings.TrimSpace(args); a == "0" || a == "4" || strings.HasPrefix(a, "4,") || strings.HasPrefix(a, "0,") {
			return t.CFUNOffline
		}
		return t.CFUNOnline
	case "%KEYGEN":
		return t.KeyGen
	case "%CMNG":
		if op, _, _ := strings.Cut(args, ","); strings.TrimSpace(op) == "0" {
			return t.CMNGWrite + time.Duration(int64(t.CMNGWritePerKiB)*int64(len(raw))/1024)
		}
		return t.CMNGOther
	case "%JWT":
		return t.JWT
	case "%ATTESTTOKEN":
		return t.AttestToken
	}
	if !isSet && !strings.HasPrefix(name, "E") {
		// AT+CGSN, AT%XMODEMUUID, AT+CGMR: an action that only reads.
		return t.Read
	}
	return t.Set
}
