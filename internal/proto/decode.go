package proto

import (
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/fxamacker/cbor/v2"
)

// DecodeCommands decodes a command batch (docs/protocol.md §3.1) as strictly as the device does:
// definite lengths and minimal heads only, exactly 5/3/2 elements for AT/config/finished,
// the right CBOR type in every position, a known type number and 1..maxCommands commands.
// maxCommands <= 0 means DefaultMaxCommands; it is capped at MaxCommandsCeiling.
//
// Errors wrap ErrMalformed or, for a count over a limit, a *LimitError (errors.Is(err,
// ErrTooMany)); a failure inside one command comes as a *DecodeError naming it. A batch either
// decodes completely or not at all, as on the device (nothing of a bad batch is executed).
//
// Beyond the device: trailing bytes after the batch, text that is not UTF-8, ignore codes
// above 2^32-1, correlation ids over MaxIDLen bytes and duplicate config keys are refused too.
func DecodeCommands(data []byte, maxCommands int) ([]Command, error) {
	cmds, err := scanCommands(data, clampMax(maxCommands))
	if err != nil {
		return nil, fmt.Errorf("proto: decode commands: %w", err)
	}
	if err := commandDecMode.Wellformed(data); err != nil {
		return nil, fmt.Errorf("proto: decode commands: %w", malformed("%v", err))
	}
	return cmds, nil
}

func scanCommands(data []byte, limit int) ([]Command, error) {
	if len(data) == 0 {
		return nil, malformed("empty payload")
	}
	s := scanner{b: data}
	h, err := s.expect(majorArray, "batch")
	if err != nil {
		return nil, err
	}
	if h.arg == 0 {
		return nil, malformed("empty batch")
	}
	if h.arg > uint64(limit) {
		return nil, &LimitError{What: "commands", Limit: limit, Got: countInt(h.arg)}
	}
	n := int(h.arg)
	// Every command takes at least 3 bytes, so a count the data cannot hold allocates nothing.
	cmds := make([]Command, 0, min(n, s.rest()/3))
	for i := range n {
		c, err := s.command()
		if err != nil {
			return nil, &DecodeError{Index: i, ID: c.ID, Err: err}
		}
		cmds = append(cmds, c)
	}
	if s.rest() > 0 {
		// The device never looks past the top-level array (docs/protocol.md §3.2). We refuse
		// instead: a conforming service never sends trailing bytes, and when they appear they
		// signal a framing fault (two payloads glued together, a wrong length) that is safer
		// to report than to execute around.
		return nil, malformed("%d trailing bytes after the batch", s.rest())
	}
	return cmds, nil
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

// command reads one command. On failure the returned Command carries the id if it was read.
func (s *scanner) command() (Command, error) {
	var c Command
	h, err := s.expect(majorArray, "command")
	if err != nil {
		return c, err
	}
	if h.arg < 2 {
		return c, malformed("command has %d elements, want 2, 3 or 5", h.arg)
	}
	if c.ID, err = s.text("correlation id", MaxIDLen); err != nil {
		return c, err
	}
	typ, err := s.uint("type")
	if err != nil {
		return c, err
	}
	c.Kind = CommandKind(typ)
	want, ok := commandLen(c.Kind)
	if !ok {
		return c, malformed("unknown command type %d", typ)
	}
	if h.arg != want {
		return c, malformed("%s command has %d elements, want %d", c.Kind, h.arg, want)
	}
	switch c.Kind {
	case KindAT:
		err = s.atFields(&c)
	case KindConfig:
		c.Properties, err = s.properties()
	}
	return c, err
}

func (s *scanner) atFields(c *Command) error {
	var err error
	if c.SetCommand, err = s.text("set_command", -1); err != nil {
		return err
	}
	if c.Parameters, err = s.text("parameters", -1); err != nil {
		return err
	}
	h, err := s.expect(majorArray, "ignore_cme_errors")
	if err != nil {
		return err
	}
	if h.arg > MaxIgnoreCodes {
		return &LimitError{What: "ignore_cme_errors", Limit: MaxIgnoreCodes, Got: countInt(h.arg)}
	}
	if h.arg == 0 {
		return nil
	}
	c.IgnoreCMEErrors = make([]uint64, h.arg)
	for j := range c.IgnoreCMEErrors {
		v, err := s.uint("ignore_cme_errors entry")
		if err != nil {
			return err
		}
		if v > math.MaxUint32 {
			// zcbor decodes the codes into uint32_t and fails on larger values.
			return malformed("ignore_cme_errors entry %d does not fit in 32 bits", v)
		}
		c.IgnoreCMEErrors[j] = v
	}
	return nil
}

func (s *scanner) properties() ([]Property, error) {
	h, err := s.expect(majorMap, "properties")
	if err != nil {
		return nil, err
	}
	if h.arg > MaxProperties {
		return nil, &LimitError{What: "properties", Limit: MaxProperties, Got: countInt(h.arg)}
	}
	if h.arg == 0 {
		return nil, nil
	}
	props := make([]Property, 0, h.arg)
	for range h.arg {
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
		props = append(props, p)
	}
	return props, nil
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
