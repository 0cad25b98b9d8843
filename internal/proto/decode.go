package proto

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// DecodeCommands decodes a command batch from the service and accepts what the device's
// zcbor decoder accepts: definite or indefinite lengths (arrays, maps and text strings, the
// latter as definite-length chunks), integer and length heads of any size, text that is not
// valid UTF-8 (its bytes are kept as they are) and bytes after the batch, which are ignored
// (DecodeCommandsPrefix says how many). As on the device, each command has exactly 5/3/2
// elements for AT/config/finished, the right CBOR type in every position and a known type
// number; ignore codes fit in 32 bits; the batch holds 1..maxCommands commands, an AT command
// at most MaxIgnoreCodes ignore codes and a config command at most MaxProperties pairs.
// maxCommands <= 0 means DefaultMaxCommands; it is capped at MaxCommandsCeiling.
//
// Beyond the device, to protect the host: correlation ids are at most MaxIDLen bytes of
// valid UTF-8 without control characters (they are stored as the cursor, shown in status
// and logs and passed to hooks), and duplicate config keys are refused.
//
// Errors wrap ErrMalformed or, for a count over a limit, a *LimitError (errors.Is(err,
// ErrTooMany)); a failure inside one command comes as a *DecodeError naming it. A batch either
// decodes completely or not at all, as on the device (nothing of a bad batch is executed).
func DecodeCommands(data []byte, maxCommands int) ([]Command, error) {
	cmds, _, err := DecodeCommandsPrefix(data, maxCommands)
	return cmds, err
}

// DecodeCommandsPrefix is DecodeCommands that also returns how many bytes of data the batch
// took. Like the device it never looks at the bytes after the batch; a caller that sees some
// should say so, since a conforming service sends none.
func DecodeCommandsPrefix(data []byte, maxCommands int) ([]Command, int, error) {
	cmds, n, err := scanCommands(data, clampMax(maxCommands))
	if err != nil {
		return nil, 0, fmt.Errorf("proto: decode commands: %w", err)
	}
	if err := commandDecMode.Wellformed(data[:n]); err != nil {
		return nil, 0, fmt.Errorf("proto: decode commands: %w", malformed("%v", err))
	}
	return cmds, n, nil
}

func scanCommands(data []byte, limit int) ([]Command, int, error) {
	if len(data) == 0 {
		return nil, 0, malformed("empty payload")
	}
	s := scanner{b: data}
	l, err := s.list(majorArray, "batch")
	if err != nil {
		return nil, 0, err
	}
	if !l.indef {
		if l.n == 0 {
			return nil, 0, malformed("empty batch")
		}
		if l.n > uint64(limit) {
			return nil, 0, &LimitError{What: "commands", Limit: limit, Got: countInt(l.n)}
		}
	}
	// Every command takes at least 3 bytes, so a count the data cannot hold allocates nothing.
	cmds := make([]Command, 0, min(int(min(l.n, uint64(limit))), s.rest()/3))
	for i := 0; ; i++ {
		more, err := s.next(&l, "batch")
		if err != nil {
			return nil, 0, err
		}
		if !more {
			break
		}
		if i >= limit { // only an indefinite batch gets here
			return nil, 0, &LimitError{What: "commands", Limit: limit, Got: i + 1}
		}
		c, err := s.command()
		if err != nil {
			return nil, 0, &DecodeError{Index: i, ID: c.ID, Err: err}
		}
		cmds = append(cmds, c)
	}
	if len(cmds) == 0 {
		return nil, 0, malformed("empty batch")
	}
	return cmds, s.off, nil
}

// commandLen is the element count of each command kind (docs/protocol.md §3.1).
func commandLen(k CommandKind) (uint64, bool) {
	switch k {
	case KindAT:
		return 5, true
	case KindConfig:
		return 3, true
	case KindFinished:
		return 2, true
	}
	return 0, false
}

