package proto

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// acceptance is a command batch the device's zcbor decoder accepts and DecodeCommands must
// accept too, decoding it to want and ignoring trailing bytes after it.
type acceptance struct {
	name     string
	hex      string
	want     []Command
	trailing int
	// moved marks the vectors that were in commandRefusals while the decoder was canonical-
	// only. They were measured against the device's decoder, which accepts them; they are
	// kept here rather than deleted so the history of each stays visible.
	moved bool
}

func finishedCmd(id string) Command { return Command{ID: id, Kind: KindFinished} }

// commandAcceptances holds one vector per accepted class: indefinite lengths, non-minimal
// heads, bytes after the batch and text that is not UTF-8.
func commandAcceptances() []acceptance {
	x := []Command{finishedCmd("x")}
	return []acceptance{
		// Indefinite-length arrays, maps and strings.
		{name: "indefinite batch", hex: "9f 82617802 ff", want: x, moved: true},
		{name: "indefinite command", hex: "81 9f617802ff", want: x, moved: true},
		{name: "indefinite id", hex: "81 82 7f6178ff 02", want: x, moved: true},
		{name: "indefinite map", hex: "81 83 6162 01 bfff", want: []Command{{ID: "b", Kind: KindConfig}}, moved: true},
		{name: "indefinite ignore array", hex: "81 85 6161 00 6141 60 9fff",
			want: []Command{{ID: "a", Kind: KindAT, SetCommand: "A"}}, moved: true},
		{name: "indefinite everywhere", hex: "9f 9f 7f 6161 60 6162 ff 00 7f 6325434dff 7f 62302c 6131 ff 9f 18ff 190201 ff ff" +
			" 9f 6163 01 bf 7f 616bff 7f 6176 6177 ff ff ff 9f 6164 02 ff ff",
			want: []Command{
				{ID: "ab", Kind: KindAT, SetCommand: "%CM", Parameters: "0,1", IgnoreCMEErrors: []uint64{255, 513}},
				{ID: "c", Kind: KindConfig, Properties: []Property{{"k", "vw"}}},
				finishedCmd("d"),
			}},
		{name: "indefinite string of no chunks", hex: "81 85 6161 00 7fff 7f60ff 80",
			want: []Command{{ID: "a", Kind: KindAT}}},
		{name: "ten commands, indefinite", hex: "9f" + strings.Repeat("82617802", 10) + "ff",
			want: []Command{finishedCmd("x"), finishedCmd("x"), finishedCmd("x"), finishedCmd("x"), finishedCmd("x"),
				finishedCmd("x"), finishedCmd("x"), finishedCmd("x"), finishedCmd("x"), finishedCmd("x")}},
		{name: "six ignore codes, indefinite", hex: "81 85 6161 00 60 60 9f 010203040506 ff",
			want: []Command{{ID: "a", Kind: KindAT, IgnoreCMEErrors: []uint64{1, 2, 3, 4, 5, 6}}}},
		{name: "ten properties, indefinite", hex: "81 83 6162 01 bf" + pairsHex(10) + "ff",
			want: []Command{{ID: "b", Kind: KindConfig, Properties: pairs(10)}}},
		// Integer and length heads longer than needed.
		{name: "non-minimal batch count", hex: "98 01 82617802", want: x, moved: true},
		{name: "non-minimal command count", hex: "81 9802 617802", want: x, moved: true},
		{name: "non-minimal type", hex: "81 82 6178 1802", want: x, moved: true},
		{name: "non-minimal 16-bit type", hex: "81 82 6178 190002", want: x, moved: true},
		{name: "non-minimal 64-bit type", hex: "81 82 6178 1b0000000000000002", want: x},
		{name: "non-minimal 32-bit ignore code", hex: "81 85 6161 00 6141 60 81 1a000000ff",
			want: []Command{{ID: "a", Kind: KindAT, SetCommand: "A", IgnoreCMEErrors: []uint64{255}}}, moved: true},
		{name: "non-minimal 64-bit ignore code", hex: "81 85 6161 00 6141 60 81 1b00000000ffffffff",
			want: []Command{{ID: "a", Kind: KindAT, SetCommand: "A", IgnoreCMEErrors: []uint64{4294967295}}}, moved: true},
		{name: "non-minimal id length", hex: "81 82 7801 78 02", want: x, moved: true},
		{name: "non-minimal map count", hex: "81 83 6162 01 b800", want: []Command{{ID: "b", Kind: KindConfig}}, moved: true},
		{name: "non-minimal 64-bit string length", hex: "81 85 6161 00 7b0000000000000001 41 60 80",
			want: []Command{{ID: "a", Kind: KindAT, SetCommand: "A"}}},
		{name: "non-minimal chunk length", hex: "81 82 7f 7801 78 ff 02", want: x},
		// Bytes after the batch: the device decodes one item and ignores the rest.
		{name: "trailing byte after the batch", hex: "81 82617802 00", want: x, trailing: 1, moved: true},
		{name: "second batch glued on", hex: "81 82617802 81 82617802", want: x, trailing: 5, moved: true},
		{name: "garbage after the batch", hex: "81 82617802 ff ff 1c", want: x, trailing: 3},
		{name: "trailing bytes after an indefinite batch", hex: "9f 82617802 ff 00", want: x, trailing: 1},
		// Text that is not UTF-8 outside correlation ids: the bytes pass through unchanged.
		{name: "set_command not UTF-8", hex: "81 85 6161 00 62 25ff 60 80",
			want: []Command{{ID: "a", Kind: KindAT, SetCommand: "%\xff"}}},
		{name: "parameters with a lone continuation byte", hex: "81 85 6161 00 6141 63 31809b 80",
			want: []Command{{ID: "a", Kind: KindAT, SetCommand: "A", Parameters: "1\x80\x9b"}}},
		{name: "parameters split inside a character", hex: "81 85 6161 00 6141 7f 61c3 61a9 ff 80",
			want: []Command{{ID: "a", Kind: KindAT, SetCommand: "A", Parameters: "é"}}},
		{name: "property key and value not UTF-8", hex: "81 83 6162 01 a1 62 6bfe 61 c3",
			want: []Command{{ID: "b", Kind: KindConfig, Properties: []Property{{"k\xfe", "\xc3"}}}}},
	}
}

