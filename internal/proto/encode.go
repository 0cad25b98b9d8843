package proto

import (
	"fmt"
	"unicode/utf8"
)

// Wire shapes for the encoder: each is one flat CBOR array, fields in protocol order.
type (
	atWire struct {
		_               struct{} `cbor:",toarray"`
		ID              string
		Kind            uint64
		SetCommand      string
		Parameters      string
		IgnoreCMEErrors []uint64
	}
	configWire struct {
		_          struct{} `cbor:",toarray"`
		ID         string
		Kind       uint64
		Properties propertyMap
	}
	// bareWire is a finished command or an ack: [id, type].
	bareWire struct {
		_    struct{} `cbor:",toarray"`
		ID   string
		Kind uint64
	}
	errorWire struct {
		_        struct{} `cbor:",toarray"`
		ID       string
		Kind     uint64
		CMEError uint64
		Message  string
	}
	messageWire struct {
		_       struct{} `cbor:",toarray"`
		ID      string
		Kind    uint64
		Message string
	}
)

// propertyMap encodes config pairs as a CBOR map in slice order. A Go map would lose the
// order, and with it encode(decode(x)) == x.
type propertyMap []Property

// MarshalCBOR implements cbor.Marshaler.
func (m propertyMap) MarshalCBOR() ([]byte, error) {
	size := 9
	for _, p := range m {
		size += len(p.Key) + len(p.Value) + 18
	}
	b := appendHead(make([]byte, 0, size), majorMap, uint64(len(m)))
	for _, p := range m {
		b = appendText(appendText(b, p.Key), p.Value)
	}
	return b, nil
}

// EncodeCommands encodes a command batch canonically (definite lengths, minimal heads, config
// pairs in slice order), as the service sends it. It refuses an empty batch and unknown kinds
// (ErrInvalid). Text goes out byte for byte, valid UTF-8 or not, as DecodeCommands passes it
// through, so every batch it decodes encodes again. Receive limits and the host's id rules
// are not applied, so tests and fault injection can build batches DecodeCommands refuses.
func EncodeCommands(cmds []Command) ([]byte, error) {
	if len(cmds) == 0 {
		return nil, fmt.Errorf("proto: encode commands: %w", invalid("empty batch"))
	}
	items := make([]any, len(cmds))
	for i, c := range cmds {
		item, err := commandWire(c)
		if err != nil {
			return nil, fmt.Errorf("proto: encode commands: element %d: %w", i, err)
		}
		items[i] = item
	}
	b, err := encMode.Marshal(items)
	if err != nil {
		return nil, fmt.Errorf("proto: encode commands: %w", err)
	}
	return b, nil
}

func commandWire(c Command) (any, error) {
	switch c.Kind {
	case KindAT:
		return atWire{ID: c.ID, Kind: uint64(c.Kind), SetCommand: c.SetCommand,
			Parameters: c.Parameters, IgnoreCMEErrors: c.IgnoreCMEErrors}, nil
	case KindConfig:
		return configWire{ID: c.ID, Kind: uint64(c.Kind), Properties: c.Properties}, nil
	case KindFinished:
		return bareWire{ID: c.ID, Kind: uint64(c.Kind)}, nil
	}
	return nil, invalid("unknown command type %d", uint64(c.Kind))
}

// EncodeResponses encodes a response batch byte for byte as the device does with
// ZCBOR_CANONICAL (docs/vectors.md): definite lengths, minimal heads, no NUL terminators. It refuses
// an empty batch, unknown kinds and text that is not UTF-8 (ErrInvalid); a caller holding raw
// modem output should pass it through strings.ToValidUTF8 first.
func EncodeResponses(rs []Response) ([]byte, error) {
	if len(rs) == 0 {
		return nil, fmt.Errorf("proto: encode responses: %w", invalid("empty batch"))
	}
	items := make([]any, len(rs))
	for i, r := range rs {
		item, err := responseWire(r)
		if err != nil {
			return nil, fmt.Errorf("proto: encode responses: element %d: %w", i, err)
		}
		items[i] = item
	}
	b, err := encMode.Marshal(items)
	if err != nil {
		return nil, fmt.Errorf("proto: encode responses: %w", err)
	}
	return b, nil
}

func responseWire(r Response) (any, error) {
	if err := checkText("correlation id", r.ID); err != nil {
		return nil, err
	}
	switch r.Kind {
	case KindError:
		if err := checkText("message", r.Message); err != nil {
			return nil, err
		}
		return errorWire{ID: r.ID, Kind: uint64(r.Kind), CMEError: r.CMEError, Message: r.Message}, nil
	case KindATResponse:
		if err := checkText("message", r.Message); err != nil {
			return nil, err
		}
		return messageWire{ID: r.ID, Kind: uint64(r.Kind), Message: r.Message}, nil
	case KindConfigAck, KindFinishedAck:
		return bareWire{ID: r.ID, Kind: uint64(r.Kind)}, nil
	}
	return nil, invalid("unknown response type %d", uint64(r.Kind))
}

func checkText(what, s string) error {
	if !utf8.ValidString(s) {
		return invalid("%s is not valid UTF-8", what)
	}
	return nil
}
