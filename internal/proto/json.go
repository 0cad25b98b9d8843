package proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// The JSON form, which the CLI and the simulated service's owner API share, is one object per
// command or response, its fields in a fixed order and config properties in wire order:
//
//	{"id":"c1","type":"at","command":"%CMNG","parameters":"3,42,0","ignore_cme_errors":[513]}
//	{"id":"c2","type":"config","properties":{"provisioning/interval-sec":"3600"}}
//	{"id":"c3","type":"finished"}
//	{"id":"c1","type":"error","cme_error":514,"message":""}
//	{"id":"c1","type":"at_response","message":"OK"}
//	{"id":"c2","type":"config_ack"}
//	{"id":"c3","type":"finished_ack"}
//
// encoding/json cannot keep map order, so objects are written and read by hand.

// MarshalJSON writes the command in the JSON form. "ignore_cme_errors" is always an array.
func (c Command) MarshalJSON() ([]byte, error) { return c.appendJSON(nil) }

func (c Command) appendJSON(b []byte) ([]byte, error) {
	b = appendJSONString(append(b, `{"id":`...), c.ID)
	b = appendJSONString(append(b, `,"type":`...), c.Kind.String())
	switch c.Kind {
	case KindAT:
		b = appendJSONString(append(b, `,"command":`...), c.SetCommand)
		b = appendJSONString(append(b, `,"parameters":`...), c.Parameters)
		b = append(b, `,"ignore_cme_errors":[`...)
		for i, v := range c.IgnoreCMEErrors {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, v, 10)
		}
		b = append(b, ']')
	case KindConfig:
		b = append(b, `,"properties":{`...)
		for i, p := range c.Properties {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(append(appendJSONString(b, p.Key), ':'), p.Value)
		}
		b = append(b, '}')
	case KindFinished:
	default:
		return nil, invalid("unknown command type %d", uint64(c.Kind))
	}
	return append(b, '}'), nil
}

// MarshalJSON writes the response in the JSON form.
func (r Response) MarshalJSON() ([]byte, error) { return r.appendJSON(nil) }

func (r Response) appendJSON(b []byte) ([]byte, error) {
	b = appendJSONString(append(b, `{"id":`...), r.ID)
	b = appendJSONString(append(b, `,"type":`...), r.Kind.String())
	switch r.Kind {
	case KindError:
		b = strconv.AppendUint(append(b, `,"cme_error":`...), r.CMEError, 10)
		b = appendJSONString(append(b, `,"message":`...), r.Message)
	case KindATResponse:
		b = appendJSONString(append(b, `,"message":`...), r.Message)
	case KindConfigAck, KindFinishedAck:
	default:
		return nil, invalid("unknown response type %d", uint64(r.Kind))
	}
	return append(b, '}'), nil
}

// UnmarshalJSON reads one command in the JSON form. Unknown, duplicate, missing or misplaced
// fields are refused; "ignore_cme_errors" may be left out. null leaves c unchanged, as
// encoding/json does for its own types.
func (c *Command) UnmarshalJSON(data []byte) error { return unmarshalJSONObject(data, c, nil) }

// UnmarshalJSON reads one response in the JSON form, with the rules of Command.UnmarshalJSON.
func (r *Response) UnmarshalJSON(data []byte) error { return unmarshalJSONObject(data, nil, r) }

// unmarshalJSONObject reads one object into whichever of c and r is not nil and refuses an
// object of the other kind.
func unmarshalJSONObject(data []byte, c *Command, r *Response) error {
	if isJSONNull(data) {
		return nil
	}
	dec := newJSONDecoder(data)
	o, err := readJSONObject(dec)
	if err != nil {
		return err
	}
	if err := jsonEOF(dec); err != nil {
		return err
	}
	cmd, resp, isCmd, err := o.build()
	switch {
	case err != nil:
		return err
	case c != nil && !isCmd:
		return invalid("%q is a response type, want a command", resp.Kind)
	case r != nil && isCmd:
		return invalid("%q is a command type, want a response", cmd.Kind)
	case c != nil:
		*c = cmd
	default:
		*r = resp
	}
	return nil
}

func isJSONNull(data []byte) bool {
	return string(bytes.TrimSpace(data)) == "null"
}

// Batch is the payload of one fetch or upload: commands or responses, never both.
type Batch struct {
	Commands  []Command
	Responses []Response
	// Trailing counts the bytes after a decoded command batch, which the decoder ignored as
	// the device does. Encoders ignore it.
	Trailing int
}

