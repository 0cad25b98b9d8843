package proto

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func finishedBatch(n int) []Command {
	cmds := make([]Command, n)
	for i := range cmds {
		cmds[i] = Command{ID: "f", Kind: KindFinished}
	}
	return cmds
}

func TestDecodeCommandsLimitArgument(t *testing.T) {
	tests := []struct {
		name    string
		n       int // commands in the batch
		max     int
		wantErr bool
	}{
		{name: "default limit takes 10", n: 10, max: 0},
		{name: "default limit refuses 11", n: 11, max: 0, wantErr: true},
		{name: "negative means default", n: 11, max: -5, wantErr: true},
		{name: "Kconfig maximum 20", n: 20, max: 20},
		{name: "Kconfig minimum 5 refuses 6", n: 6, max: 5, wantErr: true},
		{name: "ceiling applies", n: MaxCommandsCeiling + 1, max: 1 << 30, wantErr: true},
		{name: "ceiling itself", n: MaxCommandsCeiling, max: 1 << 30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, err := EncodeCommands(finishedBatch(tc.n))
			if err != nil {
				t.Fatal(err)
			}
			cmds, err := DecodeCommands(data, tc.max)
			if tc.wantErr {
				var le *LimitError
				if !errors.As(err, &le) || le.Got != tc.n {
					t.Fatalf("got %v, want a LimitError for %d commands", err, tc.n)
				}
				return
			}
			if err != nil || len(cmds) != tc.n {
				t.Fatalf("got %d commands, %v; want %d", len(cmds), err, tc.n)
			}
		})
	}
}

func TestDecodeCommandsAccepts(t *testing.T) {
	id255 := strings.Repeat("a", 255)
	tests := []struct {
		name string
		cmds []Command
	}{
		{name: "id of 255 bytes", cmds: []Command{{ID: id255, Kind: KindFinished}}},
		{name: "empty id", cmds: []Command{{ID: "", Kind: KindFinished}}},
		{name: "empty set_command and parameters", cmds: []Command{{ID: "a", Kind: KindAT}}},
		{name: "ignore code 2^32-1", cmds: []Command{{ID: "a", Kind: KindAT, SetCommand: "%X",
			IgnoreCMEErrors: []uint64{1<<32 - 1}}}},
		{name: "ten properties in wire order", cmds: []Command{{ID: "c", Kind: KindConfig, Properties: []Property{
			{"z", "1"}, {"a", "2"}, {"m", "3"}, {"b", "4"}, {"y", "5"}, {"c", "6"}, {"x", "7"}, {"d", "8"}, {"w", "9"}, {"e", ""},
		}}}},
		{name: "long AT parameters", cmds: []Command{{ID: "k", Kind: KindAT, SetCommand: "%CMNG",
			Parameters: "0,42,0,\"" + strings.Repeat("A", 1500) + "\""}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, err := EncodeCommands(tc.cmds)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeCommands(data, 0)
			if err != nil {
				t.Fatalf("DecodeCommands: %v", err)
			}
			if !reflect.DeepEqual(got, tc.cmds) {
				t.Errorf("got %+v, want %+v", got, tc.cmds)
			}
		})
	}
}

