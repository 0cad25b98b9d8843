package atmodem

import (
	"errors"
	"fmt"
	"strconv"
)

// Sentinel errors. Compare with errors.Is; the client wraps them with the operation and the
// command name ("atmodem: AT+CFUN: timeout").
var (
	// ErrError is a plain ERROR final result (no code: CMEE was off or the command is unknown).
	ErrError = errors.New("ERROR")
	// ErrPortLost means the port is gone: a read or write failed (EOF, EIO, a closed serial
	// port) or MaxTimeouts commands in a row got no answer. The client is finished; open the
	// port again and make a new client.
	ErrPortLost = errors.New("modem port lost")
	// ErrClosed means Close was called.
	ErrClosed = errors.New("client closed")
	// ErrWedged is what Config.Heartbeat reports while a write to the port does not return:
	// the conversation cannot go on, though the client itself still answers.
	ErrWedged = errors.New("modem port wedged")
	// ErrTimeout means a command got no final result before its deadline.
	ErrTimeout = errors.New("timeout")
	// ErrCommandTooLong means the command with its terminator exceeds Config.MaxCommandLen;
	// nothing was written.
	ErrCommandTooLong = errors.New("command too long")
	// ErrInvalidCommand means the command cannot be sent safely: it is empty, has a line
	// terminator or NUL outside double quotes (the modem would see two commands), or an
	// unbalanced double quote (the modem would wait for the closing quote forever).
	ErrInvalidCommand = errors.New("invalid command")
	// ErrInvalidArgument means a helper was given a value it cannot encode, or the Config is
	// invalid.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrLineTooLong means a line longer than the line limit arrived while the command ran; it
	// was discarded, so the response is incomplete. The Response holds what was kept.
	ErrLineTooLong = errors.New("response line too long")
	// ErrResponseTooLong means a command's answer exceeded Config.MaxResponseLen. The error
	// is a *ResponseTooLongError; the Response holds the lines kept and the final result.
	ErrResponseTooLong = errors.New("response too long")
	// ErrUnexpectedResponse means the modem answered OK but not in the documented format.
	ErrUnexpectedResponse = errors.New("unexpected response")
)

// ResponseTooLongError reports an answer longer than Config.MaxResponseLen: its first lines
// (Kept of them) are in the Response, the Dropped lines after them were read and discarded up
// to the final result, so the port is in step for the next command. It matches
// ErrResponseTooLong.
type ResponseTooLongError struct {
	Limit   int // Config.MaxResponseLen
	Kept    int // lines kept
	Dropped int // lines discarded
}

func (e *ResponseTooLongError) Error() string {
	return fmt.Sprintf("%s: more than %d bytes, %d lines kept, %d discarded",
		ErrResponseTooLong, e.Limit, e.Kept, e.Dropped)
}

// Unwrap makes errors.Is(err, ErrResponseTooLong) hold.
func (e *ResponseTooLongError) Unwrap() error { return ErrResponseTooLong }

// CMEError is a "+CME ERROR: <n>" final result. Code is -1 when the modem sent the text
// form (CMEE=2) instead of a number; Raw is the final line as received.
type CMEError struct {
	Code int
	Raw  string
}

func (e *CMEError) Error() string {
	if hint := cmeHint(e.Code); hint != "" {
		return e.Raw + " (" + hint + ")"
	}
	return e.Raw
}

// Hint is a short explanation of the code for users, empty for codes without one.
func (e *CMEError) Hint() string { return cmeHint(e.Code) }

// CMSError is a "+CMS ERROR: <n>" final result (SMS layer), with the same fields as CMEError.
type CMSError struct {
	Code int
	Raw  string
}

func (e *CMSError) Error() string { return e.Raw }

// cmeHint maps the nRF91 CME codes of docs/modem.md §1 to what a user should know. Codes 520,
// 523 and 525 differ by command (key generation, JWT), so the hint names both meanings.
func cmeHint(code int) string {
	switch code {
	case 0:
		return "phone failure; the command may not be supported by this modem firmware"
	case 23:
		return "memory failure"
	case 50:
		return "incorrect parameters"
	case 51:
		return "command disabled in this modem firmware build"
	case 60:
		return "system error"
	case 513:
		return "not found"
	case 514:
		return "no access"
	case 515:
		return "memory full"
	case 518:
		return "not allowed in active state; set the modem offline (AT+CFUN=4) first"
	case 519:
		return "already exists"
	case 520:
		return "already exists or authentication failed"
	case 523:
		return "key generation failed"
	case 525:
		return "JWT creation failed"
	case 527:
		return "invalid content"
	case 528:
		return "not allowed while a power-off warning is active"
	}
	return ""
}

// parseFinalCode reads the number after "+CME ERROR:" / "+CMS ERROR:", -1 if it is not one.
func parseFinalCode(rest string) int {
	n, err := strconv.Atoi(trimSpace(rest))
	if err != nil || n < 0 {
		return -1
	}
	return n
}