// command reads one command. On failure the returned Command carries the id if it was read
// and acceptable.
func (s *scanner) command() (Command, error) {
	var c Command
	l, err := s.list(majorArray, "command")
	if err != nil {
		return c, err
	}
	if !l.indef && l.n < 2 {
		return c, malformed("command has %d elements, want 2, 3 or 5", l.n)
	}
	// element reads the next element with read, or says how short the command is.
	element := func(kind string, want uint64, read func() error) error {
		more, err := s.next(&l, "command")
		if err != nil {
			return err
		}
		if !more {
			return malformed("%s has %d elements, want %s", kind, l.read, wantLen(want))
		}
		return read()
	}
	var id string
	if err := element("command", 0, func() (err error) { id, err = s.text("correlation id", MaxIDLen); return err }); err != nil {
		return c, err
	}
	if err := checkID(id); err != nil {
		return c, err
	}
	c.ID = id
	var typ uint64
	if err := element("command", 0, func() (err error) { typ, err = s.uint("type"); return err }); err != nil {
		return c, err
	}
	c.Kind = CommandKind(typ)
	want, ok := commandLen(c.Kind)
	if !ok {
		return c, malformed("unknown command type %d", typ)
	}
	kind := c.Kind.String() + " command"
	if !l.indef && l.n != want {
		return c, malformed("%s has %d elements, want %d", kind, l.n, want)
	}
	switch c.Kind {
	case KindAT:
		err = element(kind, want, func() (err error) { c.SetCommand, err = s.text("set_command", -1); return err })
		if err == nil {
			err = element(kind, want, func() (err error) { c.Parameters, err = s.text("parameters", -1); return err })
		}
		if err == nil {
			err = element(kind, want, func() (err error) { c.IgnoreCMEErrors, err = s.ignoreCodes(); return err })
		}
	case KindConfig:
		err = element(kind, want, func() (err error) { c.Properties, err = s.properties(); return err })
	}
	if err != nil {
		return c, err
	}
	more, err := s.next(&l, "command")
	switch {
	case err != nil:
		return c, err
	case more: // only an indefinite command gets here
		return c, malformed("%s has more than %d elements, want %d", kind, want, want)
	}
	return c, nil
}

// wantLen describes the element count wanted; 0 stands for "any command".
func wantLen(n uint64) string {
	if n == 0 {
		return "2, 3 or 5"
	}
	return strconv.FormatUint(n, 10)
}

// checkID applies the host's rules for correlation ids beyond their length: the id becomes
// the stored cursor and appears in status output, logs and hook environments, so it must be
// text that can be stored and shown as it is.
func checkID(id string) error {
	if !utf8.ValidString(id) {
		return malformed("correlation id: not valid UTF-8")
	}
	if i := strings.IndexFunc(id, unicode.IsControl); i >= 0 {
		r, _ := utf8.DecodeRuneInString(id[i:])
		return malformed("correlation id: control character %U at byte %d", r, i)
	}
	return nil
}

func (s *scanner) ignoreCodes() ([]uint64, error) {
	l, err := s.list(majorArray, "ignore_cme_errors")
	if err != nil {
		return nil, err
	}
	if !l.indef && l.n > MaxIgnoreCodes {
		return nil, &LimitError{What: "ignore_cme_errors", Limit: MaxIgnoreCodes, Got: countInt(l.n)}
	}
	var codes []uint64
	for {
		more, err := s.next(&l, "ignore_cme_errors")
		if err != nil {
			return nil, err
		}
		if !more {
			return codes, nil
		}
		if len(codes) == MaxIgnoreCodes { // only an indefinite array gets here
			return nil, &LimitError{What: "ignore_cme_errors", Limit: MaxIgnoreCodes, Got: MaxIgnoreCodes + 1}
		}
		v, err := s.uint("ignore_cme_errors entry")
		if err != nil {
			return nil, err
		}
		if v > math.MaxUint32 {
			// zcbor decodes the codes into uint32_t and fails on larger values.
			return nil, malformed("ignore_cme_errors entry %d does not fit in 32 bits", v)
		}
		if codes == nil {
			codes = make([]uint64, 0, min(l.n, MaxIgnoreCodes))
		}
		codes = append(codes, v)
	}
}

func (s *scanner) properties() ([]Property, error) {
	l, err := s.list(majorMap, "properties")
	if err != nil {
		return nil, err
	}
	if !l.indef && l.n > MaxProperties {
		return nil, &LimitError{What: "properties", Limit: MaxProperties, Got: countInt(l.n)}
	}
	var props []Property
	for {
		more, err := s.next(&l, "properties")
		if err != nil {
			return nil, err
		}
		if !more {
			return props, nil
		}
		if len(props) == MaxProperties { // only an indefinite map gets here
			return nil, &LimitError{What: "properties", Limit: MaxProperties, Got: MaxProperties + 1}
		}
		var p Property
		if p.Key, err = s.text("property key", -1); err != nil {
			return nil, err
		}
		if p.Value, err = s.text("property value", -1); err != nil {
			return nil, err
		}
		// The device would write both values in order, so the last would win. A duplicate key
		// is a service bug whose intent is unclear; refusing it is the safer reading.
		for _, q := range props {
			if q.Key == p.Key {
				return nil, malformed("properties: duplicate key %q", p.Key)
			}
		}
		if props == nil {
			props = make([]Property, 0, min(l.n, MaxProperties))
		}
		props = append(props, p)
	}
}

// DecodeResponses decodes a response batch (docs/protocol.md §3.3) tolerantly, as a server must:
// definite or indefinite lengths and non-minimal heads are accepted (a device built without
// ZCBOR_CANONICAL sends indefinite arrays). Element counts and types are still exact, the batch
// holds 1..maxResponses responses (<= 0 means DefaultMaxCommands, the device's N), correlation
// ids are at most MaxIDLen bytes and trailing bytes are refused. Errors are as for
// DecodeCommands.
func DecodeResponses(data []byte, maxResponses int) ([]Response, error) {
	rs, err := decodeResponses(data, clampMax(maxResponses))
	if err != nil {
		return nil, fmt.Errorf("proto: decode responses: %w", err)
	}
	return rs, nil
}

