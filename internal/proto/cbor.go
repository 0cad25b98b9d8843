package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/fxamacker/cbor/v2"
)

// CBOR major types (RFC 8949 §3.1).
const (
	majorUint  = 0
	majorNeg   = 1
	majorBytes = 2
	majorText  = 3
	majorArray = 4
	majorMap   = 5
	majorTag   = 6
	majorOther = 7 // simple values, floats, break
)

const breakByte = 0xff

// The fxamacker modes are immutable once built, so sharing them is not shared mutable state.
var (
	// commandDecMode re-checks every accepted command batch. The hand-written scanner in
	// decode.go is what enforces the zcbor rules (fxamacker's limit errors cannot tell which
	// array was too long); this second, independent pass with the tightest limits fxamacker
	// allows keeps a scanner bug from letting through input a conforming CBOR decoder would
	// refuse. It is only used with Wellformed (no allocation), which applies the limits
	// below but not the duplicate-key rule; the scanner checks that itself.
	commandDecMode = mustDecMode(cbor.DecOptions{
		MaxNestedLevels:  4, // batch → command → map or ignore array; 4 is fxamacker's minimum
		MaxArrayElements: MaxCommandsCeiling,
		MaxMapPairs:      16, // fxamacker's minimum; MaxProperties is enforced by the scanner
		IndefLength:      cbor.IndefLengthAllowed,
		TagsMd:           cbor.TagsForbidden,
	})
	// responseDecMode decodes one response element at a time (the top-level array is walked
	// by hand so the count limit applies before anything is allocated). Indefinite lengths
	// are allowed: a device built without ZCBOR_CANONICAL sends them (docs/protocol.md §3.3).
	responseDecMode = mustDecMode(cbor.DecOptions{
		DupMapKey:          cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:    4,
		MaxArrayElements:   16, // a response has at most 4; fxamacker's minimum is 16
		MaxMapPairs:        16,
		IndefLength:        cbor.IndefLengthAllowed,
		TagsMd:             cbor.TagsForbidden,
		UTF8:               cbor.UTF8RejectInvalid,
		ByteStringToString: cbor.ByteStringToStringForbidden,
		IntDec:             cbor.IntDecConvertNone,
	})
	// encMode writes what zcbor writes with ZCBOR_CANONICAL: definite lengths and minimal
	// heads (fxamacker always picks the shortest integer head). Nil slices must become empty
	// arrays, not null: an AT command without ignore codes still carries [].
	encMode = mustEncMode(cbor.EncOptions{
		Sort:          cbor.SortNone, // config pairs keep their wire order; no Go maps are encoded
		IndefLength:   cbor.IndefLengthForbidden,
		NilContainers: cbor.NilContainerAsEmpty,
		TagsMd:        cbor.TagsForbidden,
		String:        cbor.StringToTextString,
	})
)

func mustDecMode(o cbor.DecOptions) cbor.DecMode {
	m, err := o.DecMode()
	if err != nil {
		panic("proto: bad cbor decode options: " + err.Error()) // a programming error, caught by every test
	}
	return m
}

func mustEncMode(o cbor.EncOptions) cbor.EncMode {
	m, err := o.EncMode()
	if err != nil {
		panic("proto: bad cbor encode options: " + err.Error())
	}
	return m
}

// head is one decoded CBOR initial byte plus its argument.
type head struct {
	major   byte
	arg     uint64 // value, length or count; the raw bits for floats
	indef   bool   // additional information 31: indefinite length (or break for major 7)
	minimal bool   // the argument uses the shortest encoding
	size    int    // bytes the head occupies
}

// readHead decodes the head at the start of b. It refuses reserved additional information and
// indefinite lengths on types that cannot have them; minimality is reported, not enforced
// (zcbor accepts longer heads than needed).
// Its errors are bare reasons; callers wrap them with ErrMalformed and the field's name.
func readHead(b []byte) (head, error) {
	if len(b) == 0 {
		return head{}, errors.New("unexpected end of data")
	}
	h := head{major: b[0] >> 5, minimal: true, size: 1}
	ai := b[0] & 0x1f
	switch {
	case ai < 24:
		h.arg = uint64(ai)
	case ai <= 27:
		n := 1 << (ai - 24) // 1, 2, 4 or 8 bytes
		if len(b) < 1+n {
			return head{}, errors.New("unexpected end of data")
		}
		switch n {
		case 1:
			h.arg = uint64(b[1])
		case 2:
			h.arg = uint64(binary.BigEndian.Uint16(b[1:]))
		case 4:
			h.arg = uint64(binary.BigEndian.Uint32(b[1:]))
		default:
			h.arg = binary.BigEndian.Uint64(b[1:])
		}
		h.size = 1 + n
		if h.major != majorOther { // floats have no "shorter" form to compare with
			var floor uint64 = 24
			switch n {
			case 2:
				floor = math.MaxUint8 + 1
			case 4:
				floor = math.MaxUint16 + 1
			case 8:
				floor = math.MaxUint32 + 1
			}
			h.minimal = h.arg >= floor
		}
	case ai == 31:
		switch h.major {
		case majorBytes, majorText, majorArray, majorMap, majorOther:
			h.indef = true
		default:
			return head{}, fmt.Errorf("indefinite length on %s", majorName(h.major))
		}
	default:
		return head{}, fmt.Errorf("reserved additional information %d", ai)
	}
	return h, nil
}