// TestDecodeResponsesTolerant: a server accepts what non-canonical devices send.
func TestDecodeResponsesTolerant(t *testing.T) {
	tests := []struct {
		name      string
		hex       string
		want      []Response
		canonical string // EncodeResponses of the result
	}{
		{name: "non-minimal heads", hex: "98 01 83 78 01 78 19 0064 7a 00000002 4f4b",
			want: []Response{{ID: "x", Kind: KindATResponse, Message: "OK"}}, canonical: "81 83 6178 1864 624f4b"},
		{name: "indefinite text strings", hex: "81 84 7f 6163 6131 ff 1863 1a00010000 7f ff",
			want:      []Response{{ID: "c1", Kind: KindError, CMEError: 65536}},
			canonical: "81 84 626331 1863 1a00010000 60"},
		{name: "indefinite elements in a definite batch", hex: "82 9f 6161 1865 ff 9f 6162 1866 ff",
			want:      []Response{{ID: "a", Kind: KindConfigAck}, {ID: "b", Kind: KindFinishedAck}},
			canonical: "82 82 6161 1865 82 6162 1866"},
		{name: "64-bit cme_error", hex: "81 84 6161 1863 1bffffffffffffffff 60",
			want:      []Response{{ID: "a", Kind: KindError, CMEError: 1<<64 - 1}},
			canonical: "81 84 6161 1863 1bffffffffffffffff 60"},
		{name: "ten in an indefinite batch", hex: "9f" + strings.Repeat("82 6161 1865", 10) + "ff",
			want:      slicesRepeat(Response{ID: "a", Kind: KindConfigAck}, 10),
			canonical: "8a" + strings.Repeat("82 6161 1865", 10)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeResponses(mustHex(t, tc.hex), DefaultMaxCommands)
			if err != nil {
				t.Fatalf("DecodeResponses: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			enc, err := EncodeResponses(got)
			if err != nil {
				t.Fatal(err)
			}
			if want := mustHex(t, tc.canonical); !bytes.Equal(enc, want) {
				t.Errorf("re-encoded %x, want %x", enc, want)
			}
		})
	}
}

func slicesRepeat[T any](v T, n int) []T {
	s := make([]T, n)
	for i := range s {
		s[i] = v
	}
	return s
}

func TestEncodeCommandsBytes(t *testing.T) {
	tests := []struct {
		name string
		cmds []Command
		want string
	}{
		{name: "nil ignore codes are an empty array", cmds: []Command{{ID: "a", Kind: KindAT, SetCommand: "+CFUN", Parameters: "4"}},
			want: "8185616100652b4346554e613480"},
		{name: "nil properties are an empty map", cmds: []Command{{ID: "b", Kind: KindConfig}}, want: "8183616201a0"},
		{name: "fields of other kinds are not encoded", cmds: []Command{{ID: "x", Kind: KindFinished, SetCommand: "junk",
			Properties: []Property{{"k", "v"}}}}, want: "8182617802"},
		// Receive limits are the decoder's business: fault injection needs oversize batches.
		{name: "seven ignore codes", cmds: []Command{{ID: "a", Kind: KindAT, IgnoreCMEErrors: []uint64{1, 2, 3, 4, 5, 6, 7}}},
			want: "818561610060608701020304050607"},
		{name: "duplicate keys", cmds: []Command{{ID: "b", Kind: KindConfig, Properties: []Property{{"k", "1"}, {"k", "2"}}}},
			want: "8183616201a2616b6131616b6132"},
		{name: "24 commands use a one-byte count", cmds: finishedBatch(24), want: "9818" + strings.Repeat("82616602", 24)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := EncodeCommands(tc.cmds)
			if err != nil {
				t.Fatal(err)
			}
			if want := mustHex(t, tc.want); !bytes.Equal(got, want) {
				t.Errorf("got %x, want %x", got, want)
			}
		})
	}
}

func TestEncodeRefusals(t *testing.T) {
	bad := string([]byte{0xff})
	tests := []struct {
		name string
		enc  func() ([]byte, error)
		msg  string
	}{
		{name: "no commands", enc: func() ([]byte, error) { return EncodeCommands(nil) }, msg: "empty batch"},
		{name: "no responses", enc: func() ([]byte, error) { return EncodeResponses([]Response{}) }, msg: "empty batch"},
		{name: "unknown command kind", enc: func() ([]byte, error) { return EncodeCommands([]Command{{ID: "a", Kind: 3}}) },
			msg: "element 0: invalid value: unknown command type 3"},
		{name: "unknown response kind", enc: func() ([]byte, error) { return EncodeResponses([]Response{{ID: "a", Kind: 1}}) },
			msg: "unknown response type 1"},
		{name: "response id not UTF-8", enc: func() ([]byte, error) { return EncodeResponses([]Response{{ID: bad, Kind: KindConfigAck}}) },
			msg: "correlation id"},
		{name: "error message not UTF-8", enc: func() ([]byte, error) {
			return EncodeResponses([]Response{{ID: "a", Kind: KindError, Message: bad}})
		}, msg: "message"},
		{name: "AT message not UTF-8", enc: func() ([]byte, error) {
			return EncodeResponses([]Response{{ID: "a", Kind: KindATResponse, Message: "OK" + bad}})
		}, msg: "message"},
		{name: "mixed batch", enc: func() ([]byte, error) {
			return EncodeBatch(Batch{Commands: finishedBatch(1), Responses: []Response{{ID: "a", Kind: KindConfigAck}}})
		}, msg: "mixes commands and responses"},
		{name: "empty batch", enc: func() ([]byte, error) { return EncodeBatch(Batch{}) }, msg: "empty batch"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.enc()
			if err == nil {
				t.Fatalf("encoded %x", b)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("err %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err %q does not mention %q", err, tc.msg)
			}
		})
	}
}

// TestEncodeCommandsPassesBytesThrough: command text that is not UTF-8 is written byte for
// byte, since DecodeCommands passes such text through and every batch it decodes must encode.
func TestEncodeCommandsPassesBytesThrough(t *testing.T) {
	cmds := []Command{
		{ID: "a", Kind: KindAT, SetCommand: "%X\xff", Parameters: "\x9b1"},
		{ID: "b", Kind: KindConfig, Properties: []Property{{"k\xc3", "\xfe"}}},
	}
	got, err := EncodeCommands(cmds)
	if err != nil {
		t.Fatal(err)
	}
	want := mustHex(t, "82 85 6161 00 63 2558ff 62 9b31 80 83 6162 01 a1 626bc3 61fe")
	if !bytes.Equal(got, want) {
		t.Fatalf("got  %x\nwant %x", got, want)
	}
	back, err := DecodeCommands(got, DefaultMaxCommands)
	if err != nil || !reflect.DeepEqual(back, cmds) {
		t.Fatalf("decode: %+v, %v", back, err)
	}
}

