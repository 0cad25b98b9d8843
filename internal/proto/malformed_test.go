package proto

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// outcome classes a caller branches on.
const (
	wantMalformed = "malformed"
	wantTooMany   = "too many"
)

type refusal struct {
	name  string
	hex   string // spaces allowed
	data  []byte // used instead of hex when set
	want  string // wantMalformed or wantTooMany
	index int    // element named by a *DecodeError; -1 when the failure is batch-level
	msg   string // substring of the error text
	limit *LimitError
}

// repeat returns n copies of the hex string s.
func repeat(s string, n int) string { return strings.Repeat(s, n) }

// commandRefusals holds one malformed vector per refusal rule of DecodeCommands.
func commandRefusals(t testing.TB) []refusal {
	longID := append(mustHex(t, "81 82 78 ff"), bytes.Repeat([]byte{'a'}, 255)...)
	longID = append(longID, 0x02) // 255 bytes: accepted, see TestDecodeCommandsLongID
	tooLongID := append(mustHex(t, "81 82 79 0100"), bytes.Repeat([]byte{'a'}, 256)...)
	tooLongID = append(tooLongID, 0x02)
	_ = longID
	// 255 bytes in one chunk plus one more: each chunk is within the limit, the id is not.
	chunkedLongID := append(mustHex(t, "81 82 7f 78 ff"), bytes.Repeat([]byte{'a'}, 255)...)
	chunkedLongID = append(append(chunkedLongID, mustHex(t, "61 61 ff")...), 0x02)
	return []refusal{
		{name: "empty payload", hex: "", want: wantMalformed, index: -1, msg: "empty payload"},
		{name: "top level is a map", hex: "a0", want: wantMalformed, index: -1, msg: "batch: got map, want array"},
		{name: "top level is text", hex: "6178", want: wantMalformed, index: -1, msg: "want array"},
		{name: "empty batch", hex: "80", want: wantMalformed, index: -1, msg: "empty batch"},
		{name: "eleven commands", hex: "8b" + repeat("82617802", 11), want: wantTooMany, index: -1,
			limit: &LimitError{What: "commands", Limit: 10, Got: 11}},
		{name: "eleven commands, non-minimal count", hex: "9b 000000000000000b" + repeat("82617802", 11), want: wantTooMany, index: -1,
			limit: &LimitError{What: "commands", Limit: 10, Got: 11}},
		{name: "eleven commands, indefinite", hex: "9f" + repeat("82617802", 11) + "ff", want: wantTooMany, index: -1,
			limit: &LimitError{What: "commands", Limit: 10, Got: 11}},
		{name: "endless indefinite batch", hex: "9f" + repeat("82617802", 1000), want: wantTooMany, index: -1,
			limit: &LimitError{What: "commands", Limit: 10, Got: 11}},
		{name: "empty indefinite batch", hex: "9f ff", want: wantMalformed, index: -1, msg: "empty batch"},
		{name: "indefinite batch without break", hex: "9f 82617802", want: wantMalformed, index: -1, msg: "no break after an indefinite-length list"},
		{name: "indefinite batch cut in a command", hex: "9f 82617802 82", want: wantMalformed, index: 1, msg: "unexpected end of data"},
		{name: "indefinite command of one element", hex: "81 9f 6178 ff", want: wantMalformed, index: 0, msg: "command has 1 elements, want 2, 3 or 5"},
		{name: "indefinite command, empty", hex: "81 9f ff", want: wantMalformed, index: 0, msg: "command has 0 elements"},
		{name: "indefinite AT command of 4 elements", hex: "81 9f 6161 00 6141 60 ff", want: wantMalformed, index: 0, msg: "at command has 4 elements, want 5"},
		{name: "indefinite AT command of 6 elements", hex: "81 9f 6161 00 6141 60 80 00 ff", want: wantMalformed, index: 0, msg: "at command has more than 5 elements, want 5"},
		{name: "indefinite finished with a third element", hex: "81 9f 6178 02 00 ff", want: wantMalformed, index: 0, msg: "finished command has more than 2 elements"},
		{name: "indefinite command without break", hex: "81 9f 6178 02", want: wantMalformed, index: 0, msg: "no break"},
		{name: "seven ignore codes, indefinite", hex: "81 85 6161 00 60 60 9f 01020304050607 ff", want: wantTooMany, index: 0,
			limit: &LimitError{What: "ignore_cme_errors", Limit: 6, Got: 7}},
		{name: "seven ignore codes, non-minimal count", hex: "81 85 6161 00 60 60 9a00000007 01020304050607", want: wantTooMany, index: 0,
			limit: &LimitError{What: "ignore_cme_errors", Limit: 6, Got: 7}},
		{name: "eleven properties, indefinite", hex: "81 83 6162 01 bf" + pairsHex(11) + "ff", want: wantTooMany, index: 0,
			limit: &LimitError{What: "properties", Limit: 10, Got: 11}},
		{name: "indefinite map with a key and no value", hex: "81 83 6162 01 bf 616b ff", want: wantMalformed, index: 0, msg: "property value: unexpected break"},
		{name: "indefinite ignore code over 32 bits", hex: "81 85 6161 00 60 60 9f 1b0000000100000000 ff", want: wantMalformed, index: 0, msg: "does not fit in 32 bits"},
		{name: "break in a definite batch", hex: "82 82617802 ff", want: wantMalformed, index: 1, msg: "unexpected break"},
		{name: "huge declared count", hex: "9b ffffffffffffffff 82617802", want: wantTooMany, index: -1,
			limit: &LimitError{What: "commands", Limit: 10, Got: 1<<31 - 1}},
		{name: "count larger than data", hex: "85 82617802", want: wantMalformed, index: 1, msg: "unexpected end of data"},
		{name: "unknown command type 3", hex: "81 82 6178 03", want: wantMalformed, index: 0, msg: "unknown command type 3"},
		{name: "response in a command batch", hex: "82 82617802 84 6179 1863 00 60", want: wantMalformed, index: 1, msg: "unknown command type 99"},
		{name: "AT with 4 elements", hex: "81 84 6161 00 6141 60", want: wantMalformed, index: 0, msg: "at command has 4 elements, want 5"},
		{name: "AT with a trailing element", hex: "81 86 6161 00 6141 60 80 00", want: wantMalformed, index: 0, msg: "at command has 6 elements, want 5"},
		{name: "config with 2 elements", hex: "81 82 6162 01", want: wantMalformed, index: 0, msg: "config command has 2 elements, want 3"},
		{name: "config with a trailing element", hex: "81 84 6162 01 a0 a0", want: wantMalformed, index: 0, msg: "config command has 4 elements"},
		{name: "finished with a trailing element", hex: "81 83 6178 02 00", want: wantMalformed, index: 0, msg: "finished command has 3 elements, want 2"},
		{name: "command of one element", hex: "81 81 6178", want: wantMalformed, index: 0, msg: "command has 1 elements"},
		{name: "command is not an array", hex: "81 6178", want: wantMalformed, index: 0, msg: "command: got text string, want array"},
		{name: "id is an integer", hex: "81 82 01 02", want: wantMalformed, index: 0, msg: "correlation id: got unsigned integer, want text string"},
		{name: "id is a byte string", hex: "81 82 4178 02", want: wantMalformed, index: 0, msg: "got byte string"},
		{name: "id is not UTF-8", hex: "81 82 61ff 02", want: wantMalformed, index: 0, msg: "correlation id: not valid UTF-8"},
		{name: "id with an escape", hex: "81 82 63 1b5b41 02", want: wantMalformed, index: 0, msg: "correlation id: control character U+001B at byte 0"},
		{name: "id with a NUL", hex: "81 82 63 610062 02", want: wantMalformed, index: 0, msg: "control character U+0000 at byte 1"},
		{name: "id with a newline", hex: "81 82 62 610a 02", want: wantMalformed, index: 0, msg: "control character U+000A"},
		{name: "id with DEL", hex: "81 82 62 617f 02", want: wantMalformed, index: 0, msg: "control character U+007F"},
		{name: "id with a C1 CSI", hex: "81 82 63 61c29b 02", want: wantMalformed, index: 0, msg: "control character U+009B"},
		{name: "id with an escape in an indefinite string", hex: "81 82 7f 6161 611b ff 02", want: wantMalformed, index: 0, msg: "control character U+001B"},
		{name: "id of a raw C1 byte", hex: "81 82 62 619b 02", want: wantMalformed, index: 0, msg: "not valid UTF-8"},
		{name: "id longer than 255 bytes", data: tooLongID, want: wantMalformed, index: 0, msg: "correlation id: 256 bytes, limit 255"},
		{name: "id length past the end", hex: "81 82 7a7fffffff 02", want: wantMalformed, index: 0, msg: "runs past the end"},
		{name: "id length of 2^64-1", hex: "81 82 7bffffffffffffffff 02", want: wantMalformed, index: 0, msg: "runs past the end"},
		{name: "id over 255 bytes in chunks", data: chunkedLongID, want: wantMalformed, index: 0, msg: "correlation id: 256 bytes, limit 255"},
		{name: "indefinite id without break", hex: "81 82 7f 6161", want: wantMalformed, index: 0, msg: "indefinite-length text string has no break"},
		{name: "indefinite id with a byte-string chunk", hex: "81 82 7f 4161 ff 02", want: wantMalformed, index: 0, msg: "must be a definite-length text string"},
		{name: "indefinite id with a nested indefinite chunk", hex: "81 82 7f 7f6161ff ff 02", want: wantMalformed, index: 0, msg: "must be a definite-length text string"},
		{name: "indefinite id with an integer chunk", hex: "81 82 7f 01 ff 02", want: wantMalformed, index: 0, msg: "must be a definite-length text string"},
		{name: "indefinite chunk past the end", hex: "81 82 7f 7a7fffffff", want: wantMalformed, index: 0, msg: "runs past the end"},
		{name: "indefinite parameters without break", hex: "81 85 6161 00 6141 7f 6131", want: wantMalformed, index: 0, msg: "parameters: unexpected end of data"},
		{name: "type is negative", hex: "81 82 6178 20", want: wantMalformed, index: 0, msg: "type: got negative integer"},
		{name: "type is text", hex: "81 82 6178 6130", want: wantMalformed, index: 0, msg: "type: got text string"},
		{name: "type is a float", hex: "81 82 6178 f90000", want: wantMalformed, index: 0, msg: "type: got simple value or float"},
		{name: "type is a tag", hex: "81 82 6178 c002", want: wantMalformed, index: 0, msg: "type: got tag"},
		{name: "tagged command", hex: "81 c1 82617802", want: wantMalformed, index: 0, msg: "command: got tag"},
		{name: "set_command is an integer", hex: "81 85 6161 00 01 60 80", want: wantMalformed, index: 0, msg: "set_command: got unsigned integer"},
		{name: "parameters is null", hex: "81 85 6161 00 60 f6 80", want: wantMalformed, index: 0, msg: "parameters: got simple value"},
		{name: "ignore codes in a map", hex: "81 85 6161 00 60 60 a0", want: wantMalformed, index: 0, msg: "ignore_cme_errors: got map"},
		{name: "ignore code negative", hex: "81 85 6161 00 60 60 81 20", want: wantMalformed, index: 0, msg: "ignore_cme_errors entry: got negative integer"},
		{name: "ignore code over 32 bits", hex: "81 85 6161 00 60 60 81 1b0000000100000000", want: wantMalformed, index: 0, msg: "does not fit in 32 bits"},
		{name: "seven ignore codes", hex: "81 85 6161 00 60 60 87 01020304050607", want: wantTooMany, index: 0,
			limit: &LimitError{What: "ignore_cme_errors", Limit: 6, Got: 7}},
		{name: "huge ignore count", hex: "81 85 6161 00 60 60 9bffffffffffffffff", want: wantTooMany, index: 0,
			limit: &LimitError{What: "ignore_cme_errors", Limit: 6, Got: 1<<31 - 1}},
		{name: "properties in an array", hex: "81 83 6162 01 80", want: wantMalformed, index: 0, msg: "properties: got array, want map"},
		{name: "eleven properties", hex: "81 83 6162 01 ab" + repeat("616b6176", 11), want: wantTooMany, index: 0,
			limit: &LimitError{What: "properties", Limit: 10, Got: 11}},
		{name: "huge property count", hex: "81 83 6162 01 bbffffffffffffffff", want: wantTooMany, index: 0,
			limit: &LimitError{What: "properties", Limit: 10, Got: 1<<31 - 1}},
		{name: "property value is an integer", hex: "81 83 6162 01 a1 616b 01", want: wantMalformed, index: 0, msg: "property value: got unsigned integer"},
		{name: "property key is an integer", hex: "81 83 6162 01 a1 01 6176", want: wantMalformed, index: 0, msg: "property key: got unsigned integer"},
		{name: "property value is bytes", hex: "81 83 6162 01 a1 616b 4176", want: wantMalformed, index: 0, msg: "property value: got byte string"},
		{name: "duplicate property key", hex: "81 83 6162 01 a2 616b 6131 616b 6132", want: wantMalformed, index: 0, msg: `duplicate key "k"`},
		{name: "map truncated", hex: "81 83 6162 01 a2 616b 6131", want: wantMalformed, index: 0, msg: "unexpected end of data"},
		{name: "break instead of a command", hex: "81 ff", want: wantMalformed, index: 0, msg: "unexpected break"},
		{name: "reserved additional information", hex: "81 82 6178 1c", want: wantMalformed, index: 0, msg: "reserved additional information 28"},
		{name: "indefinite integer", hex: "81 82 6178 1f", want: wantMalformed, index: 0, msg: "indefinite length on unsigned integer"},
		{name: "truncated head", hex: "81 82 6178 19 00", want: wantMalformed, index: 0, msg: "unexpected end of data"},
		{name: "deep nesting", hex: repeat("81", 10000), want: wantMalformed, index: 0, msg: "command has 1 elements"},
		{name: "second command broken", hex: "82 82617802 82 6179 18", want: wantMalformed, index: 1, msg: "unexpected end of data"},
	}
}