// DecodeBatch decodes a CBOR batch of commands (as the device does, with
// DecodeCommandsPrefix) or responses (tolerantly, with DecodeResponses), telling them apart by
// the type number of the first element: 99 and up means responses. A batch mixing both is
// malformed. limit is the element limit (<= 0: DefaultMaxCommands).
func DecodeBatch(data []byte, limit int) (Batch, error) {
	if isResponseBatch(data) {
		rs, err := DecodeResponses(data, limit)
		return Batch{Responses: rs}, err
	}
	cmds, n, err := DecodeCommandsPrefix(data, limit)
	if err != nil {
		return Batch{}, err
	}
	return Batch{Commands: cmds, Trailing: len(data) - n}, nil
}

// NotUTF8 lists the text fields of the batch that are not valid UTF-8, one entry each such
// as `element 0 parameters: "1,\x9b"`, with the exact bytes Go-quoted. The JSON form shows
// their invalid bytes as U+FFFD (JSON text cannot carry them), so a tool printing it should
// print these too.
func (b Batch) NotUTF8() []string {
	var out []string
	add := func(i int, field, v string) {
		if !utf8.ValidString(v) {
			out = append(out, fmt.Sprintf("element %d %s: %s", i, field, strconv.Quote(v)))
		}
	}
	for i, c := range b.Commands {
		add(i, "id", c.ID)
		add(i, "command", c.SetCommand)
		add(i, "parameters", c.Parameters)
		for _, p := range c.Properties {
			add(i, "property key", p.Key)
			add(i, "property value", p.Value)
		}
	}
	for i, r := range b.Responses {
		add(i, "id", r.ID)
		add(i, "message", r.Message)
	}
	return out
}

// isResponseBatch peeks at the first element's type number. When the bytes are too broken to
// tell, it says commands, whose decoder then gives the precise reason.
func isResponseBatch(data []byte) bool {
	top, err := readHead(data)
	if err != nil || top.major != majorArray {
		return false
	}
	data = data[top.size:]
	elem, err := readHead(data)
	if err != nil || elem.major != majorArray {
		return false
	}
	var id cbor.RawMessage // skipped; a response id may be an indefinite-length string
	data, err = responseDecMode.UnmarshalFirst(data[elem.size:], &id)
	if err != nil {
		return false
	}
	typ, err := readHead(data)
	return err == nil && typ.major == majorUint && typ.arg >= uint64(KindError)
}

// EncodeBatch encodes exactly one of b.Commands and b.Responses (ErrInvalid otherwise) with
// EncodeCommands or EncodeResponses.
func EncodeBatch(b Batch) ([]byte, error) {
	switch {
	case len(b.Commands) > 0 && len(b.Responses) > 0:
		return nil, fmt.Errorf("proto: encode batch: %w", invalid("batch mixes commands and responses"))
	case len(b.Responses) > 0:
		return EncodeResponses(b.Responses)
	}
	return EncodeCommands(b.Commands)
}

// MarshalJSON writes the batch as a compact JSON array.
func (b Batch) MarshalJSON() ([]byte, error) { return b.appendJSON(nil, "") }

// appendJSON writes the array with one element per line after sep (compact when sep is "").
func (b Batch) appendJSON(out []byte, sep string) ([]byte, error) {
	if len(b.Commands) > 0 && len(b.Responses) > 0 {
		return nil, invalid("batch mixes commands and responses")
	}
	out, err := appendJSONElems(append(out, '['), b.Commands, sep)
	if err == nil {
		out, err = appendJSONElems(out, b.Responses, sep)
	}
	if err != nil {
		return nil, err
	}
	if sep != "" && len(b.Commands)+len(b.Responses) > 0 {
		out = append(out, '\n')
	}
	return append(out, ']'), nil
}

// appendJSONElems appends the elements of one kind, each after appendSep.
func appendJSONElems[E interface{ appendJSON([]byte) ([]byte, error) }](out []byte, elems []E, sep string) ([]byte, error) {
	var err error
	for i, e := range elems {
		if out, err = e.appendJSON(appendSep(out, i, sep)); err != nil {
			return nil, fmt.Errorf("element %d: %w", i, err)
		}
	}
	return out, nil
}

func appendSep(out []byte, i int, sep string) []byte {
	if i > 0 {
		out = append(out, ',')
	}
	if sep != "" {
		out = append(append(out, '\n'), sep...)
	}
	return out
}

