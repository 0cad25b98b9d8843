package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// The settings file is one header line followed by a body:
//
//	provisiond-settings 1 <body length> <SHA-256 of the body, lower-case hex>\n
//	{\n  "key": "value",\n  ...\n}\n
//
// The body is the JSON object of all keys, sorted, indented by two spaces, with no HTML
// escaping, ending in a newline. Loading recomputes length and checksum and also requires the
// body to be exactly what the encoder would write for the decoded map, so every store state
// has one byte form and any change to the file (truncation, a flipped bit, an edit without a
// new checksum, a duplicate key) is reported instead of half-read. The header keeps `cat`
// readable while making corruption visible.
const (
	magic         = "provisiond-settings"
	formatVersion = 1
	// maxHeaderLen bounds the header line: magic, version, a length, 64 hex digits and spaces.
	maxHeaderLen = len(magic) + 1 + 3 + 1 + 20 + 1 + 2*sha256.Size + 1
)

// encode returns the file bytes for m.
func encode(m map[string]string) []byte {
	body := encodeBody(m)
	sum := sha256.Sum256(body)
	out := make([]byte, 0, maxHeaderLen+len(body))
	out = fmt.Appendf(out, "%s %d %d %s\n", magic, formatVersion, len(body), hex.EncodeToString(sum[:]))
	return append(out, body...)
}

func encodeBody(m map[string]string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	// A map[string]string of valid UTF-8 always encodes; keys come out sorted.
	if err := enc.Encode(m); err != nil {
		panic("store: encode settings: " + err.Error())
	}
	return buf.Bytes()
}

// decode parses and verifies file bytes. The error is a reason for a *CorruptError.
func decode(data []byte) (map[string]string, string) {
	nl := bytes.IndexByte(data, '\n')
	if nl < 0 || nl > maxHeaderLen {
		return nil, "no header line"
	}
	fields := bytes.Split(data[:nl], []byte(" "))
	if len(fields) != 4 || string(fields[0]) != magic {
		return nil, "not a provisiond settings file"
	}
	if string(fields[1]) != strconv.Itoa(formatVersion) {
		return nil, fmt.Sprintf("unsupported format version %q", fields[1])
	}
	n, err := strconv.Atoi(string(fields[2]))
	if err != nil || n < 0 || string(fields[2]) != strconv.Itoa(n) {
		return nil, "bad length in header"
	}
	body := data[nl+1:]
	if len(body) != n {
		return nil, fmt.Sprintf("body is %d bytes, header says %d (truncated or extended)", len(body), n)
	}
	want, err := hex.DecodeString(string(fields[3]))
	if err != nil || len(want) != sha256.Size || string(fields[3]) != hex.EncodeToString(want) {
		return nil, "bad checksum in header"
	}
	if got := sha256.Sum256(body); !bytes.Equal(got[:], want) {
		return nil, "checksum mismatch"
	}
	// encoding/json would replace invalid UTF-8 with U+FFFD; refuse it instead.
	if !utf8.Valid(body) {
		return nil, "body is not valid UTF-8"
	}
	var m map[string]string
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, "body is not a JSON object of strings"
	}
	if m == nil {
		return nil, "body is not a JSON object of strings"
	}
	for k, v := range m {
		if err := checkKey(k); err != nil {
			return nil, "bad key in body"
		}
		if err := checkValue(k, v); err != nil {
			return nil, "bad value in body"
		}
	}
	if !bytes.Equal(encodeBody(m), body) {
		return nil, "body is not in canonical form"
	}
	return m, ""
}