func pairs(n int) []Property {
	var ps []Property
	for i := range n {
		ps = append(ps, Property{Key: string(rune('a' + i)), Value: "v"})
	}
	return ps
}

func pairsHex(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "61%02x 6176", 'a'+i)
	}
	return b.String()
}

func TestDecodeCommandsAcceptsAsTheDevice(t *testing.T) {
	for _, tc := range commandAcceptances() {
		t.Run(tc.name, func(t *testing.T) {
			data := mustHex(t, tc.hex)
			got, n, err := DecodeCommandsPrefix(data, DefaultMaxCommands)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			if trailing := len(data) - n; trailing != tc.trailing {
				t.Errorf("%d trailing bytes, want %d", trailing, tc.trailing)
			}
			// DecodeCommands gives the same commands, and the canonical re-encoding decodes
			// to them again with nothing left over.
			if again, err := DecodeCommands(data, DefaultMaxCommands); err != nil || !reflect.DeepEqual(again, got) {
				t.Errorf("DecodeCommands: %+v, %v", again, err)
			}
			enc, err := EncodeCommands(got)
			if err != nil {
				t.Fatalf("EncodeCommands: %v", err)
			}
			back, m, err := DecodeCommandsPrefix(enc, DefaultMaxCommands)
			if err != nil || m != len(enc) || !reflect.DeepEqual(back, got) {
				t.Errorf("decode(encode(x)) = %+v, %d of %d bytes, %v", back, m, len(enc), err)
			}
			if c, ok := canonicalItem(data[:n]); ok && c == n && !bytes.Equal(enc, data[:n]) {
				t.Errorf("canonical input re-encoded differently: %x, want %x", enc, data[:n])
			}
			b, err := DecodeBatch(data, DefaultMaxCommands)
			if err != nil || b.Trailing != tc.trailing || !reflect.DeepEqual(b.Commands, got) {
				t.Errorf("DecodeBatch: %+v, %v", b, err)
			}
		})
	}
}

// TestNotUTF8 lists the fields a JSON rendering cannot show exactly, with their bytes quoted.
func TestNotUTF8(t *testing.T) {
	b := Batch{Commands: []Command{
		{ID: "a", Kind: KindAT, SetCommand: "%X", Parameters: "1\x9b"},
		{ID: "b", Kind: KindConfig, Properties: []Property{{"k", "ok"}, {"k2", "\xff"}}},
	}}
	want := []string{`element 0 parameters: "1\x9b"`, `element 1 property value: "\xff"`}
	if got := b.NotUTF8(); !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	js, err := b.LinesJSON()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(js, []byte(`"parameters":"1\ufffd"`)) || bytes.ContainsRune(js, 0x9b) {
		t.Errorf("JSON does not escape the bytes:\n%s", js)
	}
}
