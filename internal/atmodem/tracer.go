package atmodem

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// NewTracer wraps rw so that every line written ("tx") and read ("rx") is passed to log,
// for a debug trace of the AT conversation (the -trace-at option). Secrets are replaced by a
// fingerprint ("<redacted sha256:1f0c4ad2 len=412>"): JWTs in %JWT answers, attestation
// tokens, everything after AT%KEYINJECT=, the content of %CMNG private keys and PSKs, and any
// PEM private key. Lines are logged when their terminator passes; non-printable bytes are
// shown quoted. Reads and writes may happen concurrently, so log may be called from two
// goroutines at once. The result also implements io.Closer, closing rw if it can.
func NewTracer(rw io.ReadWriter, log func(dir, line string)) io.ReadWriter {
	return &tracer{rw: rw, rx: traceDir{name: "rx", log: log}, tx: traceDir{name: "tx", log: log}}
}

type tracer struct {
	rw     io.ReadWriter
	rx, tx traceDir
	txMu   sync.Mutex
	ahead  []byte // logged but not yet written
}

func (t *tracer) Read(p []byte) (int, error) {
	n, err := t.rw.Read(p)
	t.rx.feed(p[:max(n, 0)])
	return n, err
}

// Write logs p before writing it, so a command is logged before the answer it causes. After
// a short write the unwritten rest is remembered as logged: the caller writes it again.
func (t *tracer) Write(p []byte) (int, error) {
	t.txMu.Lock()
	if bytes.HasPrefix(p, t.ahead) {
		t.tx.feed(p[len(t.ahead):])
	} else {
		t.tx.feed(p)
	}
	t.ahead = t.ahead[:0]
	n, err := t.rw.Write(p)
	if n >= 0 && n < len(p) {
		t.ahead = append(t.ahead, p[n:]...)
	}
	t.txMu.Unlock()
	return n, err
}

// Close closes the wrapped port if it is an io.Closer.
func (t *tracer) Close() error {
	if c, ok := t.rw.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// traceDir splits one direction into lines and redacts them.
type traceDir struct {
	name string
	log  func(dir, line string)

	max int // longest line logged whole; 0 means maxLineLen (tests use less)

	mu        sync.Mutex
	buf       []byte
	truncated int  // bytes dropped from an overlong line
	inSecret  bool // inside a quoted secret that started on an earlier line
	inPrivKey bool // between BEGIN and END of a PEM private key
}

func (d *traceDir) feed(p []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, b := range p {
		switch {
		case b == '\r' || b == '\n':
			if len(d.buf) > 0 || d.truncated > 0 {
				d.flush()
			}
		case len(d.buf) >= maxLineLen || (d.max > 0 && len(d.buf) >= d.max):
			d.truncated++
		default:
			d.buf = append(d.buf, b)
		}
	}
}

func (d *traceDir) flush() {
	line := d.redact(string(d.buf))
	if d.truncated > 0 {
		line += " …(" + strconv.Itoa(d.truncated) + " more bytes)"
	}
	d.buf, d.truncated = d.buf[:0], 0
	if !printable(line) {
		line = strconv.Quote(line)
	}
	d.log(d.name, line)
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if (r < 0x20 && r != '\t') || r == 0x7f {
			return false
		}
	}
	return true
}

// fingerprint identifies a secret without revealing it.
func fingerprint(s string) string {
	s = strings.Trim(trimSpace(s), `"`)
	sum := sha256.Sum256([]byte(s))
	return "<redacted sha256:" + hex.EncodeToString(sum[:4]) + " len=" + strconv.Itoa(len(s)) + ">"
}

// redact returns line with its secret part replaced. Both directions use the same rules so
// that an echoed command is redacted like the command.
func (d *traceDir) redact(line string) string {
	if d.inSecret {
		if strings.Count(line, `"`)%2 == 1 {
			d.inSecret = false
		}
		return "<redacted>"
	}
	if d.inPrivKey {
		if strings.Contains(line, "-----END") && strings.Contains(line, "PRIVATE KEY") {
			d.inPrivKey = false
		}
		return "<redacted private key>"
	}
	// A concatenated command ("AT+CFUN=4;%CMNG=0,…") carries a secret in any of its parts;
	// each part after the first is read as if it started with "AT".
	parts := commandParts(line)
	found := false
	for i, part := range parts {
		probe, shift := part, 0
		if i > 0 {
			probe, shift = "AT"+part, 2
		}
		keep := secretStart(probe) - shift
		if keep < 0 {
			continue
		}
		for keep < len(part) && part[keep] == ' ' {
			keep++
		}
		rest := part[keep:]
		if strings.Count(rest, `"`)%2 == 1 {
			d.inSecret = true // only the last part can leave a quote open
		}
		parts[i] = part[:keep] + fingerprint(rest)
		found = true
	}
	if found {
		return strings.Join(parts, ";")
	}
	if strings.Contains(line, "-----BEGIN") && strings.Contains(line, "PRIVATE KEY") {
		d.inPrivKey = !strings.Contains(line, "-----END")
		return "<redacted private key>"
	}
	return line
}

// secretStart is the index where the secret part of line begins, -1 if it has none.
func secretStart(line string) int {
	up := asciiUpper(line) // same length as line, so its indexes are line's
	if i := strings.Index(up, "AT%KEYINJECT="); i >= 0 {
		return i + len("AT%KEYINJECT=")
	}
	for _, p := range []string{"%JWT:", "%ATTESTTOKEN:"} {
		if strings.HasPrefix(up, p) {
			return len(p)
		}
	}
	// Private keys (type 2) and PSKs (3): the content is the 4th field of a write and of a
	// read answer.
	for _, p := range []string{"AT%CMNG=0,", "%CMNG:"} {
		i := strings.Index(up, p)
		if i < 0 {
			continue
		}
		start := i + len(p)
		fields := 2 // write: tag,type,<content>
		if p == "%CMNG:" {
			fields = 3 // read: tag,type,sha,<content>
		}
		parts := strings.SplitN(line[start:], ",", fields+1)
		if len(parts) <= fields {
			return -1 // a list line: no content
		}
		if typ := trimSpace(parts[1]); typ != "2" && typ != "3" {
			return -1
		}
		for _, f := range parts[:fields] {
			start += len(f) + 1
		}
		return start
	}
	return -1
}

// asciiUpper upper-cases ASCII letters only and keeps every other byte, so the result has
// the same length and byte offsets as s (strings.ToUpper does not for invalid UTF-8).
func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - ('a' - 'A')
		}
	}
	return string(b)
}