func TestEncodeResponsesBytes(t *testing.T) {
	// Each row is one response kind, written out from docs/protocol.md §3.3 by hand.
	tests := []struct {
		name string
		rs   []Response
		want string
	}{
		{name: "error", rs: []Response{{ID: "c1", Kind: KindError, CMEError: 514, Message: "x"}}, want: "8184 626331 1863 190202 6178"},
		{name: "at_response", rs: []Response{{ID: "c1", Kind: KindATResponse, Message: "OK"}}, want: "8183 626331 1864 624f4b"},
		{name: "config_ack ignores message", rs: []Response{{ID: "c2", Kind: KindConfigAck, Message: "junk", CMEError: 9}}, want: "8182 626332 1865"},
		{name: "finished_ack", rs: []Response{{ID: "c3", Kind: KindFinishedAck}}, want: "8182 626333 1866"},
		{name: "errno as uint32", rs: []Response{{ID: "e", Kind: KindError, CMEError: uint64(uint32(0xfffffffb))}}, want: "8184 6165 1863 1afffffffb 60"},
		{name: "message of 24 bytes", rs: []Response{{ID: "m", Kind: KindATResponse, Message: strings.Repeat("z", 24)}},
			want: "8183 616d 1864 7818" + hex.EncodeToString([]byte(strings.Repeat("z", 24)))},
		{name: "message of 256 bytes", rs: []Response{{ID: "m", Kind: KindATResponse, Message: strings.Repeat("z", 256)}},
			want: "8183 616d 1864 790100" + hex.EncodeToString([]byte(strings.Repeat("z", 256)))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := EncodeResponses(tc.rs)
			if err != nil {
				t.Fatal(err)
			}
			if want := mustHex(t, tc.want); !bytes.Equal(got, want) {
				t.Errorf("got %x, want %x", got, want)
			}
		})
	}
}

func TestErrorTypes(t *testing.T) {
	le := &LimitError{What: "ignore_cme_errors", Limit: 6, Got: 7}
	wrapped := &DecodeError{Index: 2, ID: "c3", Err: le}
	tests := []struct {
		name     string
		err      error
		text     string
		tooMany  bool
		malform  bool
		hasIndex bool
	}{
		{name: "limit", err: le, text: "too many ignore_cme_errors: 7, limit 6", tooMany: true},
		{name: "limit in element", err: wrapped, text: `element 2 (id "c3"): too many ignore_cme_errors: 7, limit 6`,
			tooMany: true, hasIndex: true},
		{name: "malformed without id", err: &DecodeError{Index: 0, Err: malformed("x")}, text: "element 0: malformed: x",
			malform: true, hasIndex: true},
		{name: "id is quoted", err: &DecodeError{Index: 1, ID: "a\nb", Err: malformed("x")},
			text: `element 1 (id "a\nb"): malformed: x`, malform: true, hasIndex: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.text {
				t.Errorf("Error() = %q, want %q", got, tc.text)
			}
			if got := errors.Is(tc.err, ErrTooMany); got != tc.tooMany {
				t.Errorf("Is(ErrTooMany) = %v", got)
			}
			if got := errors.Is(tc.err, ErrMalformed); got != tc.malform {
				t.Errorf("Is(ErrMalformed) = %v", got)
			}
			var de *DecodeError
			if got := errors.As(tc.err, &de); got != tc.hasIndex {
				t.Errorf("As(*DecodeError) = %v", got)
			}
		})
	}
}

func TestATString(t *testing.T) {
	tests := []struct {
		name string
		cmd  Command
		want string
	}{
		{name: "with parameters", cmd: Command{SetCommand: "%CMNG", Parameters: "3,42,0"}, want: "AT%CMNG=3,42,0"},
		{name: "empty parameters keep the =", cmd: Command{SetCommand: "%ATTESTTOKEN"}, want: "AT%ATTESTTOKEN="},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.cmd.ATString(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestKindStrings(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"at", KindAT.String(), "at"},
		{"config", KindConfig.String(), "config"},
		{"finished", KindFinished.String(), "finished"},
		{"unknown command", CommandKind(7).String(), "command(7)"},
		{"error", KindError.String(), "error"},
		{"at_response", KindATResponse.String(), "at_response"},
		{"config_ack", KindConfigAck.String(), "config_ack"},
		{"finished_ack", KindFinishedAck.String(), "finished_ack"},
		{"unknown response", ResponseKind(0).String(), "response(0)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}