func TestDecodeCommandsRefusals(t *testing.T) {
	for _, tc := range commandRefusals(t) {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.data
			if data == nil {
				data = mustHex(t, tc.hex)
			}
			cmds, err := DecodeCommands(data, DefaultMaxCommands)
			checkRefusal(t, tc, cmds, err)
		})
	}
}

func checkRefusal[T any](t *testing.T, tc refusal, got []T, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted: %+v", got)
	}
	if got != nil {
		t.Errorf("returned %d elements with the error", len(got))
	}
	if strings.ContainsAny(err.Error(), "\r\n") {
		t.Errorf("error text is not one line: %q", err)
	}
	isMalformed, isTooMany := errors.Is(err, ErrMalformed), errors.Is(err, ErrTooMany)
	switch tc.want {
	case wantMalformed:
		if !isMalformed || isTooMany {
			t.Errorf("err %v: Is(ErrMalformed)=%v Is(ErrTooMany)=%v, want malformed", err, isMalformed, isTooMany)
		}
	case wantTooMany:
		if !isTooMany || isMalformed {
			t.Errorf("err %v: Is(ErrMalformed)=%v Is(ErrTooMany)=%v, want too many", err, isMalformed, isTooMany)
		}
	}
	var de *DecodeError
	switch {
	case tc.index < 0 && errors.As(err, &de):
		t.Errorf("err %v names element %d, want a batch-level error", err, de.Index)
	case tc.index >= 0 && !errors.As(err, &de):
		t.Errorf("err %v names no element, want element %d", err, tc.index)
	case tc.index >= 0 && de.Index != tc.index:
		t.Errorf("err %v names element %d, want %d", err, de.Index, tc.index)
	}
	if tc.limit != nil {
		var le *LimitError
		if !errors.As(err, &le) {
			t.Fatalf("err %v is not a *LimitError", err)
		}
		if *le != *tc.limit {
			t.Errorf("LimitError %+v, want %+v", *le, *tc.limit)
		}
	}
	if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
		t.Errorf("err %q does not mention %q", err, tc.msg)
	}
}