// UnmarshalJSON reads a JSON array of commands or of responses; mixing them is refused. The
// objects follow the rules of Command.UnmarshalJSON; null leaves b unchanged.
func (b *Batch) UnmarshalJSON(data []byte) error {
	if isJSONNull(data) {
		return nil
	}
	dec := newJSONDecoder(data)
	if err := jsonDelim(dec, '['); err != nil {
		return err
	}
	var out Batch
	for i := 0; dec.More(); i++ {
		o, err := readJSONObject(dec)
		if err != nil {
			return fmt.Errorf("element %d: %w", i, err)
		}
		cmd, resp, isCmd, err := o.build()
		if err != nil {
			return fmt.Errorf("element %d: %w", i, err)
		}
		if isCmd {
			out.Commands = append(out.Commands, cmd)
		} else {
			out.Responses = append(out.Responses, resp)
		}
		if len(out.Commands) > 0 && len(out.Responses) > 0 {
			return fmt.Errorf("element %d: %w", i, invalid("batch mixes commands and responses"))
		}
	}
	if err := jsonDelim(dec, ']'); err != nil {
		return err
	}
	if err := jsonEOF(dec); err != nil {
		return err
	}
	*b = out
	return nil
}

// DecodeBatchJSON decodes a CBOR batch with DecodeBatch and returns it in the form of
// Batch.LinesJSON. Bytes after a command batch are ignored (Batch.Trailing says how many).
func DecodeBatchJSON(data []byte, limit int) ([]byte, error) {
	b, err := DecodeBatch(data, limit)
	if err != nil {
		return nil, err
	}
	return b.LinesJSON()
}

// LinesJSON returns the batch as a JSON array with one object per line, the form
// `provisiond decode` prints. Text is escaped for JSON; bytes that are not UTF-8 show as
// U+FFFD (see NotUTF8).
func (b Batch) LinesJSON() ([]byte, error) {
	out, err := b.appendJSON(nil, "  ")
	if err != nil {
		return nil, fmt.Errorf("proto: decode batch: %w", err)
	}
	return out, nil
}

// EncodeBatchJSON is the inverse of DecodeBatchJSON: it reads a JSON array of commands or of
// responses and encodes it canonically, so EncodeBatchJSON(DecodeBatchJSON(x)) == x for every
// canonical batch x of valid UTF-8 text without trailing bytes, and the canonical form of x
// for any other batch of valid UTF-8 text. The transcoding is faithful rather than
// validating: receive limits, id rules and duplicate config keys are left for the decoder to
// refuse, so test payloads can be built.
func EncodeBatchJSON(js []byte) ([]byte, error) {
	var b Batch
	if err := b.UnmarshalJSON(js); err != nil {
		return nil, fmt.Errorf("proto: parse json: %w", err)
	}
	return EncodeBatch(b)
}

// jsonObject collects the fields of one object before its type decides what they mean.
type jsonObject struct {
	seen       uint
	id, typ    string
	command    string
	parameters string
	message    string
	cmeError   uint64
	ignore     []uint64
	props      []Property
}

// JSON field names, one bit each in jsonObject.seen.
const (
	fID uint = 1 << iota
	fType
	fCommand
	fParameters
	fIgnore
	fProperties
	fCMEError
	fMessage
)

var jsonFieldNames = [...]struct {
	bit  uint
	name string
}{
	{fID, "id"}, {fType, "type"}, {fCommand, "command"}, {fParameters, "parameters"},
	{fIgnore, "ignore_cme_errors"}, {fProperties, "properties"}, {fCMEError, "cme_error"},
	{fMessage, "message"},
}

func fieldBit(name string) uint {
	for _, f := range jsonFieldNames {
		if f.name == name {
			return f.bit
		}
	}
	return 0
}

func newJSONDecoder(data []byte) *json.Decoder {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return dec
}

func readJSONObject(dec *json.Decoder) (jsonObject, error) {
	var o jsonObject
	texts := map[uint]*string{fID: &o.id, fType: &o.typ, fCommand: &o.command, fParameters: &o.parameters, fMessage: &o.message}
	if err := jsonDelim(dec, '{'); err != nil {
		return o, err
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return o, jsonErr(err)
		}
		name, _ := tok.(string) // object keys are always strings
		bit := fieldBit(name)
		switch {
		case bit == 0:
			return o, invalid("unknown field %q", name)
		case o.seen&bit != 0:
			return o, invalid("duplicate field %q", name)
		}
		o.seen |= bit
		switch bit {
		case fID, fType, fCommand, fParameters, fMessage:
			*texts[bit], err = jsonString(dec, name)
		case fCMEError:
			o.cmeError, err = jsonUint(dec, name)
		case fIgnore:
			o.ignore, err = jsonUints(dec, name)
		case fProperties:
			o.props, err = jsonProperties(dec)
		}
		if err != nil {
			return o, err
		}
	}
	return o, jsonDelim(dec, '}')
}