// appendHead appends the shortest head for major type m and argument v.
func appendHead(b []byte, m byte, v uint64) []byte {
	m <<= 5
	switch {
	case v < 24:
		return append(b, m|byte(v))
	case v <= math.MaxUint8:
		return append(b, m|24, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, m|25), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, m|26), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, m|27), v)
}

// appendText appends s as a definite-length text string.
func appendText(b []byte, s string) []byte {
	return append(appendHead(b, majorText, uint64(len(s))), s...)
}

func majorName(m byte) string {
	switch m {
	case majorUint:
		return "unsigned integer"
	case majorNeg:
		return "negative integer"
	case majorBytes:
		return "byte string"
	case majorText:
		return "text string"
	case majorArray:
		return "array"
	case majorMap:
		return "map"
	case majorTag:
		return "tag"
	}
	return "simple value or float"
}

// scanner walks a command batch accepting what the device's zcbor decoder accepts: definite
// or indefinite lengths and heads of any size. It never allocates except for what it returns,
// and checks every declared length against the bytes left before using it, so hostile lengths
// and counts cost nothing.
type scanner struct {
	b   []byte
	off int
}

func (s *scanner) rest() int { return len(s.b) - s.off }

// expect reads one head of the given major type; what names the field for errors. Indefinite
// lengths come back with h.indef set (only arrays, maps and strings can have them).
func (s *scanner) expect(major byte, what string) (head, error) {
	h, err := readHead(s.b[s.off:])
	switch {
	case err != nil:
		return head{}, malformed("%s: %v", what, err)
	case h.indef && h.major == majorOther:
		return head{}, malformed("%s: unexpected break", what)
	case h.major != major:
		return head{}, malformed("%s: got %s, want %s", what, majorName(h.major), majorName(major))
	}
	s.off += h.size
	return h, nil
}

func (s *scanner) uint(what string) (uint64, error) {
	h, err := s.expect(majorUint, what)
	return h.arg, err
}

// list is the progress through an array or map: n elements (pairs for a map) declared, or an
// indefinite length that ends at a break.
type list struct {
	indef bool
	n     uint64 // declared count; for an indefinite list, the count once the break was read
	read  uint64 // elements (pairs) started so far
	done  bool
}

// list reads the head of an array or a map.
func (s *scanner) list(major byte, what string) (list, error) {
	h, err := s.expect(major, what)
	if err != nil {
		return list{}, err
	}
	return list{indef: h.indef, n: h.arg}, nil
}

// next reports whether l has another element (for a map: another pair) and counts it. At the
// end of an indefinite list it consumes the break.
func (s *scanner) next(l *list, what string) (bool, error) {
	if l.done {
		return false, nil
	}
	if !l.indef {
		if l.read == l.n {
			l.done = true
			return false, nil
		}
		l.read++
		return true, nil
	}
	if s.rest() == 0 {
		return false, malformed("%s: unexpected end of data: no break after an indefinite-length list", what)
	}
	if s.b[s.off] == breakByte {
		s.off++
		l.done, l.n = true, l.read
		return false, nil
	}
	l.read++
	return true, nil
}

// text reads a text string of at most limit bytes (no limit when negative), definite or as
// the definite-length chunks of an indefinite one. The bytes are returned as they are: zcbor
// does not check UTF-8, and AT strings must reach the modem unchanged.
func (s *scanner) text(what string, limit int) (string, error) {
	h, err := s.expect(majorText, what)
	if err != nil {
		return "", err
	}
	if !h.indef {
		raw, err := s.chunk(what, h.arg, 0, limit)
		return string(raw), err
	}
	var buf []byte
	for {
		if s.rest() == 0 {
			return "", malformed("%s: unexpected end of data: indefinite-length text string has no break", what)
		}
		if s.b[s.off] == breakByte {
			s.off++
			return string(buf), nil
		}
		c, err := readHead(s.b[s.off:])
		switch {
		case err != nil:
			return "", malformed("%s: %v", what, err)
		case c.major != majorText || c.indef:
			return "", malformed("%s: a chunk of an indefinite-length text string must be a definite-length text string", what)
		}
		s.off += c.size
		raw, err := s.chunk(what, c.arg, len(buf), limit)
		if err != nil {
			return "", err
		}
		buf = append(buf, raw...)
	}
}

// chunk takes n bytes of string content after have bytes already read, within limit.
func (s *scanner) chunk(what string, n uint64, have, limit int) ([]byte, error) {
	if n > uint64(s.rest()) {
		return nil, malformed("%s: length %d runs past the end of the data", what, n)
	}
	if limit >= 0 && uint64(have)+n > uint64(limit) {
		return nil, malformed("%s: %d bytes, limit %d", what, uint64(have)+n, limit)
	}
	raw := s.b[s.off : s.off+int(n)]
	s.off += int(n)
	return raw, nil
}

// clampMax turns a caller's element limit into the one used: <= 0 means the default.
func clampMax(n int) int {
	if n <= 0 {
		return DefaultMaxCommands
	}
	return min(n, MaxCommandsCeiling)
}

// countInt converts a declared count for error reports.
func countInt(v uint64) int {
	if v > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(v)
}
