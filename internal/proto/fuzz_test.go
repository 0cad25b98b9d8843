package proto

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// seed adds every golden vector, every acceptance vector and every refusal vector to the
// corpus.
func seed(f *testing.F) {
	f.Helper()
	for _, v := range loadVectors(f) {
		f.Add(v.data)
	}
	for _, a := range commandAcceptances() {
		f.Add(mustHex(f, a.hex))
	}
	for _, tc := range append(commandRefusals(f), responseRefusals(f)...) {
		if tc.data != nil {
			f.Add(tc.data)
		} else {
			f.Add(mustHex(f, tc.hex))
		}
	}
}

// checkClass fails unless err is exactly one of malformed / too many.
func checkClass(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, ErrMalformed) == errors.Is(err, ErrTooMany) {
		t.Fatalf("err %v: Is(ErrMalformed)=%v Is(ErrTooMany)=%v, want exactly one",
			err, errors.Is(err, ErrMalformed), errors.Is(err, ErrTooMany))
	}
}

// FuzzDecodeCommands: no panic, every refusal is classified; whatever decodes re-encodes to a
// canonical batch that decodes to the same commands, to the identical bytes when the input
// was canonical; bytes after the batch change nothing; and, when all text is UTF-8, JSON
// carries the batch to the same canonical bytes.
func FuzzDecodeCommands(f *testing.F) {
	seed(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		cmds, n, err := DecodeCommandsPrefix(data, DefaultMaxCommands)
		if err != nil {
			if cmds != nil {
				t.Fatalf("commands returned with error %v", err)
			}
			checkClass(t, err)
			return
		}
		if n <= 0 || n > len(data) {
			t.Fatalf("batch of %d bytes in %d", n, len(data))
		}
		if again, err := DecodeCommands(data[:n], DefaultMaxCommands); err != nil || !reflect.DeepEqual(again, cmds) {
			t.Fatalf("the batch without its trailing bytes decodes to %+v, %v; want %+v", again, err, cmds)
		}
		enc, err := EncodeCommands(cmds)
		if err != nil {
			t.Fatalf("EncodeCommands(%+v): %v", cmds, err)
		}
		back, m, err := DecodeCommandsPrefix(enc, DefaultMaxCommands)
		if err != nil || m != len(enc) || !reflect.DeepEqual(back, cmds) {
			t.Fatalf("decode(encode(decode(x))) = %+v (%d of %d bytes), %v; want %+v", back, m, len(enc), err, cmds)
		}
		if c, ok := canonicalItem(data[:n]); ok && c == n && !bytes.Equal(enc, data[:n]) {
			t.Fatalf("canonical input re-encoded differently\n   x %x\n got %x", data[:n], enc)
		}
		b := Batch{Commands: cmds}
		if len(b.NotUTF8()) > 0 {
			return // JSON cannot carry those bytes; NotUTF8 is what shows them
		}
		js, err := DecodeBatchJSON(data, DefaultMaxCommands)
		if err != nil {
			t.Fatalf("DecodeBatchJSON: %v", err)
		}
		if again, err := EncodeBatchJSON(js); err != nil || !bytes.Equal(again, enc) {
			t.Fatalf("JSON round trip of %x via %s: %x, %v; want %x", data, js, again, err, enc)
		}
	})
}

// FuzzDecodeResponses: no panic, every refusal is classified, decode(encode(decode(x))) equals
// decode(x), and canonical input re-encodes to the identical bytes.
func FuzzDecodeResponses(f *testing.F) {
	seed(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := DecodeResponses(data, DefaultMaxCommands)
		if err != nil {
			if rs != nil {
				t.Fatalf("responses returned with error %v", err)
			}
			checkClass(t, err)
			return
		}
		enc, err := EncodeResponses(rs)
		if err != nil {
			t.Fatalf("EncodeResponses(%+v): %v", rs, err)
		}
		again, err := DecodeResponses(enc, DefaultMaxCommands)
		if err != nil || !reflect.DeepEqual(again, rs) {
			t.Fatalf("decode(encode(%+v)) = %+v, %v", rs, again, err)
		}
		if n, ok := canonicalItem(data); ok && n == len(data) && !bytes.Equal(enc, data) {
			t.Fatalf("canonical input re-encoded differently\n   x %x\n got %x", data, enc)
		}
	})
}

// FuzzBatchJSON: the JSON parser never panics, and whatever it encodes and the decoders accept
// survives CBOR → JSON → CBOR unchanged.
func FuzzBatchJSON(f *testing.F) {
	for _, v := range loadVectors(f) {
		js, err := DecodeBatchJSON(v.data, DefaultMaxCommands)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(js)
	}
	f.Add([]byte(`[{"id":"a","type":"at","command":"%X","parameters":"","ignore_cme_errors":[]}]`))
	f.Add([]byte(`[{"id":"b","type":"config","properties":{"k":"v","k":"w"}}]`))
	f.Fuzz(func(t *testing.T, js []byte) {
		enc, err := EncodeBatchJSON(js)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err %v does not wrap ErrInvalid", err)
			}
			return
		}
		out, err := DecodeBatchJSON(enc, MaxCommandsCeiling)
		if err != nil {
			checkClass(t, err) // encoders do not apply receive limits
			return
		}
		again, err := EncodeBatchJSON(out)
		if err != nil || !bytes.Equal(again, enc) {
			t.Fatalf("JSON round trip of %x via %s: %x, %v", enc, out, again, err)
		}
	})
}

// canonicalItem reports whether b starts with one data item using only definite lengths and
// minimal heads (the zcbor canonical form), and how many bytes it takes. Test-only: it recurses
// as deep as the input, so call it only on input a depth-limited decoder accepted.
func canonicalItem(b []byte) (int, bool) {
	h, err := readHead(b)
	if err != nil || h.indef || !h.minimal {
		return 0, false
	}
	n := h.size
	items := uint64(0)
	switch h.major {
	case majorBytes, majorText:
		if h.arg > uint64(len(b)-n) {
			return 0, false
		}
		return n + int(h.arg), true
	case majorArray:
		items = h.arg
	case majorMap:
		items = 2 * h.arg
	case majorTag:
		items = 1
	}
	for range items {
		m, ok := canonicalItem(b[n:])
		if !ok {
			return 0, false
		}
		n += m
	}
	return n, true
}