// build turns the fields into a command (isCmd) or a response, checking that exactly the
// fields of its type are present ("ignore_cme_errors" may be left out).
func (o jsonObject) build() (c Command, r Response, isCmd bool, err error) {
	if o.seen&fType == 0 {
		return c, r, false, invalid(`missing field "type"`)
	}
	var need, allow uint
	switch o.typ {
	case "at":
		c = Command{ID: o.id, Kind: KindAT, SetCommand: o.command, Parameters: o.parameters,
			IgnoreCMEErrors: o.ignore}
		need, allow, isCmd = fCommand|fParameters, fIgnore, true
	case "config":
		c = Command{ID: o.id, Kind: KindConfig, Properties: o.props}
		need, isCmd = fProperties, true
	case "finished":
		c = Command{ID: o.id, Kind: KindFinished}
		isCmd = true
	case "error":
		r = Response{ID: o.id, Kind: KindError, CMEError: o.cmeError, Message: o.message}
		need = fCMEError | fMessage
	case "at_response":
		r = Response{ID: o.id, Kind: KindATResponse, Message: o.message}
		need = fMessage
	case "config_ack":
		r = Response{ID: o.id, Kind: KindConfigAck}
	case "finished_ack":
		r = Response{ID: o.id, Kind: KindFinishedAck}
	default:
		return c, r, false, invalid("unknown type %q", o.typ)
	}
	need |= fID | fType
	for _, f := range jsonFieldNames {
		switch {
		case need&f.bit != 0 && o.seen&f.bit == 0:
			return c, r, false, invalid("%s: missing field %q", o.typ, f.name)
		case (need|allow)&f.bit == 0 && o.seen&f.bit != 0:
			return c, r, false, invalid("%s: field %q does not belong here", o.typ, f.name)
		}
	}
	return c, r, isCmd, nil
}

func jsonDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return jsonErr(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return invalid("got %v, want %q", tokenName(tok), string(want))
	}
	return nil
}

func jsonString(dec *json.Decoder, field string) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", jsonErr(err)
	}
	s, ok := tok.(string)
	if !ok {
		return "", invalid("%q: got %v, want a string", field, tokenName(tok))
	}
	return s, nil
}

func jsonUint(dec *json.Decoder, field string) (uint64, error) {
	tok, err := dec.Token()
	if err != nil {
		return 0, jsonErr(err)
	}
	n, ok := tok.(json.Number)
	if !ok {
		return 0, invalid("%q: got %v, want an unsigned integer", field, tokenName(tok))
	}
	v, err := strconv.ParseUint(string(n), 10, 64)
	if err != nil {
		return 0, invalid("%q: %s is not an unsigned 64-bit integer", field, n)
	}
	return v, nil
}

func jsonUints(dec *json.Decoder, field string) ([]uint64, error) {
	if err := jsonDelim(dec, '['); err != nil {
		return nil, fmt.Errorf("%q: %w", field, err)
	}
	var vs []uint64
	for dec.More() {
		v, err := jsonUint(dec, field)
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	return vs, jsonDelim(dec, ']')
}

func jsonProperties(dec *json.Decoder) ([]Property, error) {
	if err := jsonDelim(dec, '{'); err != nil {
		return nil, fmt.Errorf(`"properties": %w`, err)
	}
	var ps []Property
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, jsonErr(err)
		}
		key, _ := tok.(string)
		val, err := jsonString(dec, key)
		if err != nil {
			return nil, fmt.Errorf(`"properties": %w`, err)
		}
		ps = append(ps, Property{Key: key, Value: val})
	}
	return ps, jsonDelim(dec, '}')
}

func jsonEOF(dec *json.Decoder) error {
	if _, err := dec.Token(); err != io.EOF {
		if err != nil {
			return jsonErr(err)
		}
		return invalid("trailing data after the JSON value")
	}
	return nil
}

// jsonErr marks a syntax error of the JSON text as ErrInvalid, keeping the original.
func jsonErr(err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %w", ErrInvalid, err)
}

func tokenName(tok json.Token) string {
	switch t := tok.(type) {
	case json.Delim:
		return strconv.Quote(string(t))
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", tok)
}

// appendJSONString appends s as a JSON string. Unlike encoding/json it leaves <, > and &
// alone, so modem text stays readable; bytes that are not UTF-8 become U+FFFD as there.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029': // valid JSON, but they break JavaScript string literals
			b = append(b, `\u202`...)
			b = append(b, hexDigits[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
