package proto

import (
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkDecodeCommands10 decodes a full default-size batch (X7: 7 AT, 2 config, 1 finished,
// service-style correlation ids, 841 bytes).
func BenchmarkDecodeCommands10(b *testing.B) {
	data := readHex(b, filepath.Join("testdata", "vectors", "X7-ten-commands.hex"))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		cmds, err := DecodeCommands(data, DefaultMaxCommands)
		if err != nil || len(cmds) != 10 {
			b.Fatal(len(cmds), err)
		}
	}
}

func BenchmarkEncodeCommands10(b *testing.B) {
	cmds, err := DecodeCommands(readHex(b, filepath.Join("testdata", "vectors", "X7-ten-commands.hex")), DefaultMaxCommands)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EncodeCommands(cmds); err != nil {
			b.Fatal(err)
		}
	}
}

// responses10 is the answer to X7: nine successes with modem text and the finished ack.
func responses10() []Response {
	rs := make([]Response, 10)
	for i := range 9 {
		rs[i] = Response{ID: "9685ef84-8cac-4257-b5cc-94bc416a1c1d." + string(rune('0'+i)), Kind: KindATResponse,
			Message: "%CMNG: 42,0,\"" + strings.Repeat("0123456789ABCDEF", 4) + "\"\r\nOK\r\n"}
	}
	rs[9] = Response{ID: "9685ef84-8cac-4257-b5cc-94bc416a1c1d.9", Kind: KindFinishedAck}
	return rs
}

func BenchmarkEncodeResponses(b *testing.B) {
	rs := responses10()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EncodeResponses(rs); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeResponses10(b *testing.B) {
	data, err := EncodeResponses(responses10())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeResponses(data, DefaultMaxCommands); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeCommandsHostile measures refusing hostile input: a declared count of 2^64-1,
// a 4 GiB string and 10000-deep nesting must cost next to nothing.
func BenchmarkDecodeCommandsHostile(b *testing.B) {
	inputs := map[string][]byte{
		"huge count":   mustHex(b, "9bffffffffffffffff"),
		"huge string":  mustHex(b, "81827b0000000100000000"),
		"deep nesting": mustHex(b, strings.Repeat("81", 10000)),
	}
	for name, data := range inputs {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeCommands(data, DefaultMaxCommands); err == nil {
					b.Fatal("accepted")
				}
			}
		})
	}
}
