package atmodem

import (
	"strings"
	"unicode/utf8"
)

// maxLineLen bounds one received line. The longest legitimate nRF91 lines are a KEYGEN
// answer (about 1 KB) and +CGMR (at most 2048 characters); PEM bodies come back split into
// 64-character lines. A longer line is noise and is discarded rather than buffered.
const maxLineLen = 8 << 10

// urcPrefixes are the unsolicited result codes of the nRF91 and its serial front-ends. A
// line with one of these prefixes is an URC unless it is the pending command's own answer
// (AT+CEREG? is answered by "+CEREG: ...").
var urcPrefixes = []string{
	"+CEREG:", "+CSCON:", "+CGEV:", "+CEDRXP:", "+CIREG:", "+CNEC_", "+CMT:", "+CDS:",
	"%CESQ:", "%XTIME:", "%MDMEV:", "%XMODEMSLEEP:", "%NCELLMEAS:", "%XSIM:", "%XT3412:",
	"%XPOFWARN:", "%XVBATLOWLVL:", "%XBATSTAT:", "%XNCELLMEAS:", "%CELLMEAS:",
	"#XBOOT", "#XNRFPROV:", "#XPPP:", "#XDFU",
}

// bannerLines are start-up banners of the front-ends (docs/modem.md §1.9); they are dropped.
func isBanner(line string) bool {
	return line == "Ready" || line == "The AT host sample started"
}

// finalKind tells the final result lines apart.
type finalKind int

const (
	notFinal finalKind = iota
	finalOK
	finalError
	finalCME
	finalCMS
)

func classifyFinal(line string) finalKind {
	switch {
	case line == "OK":
		return finalOK
	case line == "ERROR":
		return finalError
	case strings.HasPrefix(line, "+CME ERROR:"):
		return finalCME
	case strings.HasPrefix(line, "+CMS ERROR:"):
		return finalCMS
	}
	return notFinal
}

// answerPrefix is the prefix of the information lines a command answers with: "AT+CFUN?"
// → "+CFUN:", "AT%CMNG=1" → "%CMNG:". Empty for a bare "AT" or a command without a
// +, % or # name.
func answerPrefix(cmd string) string {
	if len(cmd) < 3 || !strings.EqualFold(cmd[:2], "AT") {
		return ""
	}
	rest := cmd[2:]
	if rest == "" || !strings.ContainsRune("+%#", rune(rest[0])) {
		return ""
	}
	end := strings.IndexAny(rest, "=?; \r\n")
	if end < 0 {
		end = len(rest)
	}
	return strings.ToUpper(rest[:end]) + ":"
}

// commandName is the part of a command used in error messages: "AT%CMNG=0,1,2,\"...\"" →
// "AT%CMNG". It never includes parameters, which may be secret.
func commandName(cmd string) string {
	end := strings.IndexAny(cmd, "=?; \r\n\"")
	if end < 0 {
		end = len(cmd)
	}
	if end > 32 {
		end = 32
	}
	return cmd[:end]
}

// isURC reports whether line is unsolicited while a command with answer prefix ans runs.
func isURC(line, ans string) bool {
	for _, p := range urcPrefixes {
		if strings.HasPrefix(line, p) {
			return ans == "" || !strings.HasPrefix(line, ans)
		}
	}
	return false
}

// sanitizeLine removes what line noise leaves in a line: invalid UTF-8, control characters
// other than tab, and surrounding blanks. It reports whether anything but blanks was removed.
func sanitizeLine(b []byte) (string, bool) {
	dirty := false
	clean := b[:0:0]
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			dirty = true
		case r < 0x20 && r != '\t', r == 0x7f:
			dirty = true
		default:
			if clean == nil {
				clean = make([]byte, 0, len(b))
			}
			clean = append(clean, b[i:i+size]...)
		}
		i += size
	}
	return trimSpace(string(clean)), dirty
}

func trimSpace(s string) string { return strings.TrimSpace(s) }

// checkCommand refuses commands the modem would not parse as one command: terminators and
// NULs count only inside double quotes (a PEM body), and quotes must balance.
func checkCommand(cmd string) error {
	if trimSpace(cmd) == "" {
		return ErrInvalidCommand
	}
	inQuote := false
	for i := 0; i < len(cmd); i++ {
		switch cmd[i] {
		case '"':
			inQuote = !inQuote
		case 0:
			return ErrInvalidCommand
		case '\r', '\n':
			if !inQuote {
				return ErrInvalidCommand
			}
		}
	}
	if inQuote {
		return ErrInvalidCommand
	}
	return nil
}

// echoLines are the lines an echoing front-end sends back for cmd.
func echoLines(cmd string) []string {
	var out []string
	for _, l := range strings.FieldsFunc(cmd, func(r rune) bool { return r == '\r' || r == '\n' }) {
		if l = trimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// commandParts splits a concatenated command line at the semicolons outside double quotes:
// "AT+CFUN=4;%CMNG=0,1,0,\"a;b\"" → "AT+CFUN=4", "%CMNG=0,1,0,\"a;b\"". An unclosed quote
// runs to the end of the line.
func commandParts(line string) []string {
	var parts []string
	inQuote, start := false, 0
	for i := 0; i < len(line); i++ {
		switch line[i] {
		case '"':
			inQuote = !inQuote
		case ';':
			if !inQuote {
				parts = append(parts, line[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, line[start:])
}

// HasHashCommand reports whether any command of a (possibly concatenated) command line is a
// #-command: "AT#XRESET", "AT+CFUN=4;#XRESET". The modem itself has none; the Serial Modem
// and Serial LTE Modem firmware run them in the board's application (reset, sockets, DFU).
func HasHashCommand(cmd string) bool {
	for _, part := range commandParts(cmd) {
		part = trimSpace(part)
		if len(part) >= 2 && strings.EqualFold(part[:2], "AT") {
			part = trimSpace(part[2:])
		}
		if strings.HasPrefix(part, "#") {
			return true
		}
	}
	return false
}