func responseRefusals(t testing.TB) []refusal {
	tooLongID := append(mustHex(t, "81 82 79 0100"), bytes.Repeat([]byte{'a'}, 256)...)
	tooLongID = append(tooLongID, 0x18, 0x66)
	return []refusal{
		{name: "empty payload", hex: "", want: wantMalformed, index: -1, msg: "empty payload"},
		{name: "top level is a map", hex: "a0", want: wantMalformed, index: -1, msg: "want array"},
		{name: "top level reserved head", hex: "9c", want: wantMalformed, index: -1, msg: "reserved"},
		{name: "empty batch", hex: "80", want: wantMalformed, index: -1, msg: "empty batch"},
		{name: "empty indefinite batch", hex: "9fff", want: wantMalformed, index: -1, msg: "empty batch"},
		{name: "eleven responses", hex: "8b" + repeat("82617818 66", 11), want: wantTooMany, index: -1,
			limit: &LimitError{What: "responses", Limit: 10, Got: 11}},
		{name: "eleven responses indefinite", hex: "9f" + repeat("82617818 66", 11) + "ff", want: wantTooMany, index: -1,
			limit: &LimitError{What: "responses", Limit: 10, Got: 11}},
		{name: "endless indefinite batch", hex: "9f" + repeat("82617818 66", 10000), want: wantTooMany, index: -1,
			limit: &LimitError{What: "responses", Limit: 10, Got: 11}},
		{name: "indefinite batch without break", hex: "9f 82617818 66", want: wantMalformed, index: -1, msg: "no break"},
		{name: "count larger than data", hex: "83 82617818 66", want: wantMalformed, index: 1, msg: "unexpected end of data"},
		{name: "unknown response type 0", hex: "81 82 6178 00", want: wantMalformed, index: 0, msg: "unknown response type 0"},
		{name: "unknown response type 103", hex: "81 82 6178 1867", want: wantMalformed, index: 0, msg: "unknown response type 103"},
		{name: "command in a response batch", hex: "82 82617818 66 82617802", want: wantMalformed, index: 1, msg: "unknown response type 2"},
		{name: "error with 3 elements", hex: "81 83 6178 1863 00", want: wantMalformed, index: 0, msg: "error response has 3 elements, want 4"},
		{name: "ack with a trailing element", hex: "81 83 6178 1865 60", want: wantMalformed, index: 0, msg: "config_ack response has 3 elements, want 2"},
		{name: "at_response without message", hex: "81 82 6178 1864", want: wantMalformed, index: 0, msg: "at_response response has 2 elements, want 3"},
		{name: "response of one element", hex: "81 81 6178", want: wantMalformed, index: 0, msg: "1 elements"},
		{name: "response is a map", hex: "81 a0", want: wantMalformed, index: 0, msg: "response: got map, want array"},
		{name: "response is bytes", hex: "81 43 616263", want: wantMalformed, index: 0, msg: "response: got byte string"},
		{name: "id is an integer", hex: "81 82 01 1866", want: wantMalformed, index: 0, msg: "correlation id"},
		{name: "id is bytes", hex: "81 82 4178 1866", want: wantMalformed, index: 0, msg: "correlation id"},
		{name: "id is not UTF-8", hex: "81 82 61ff 1866", want: wantMalformed, index: 0, msg: "correlation id"},
		{name: "id longer than 255 bytes", data: tooLongID, want: wantMalformed, index: 0, msg: "256 bytes, limit 255"},
		{name: "type is text", hex: "81 82 6178 6130", want: wantMalformed, index: 0, msg: "type"},
		{name: "type is negative", hex: "81 82 6178 38 63", want: wantMalformed, index: 0, msg: "type"},
		{name: "cme_error is negative", hex: "81 84 6178 1863 24 60", want: wantMalformed, index: 0, msg: "cme_error"},
		{name: "cme_error is a float", hex: "81 84 6178 1863 f93c00 60", want: wantMalformed, index: 0, msg: "cme_error"},
		{name: "cme_error is a simple value", hex: "81 84 6130 1863 f830 6130", want: wantMalformed, index: 0, msg: "cme_error: got simple value or float"},
		{name: "cme_error is false", hex: "81 84 6130 1863 f4 6130", want: wantMalformed, index: 0, msg: "cme_error: got simple value"},
		{name: "type is a simple value", hex: "81 82 6130 f866", want: wantMalformed, index: 0, msg: "type: got simple value"},
		{name: "message is null", hex: "81 83 6130 1864 f6", want: wantMalformed, index: 0, msg: "message: got simple value"},
		{name: "message is an integer", hex: "81 83 6178 1864 00", want: wantMalformed, index: 0, msg: "message"},
		{name: "message is not UTF-8", hex: "81 83 6178 1864 62c328", want: wantMalformed, index: 0, msg: "message"},
		{name: "tagged element", hex: "81 c1 82 6178 1866", want: wantMalformed, index: 0, msg: "tag"},
		{name: "seventeen fields", hex: "81 91 6178 1866" + repeat("00", 15), want: wantMalformed, index: 0, msg: "max number of elements"},
		{name: "deep nesting", hex: repeat("81", 10000), want: wantMalformed, index: 0, msg: "nested level"},
		{name: "huge declared message", hex: "81 83 6178 1864 7bffffffffffffffff", want: wantMalformed, index: 0, msg: "malformed"},
		{name: "trailing byte after the batch", hex: "81 82617818 66 00", want: wantMalformed, index: -1, msg: "1 trailing bytes"},
		{name: "trailing byte after the break", hex: "9f 82617818 66 ff 00", want: wantMalformed, index: -1, msg: "1 trailing bytes"},
	}
}

func TestDecodeResponsesRefusals(t *testing.T) {
	for _, tc := range responseRefusals(t) {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.data
			if data == nil {
				data = mustHex(t, tc.hex)
			}
			rs, err := DecodeResponses(data, DefaultMaxCommands)
			checkRefusal(t, tc, rs, err)
		})
	}
}

// TestDecodeBatchRefusals runs every refusal through the kind-detecting DecodeBatch: each must
// still be refused with the same class.
func TestDecodeBatchRefusals(t *testing.T) {
	all := append(commandRefusals(t), responseRefusals(t)...)
	for _, tc := range all {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.data
			if data == nil {
				data = mustHex(t, tc.hex)
			}
			b, err := DecodeBatch(data, DefaultMaxCommands)
			if err == nil {
				t.Fatalf("accepted: %+v", b)
			}
			if tc.want == wantTooMany && !errors.Is(err, ErrTooMany) || tc.want == wantMalformed && !errors.Is(err, ErrMalformed) {
				t.Errorf("err %v, want %s", err, tc.want)
			}
		})
	}
}
