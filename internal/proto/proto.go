// Package proto holds the nRF Cloud provisioning protocol messages and their CBOR codec
// (docs/protocol.md §3): command batches (service → device) and response batches (device → service),
// plus the JSON form used by the CLI and the simulated service's owner API.
//
// Every command and response is one flat CBOR array [correlation_id, type, fields...]. Command
// batches are decoded as the device's zcbor decoder decodes them: any length encoding, exact
// element counts and types, the device's count limits, bytes after the batch ignored, text
// bytes passed through; plus the host's own rules for correlation ids. Response batches are
// decoded tolerantly (definite or indefinite lengths), as a server must. Both encoders write
// canonical CBOR. All functions are safe for concurrent use; the package keeps no mutable
// state.
package proto

import "strconv"

// CommandKind is the type number of a command (docs/protocol.md §3.1).
type CommandKind uint64

// Command type numbers.
const (
	KindAT       CommandKind = 0
	KindConfig   CommandKind = 1
	KindFinished CommandKind = 2
)

// String returns the kind's name in the JSON form: "at", "config" or "finished".
func (k CommandKind) String() string {
	switch k {
	case KindAT:
		return "at"
	case KindConfig:
		return "config"
	case KindFinished:
		return "finished"
	}
	return "command(" + strconv.FormatUint(uint64(k), 10) + ")"
}

// ResponseKind is the type number of a response (docs/protocol.md §3.3).
type ResponseKind uint64

// Response type numbers.
const (
	KindError       ResponseKind = 99
	KindATResponse  ResponseKind = 100
	KindConfigAck   ResponseKind = 101
	KindFinishedAck ResponseKind = 102
)

// String returns the kind's name in the JSON form: "error", "at_response", "config_ack" or
// "finished_ack".
func (k ResponseKind) String() string {
	switch k {
	case KindError:
		return "error"
	case KindATResponse:
		return "at_response"
	case KindConfigAck:
		return "config_ack"
	case KindFinishedAck:
		return "finished_ack"
	}
	return "response(" + strconv.FormatUint(uint64(k), 10) + ")"
}

// Receive limits of the device (docs/protocol.md §9).
const (
	// DefaultMaxCommands is NRF_PROVISIONING_CBOR_RECORDS, the default `limit` of a fetch.
	DefaultMaxCommands = 10
	// MaxCommandsCeiling caps the maxCommands argument of the decoders. The device's Kconfig
	// range ends at 20; the ceiling only keeps a caller's typo from lifting the guard.
	MaxCommandsCeiling = 256
	// MaxIgnoreCodes is the most ignore_cme_errors entries of one AT command.
	MaxIgnoreCodes = 6
	// MaxProperties is the most key/value pairs of one config command.
	MaxProperties = 10
	// MaxIDLen is the longest correlation id accepted, in bytes. The device copies the id into
	// a 46-byte buffer (a 36-char UUID, ".", 8 chars, NUL) without a length check (docs/protocol.md
	// §12.13), so it holds at most 45 characters; ids seen from the service are ~38-40. We
	// accept more so a slightly longer id does not stall provisioning, but not without bound.
	MaxIDLen = 255
)

// Property is one key/value pair of a config command. Keys are full settings paths, such as
// "provisioning/interval-sec"; the order of the pairs on the wire is kept.
type Property struct {
	Key, Value string
}

// Command is one element of a command batch. Which fields are meaningful depends on Kind.
type Command struct {
	ID   string // correlation id, assigned by the service
	Kind CommandKind

	SetCommand      string   // AT only: e.g. "%CMNG", without the "AT" prefix
	Parameters      string   // AT only: what follows the "="
	IgnoreCMEErrors []uint64 // AT only: CME error codes that count as success

	Properties []Property // config only, in wire order
}

// ATString returns the modem command the device builds for an AT command: "AT" + SetCommand +
// "=" + Parameters. The "=" is always added, even when Parameters is empty (docs/protocol.md §3.1).
func (c Command) ATString() string {
	return "AT" + c.SetCommand + "=" + c.Parameters
}

// Response is one element of a response batch. CMEError is meaningful only for KindError and
// Message only for KindError and KindATResponse.
type Response struct {
	ID       string // correlation id of the command answered
	Kind     ResponseKind
	CMEError uint64 // 0 when the failure is not a CME error; a negative errno as uint32 for config
	Message  string
}