func decodeResponses(data []byte, limit int) ([]Response, error) {
	if len(data) == 0 {
		return nil, malformed("empty payload")
	}
	// The top-level array is walked by hand, so the count limit applies before any element is
	// decoded, also for indefinite arrays whose count is only known at the break.
	h, err := readHead(data)
	if err != nil {
		return nil, malformed("batch: %v", err)
	}
	if h.major != majorArray {
		return nil, malformed("batch: got %s, want array", majorName(h.major))
	}
	rest := data[h.size:]
	var rs []Response
	if !h.indef {
		if h.arg == 0 {
			return nil, malformed("empty batch")
		}
		if h.arg > uint64(limit) {
			return nil, &LimitError{What: "responses", Limit: limit, Got: countInt(h.arg)}
		}
		rs = make([]Response, 0, min(int(h.arg), len(rest)/3))
	}
	for i := 0; ; i++ {
		if h.indef {
			if len(rest) == 0 {
				return nil, malformed("unexpected end of data: indefinite batch has no break")
			}
			if rest[0] == breakByte {
				rest = rest[1:]
				break
			}
			if i >= limit {
				return nil, &LimitError{What: "responses", Limit: limit, Got: i + 1}
			}
		} else if uint64(i) == h.arg {
			break
		}
		r, n, err := decodeResponse(rest)
		if err != nil {
			return nil, &DecodeError{Index: i, ID: r.ID, Err: err}
		}
		rest = rest[n:]
		rs = append(rs, r)
	}
	if len(rs) == 0 {
		return nil, malformed("empty batch")
	}
	if len(rest) > 0 {
		return nil, malformed("%d trailing bytes after the batch", len(rest))
	}
	return rs, nil
}

// responseLen is the element count of each response kind (docs/protocol.md §3.3).
func responseLen(k ResponseKind) (int, bool) {
	switch k {
	case KindError:
		return 4, true
	case KindATResponse:
		return 3, true
	case KindConfigAck, KindFinishedAck:
		return 2, true
	}
	return 0, false
}

// decodeResponse decodes the response at the start of b and reports the bytes it took.
func decodeResponse(b []byte) (Response, int, error) {
	var r Response
	h, err := readHead(b)
	if err != nil {
		return r, 0, malformed("response: %v", err)
	}
	if h.major != majorArray {
		return r, 0, malformed("response: got %s, want array", majorName(h.major))
	}
	var fields []cbor.RawMessage
	rest, err := responseDecMode.UnmarshalFirst(b, &fields)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return r, 0, malformed("response: unexpected end of data")
	}
	if err != nil {
		return r, 0, malformed("response: %v", err)
	}
	n := len(b) - len(rest)
	if len(fields) < 2 {
		return r, n, malformed("response has %d elements, want 2, 3 or 4", len(fields))
	}
	if err := decodeField(fields[0], majorText, "correlation id", &r.ID); err != nil {
		return r, n, err
	}
	if len(r.ID) > MaxIDLen {
		id := r.ID
		r.ID = ""
		return r, n, malformed("correlation id: %d bytes, limit %d", len(id), MaxIDLen)
	}
	var typ uint64
	if err := decodeField(fields[1], majorUint, "type", &typ); err != nil {
		return r, n, err
	}
	r.Kind = ResponseKind(typ)
	want, ok := responseLen(r.Kind)
	if !ok {
		return r, n, malformed("unknown response type %d", typ)
	}
	if len(fields) != want {
		return r, n, malformed("%s response has %d elements, want %d", r.Kind, len(fields), want)
	}
	switch r.Kind {
	case KindError:
		if err := decodeField(fields[2], majorUint, "cme_error", &r.CMEError); err != nil {
			return r, n, err
		}
		if err := decodeField(fields[3], majorText, "message", &r.Message); err != nil {
			return r, n, err
		}
	case KindATResponse:
		if err := decodeField(fields[2], majorText, "message", &r.Message); err != nil {
			return r, n, err
		}
	}
	return r, n, nil
}

// decodeField decodes one response field after checking its CBOR major type itself:
// fxamacker converts more than the schema allows (a simple value into an integer, for one).
func decodeField(raw cbor.RawMessage, major byte, what string, v any) error {
	h, err := readHead(raw)
	if err != nil {
		return malformed("%s: %v", what, err)
	}
	if h.major != major {
		return malformed("%s: got %s, want %s", what, majorName(h.major), majorName(major))
	}
	if err := responseDecMode.Unmarshal(raw, v); err != nil {
		return malformed("%s: %v", what, err)
	}
	return nil
}
