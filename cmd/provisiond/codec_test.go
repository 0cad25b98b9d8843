package main

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/provisiond/provisiond/internal/proto"
)

// codecVectorDir holds the codec's golden vectors; reading them from there keeps one copy.
var codecVectorDir = filepath.Join("..", "..", "internal", "proto", "testdata", "vectors")

// runCodecCmd runs a decode or encode command with args and stdin and returns its output.
func runCodecCmd(t *testing.T, cmd *cobra.Command, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

type codecVector struct {
	name string
	hex  string
	json string // golden output of decode
}

func loadCodecVectors(t *testing.T) []codecVector {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(codecVectorDir, "*.hex"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no vectors in %s: %v", codecVectorDir, err)
	}
	var vs []codecVector
	for _, f := range files {
		h, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		js, err := os.ReadFile(strings.TrimSuffix(f, ".hex") + ".json")
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, codecVector{name: strings.TrimSuffix(filepath.Base(f), ".hex"),
			hex: strings.TrimSpace(string(h)), json: string(js)})
	}
	return vs
}

// canonicalOf maps the vectors that are not canonical to the hex encode prints for them.
var canonicalOf = map[string]string{"D1": "X4-finished-ack-canonical"}

// TestCodecCLIVectorsRoundTrip: decode prints the golden JSON for every vector (from the
// argument and from stdin), and encode turns that JSON back into the same bytes.
func TestCodecCLIVectorsRoundTrip(t *testing.T) {
	vs := loadCodecVectors(t)
	hexOf := map[string]string{}
	for _, v := range vs {
		hexOf[v.name] = v.hex
	}
	for _, v := range vs {
		t.Run(v.name, func(t *testing.T) {
			out, stderr, err := runCodecCmd(t, newDecodeCmd(), "", v.hex)
			if err != nil || stderr != "" {
				t.Fatalf("decode: %v, stderr %q", err, stderr)
			}
			if out != v.json {
				t.Fatalf("decode printed\n%s\nwant\n%s", out, v.json)
			}
			// Upper case, wrapped, from stdin: the same output.
			wrapped := strings.ToUpper(v.hex[:len(v.hex)/2]) + "\n  " + v.hex[len(v.hex)/2:] + "\n"
			if out2, _, err := runCodecCmd(t, newDecodeCmd(), wrapped, "-"); err != nil || out2 != out {
				t.Fatalf("decode - printed %q, %v; want %q", out2, err, out)
			}
			want := v.hex
			if c, ok := canonicalOf[v.name]; ok {
				want = hexOf[c]
			}
			enc, stderr, err := runCodecCmd(t, newEncodeCmd(), out, "-")
			if err != nil || stderr != "" {
				t.Fatalf("encode: %v, stderr %q", err, stderr)
			}
			if enc != want+"\n" {
				t.Errorf("encode printed %q, want %q", enc, want+"\n")
			}
			if enc2, _, err := runCodecCmd(t, newEncodeCmd(), "", out); err != nil || enc2 != enc {
				t.Errorf("encode JSON-argument printed %q, %v; want %q", enc2, err, enc)
			}
		})
	}
}

func TestDecodeCLIRefusals(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		stdin string
		is    error // nil: only the message is checked
		msg   string
	}{
		{name: "no argument", args: nil, msg: "accepts 1 arg"},
		{name: "two arguments", args: []string{"80", "80"}, msg: "accepts 1 arg"},
		{name: "empty argument", args: []string{""}, msg: "no hex input"},
		{name: "only white space on stdin", args: []string{"-"}, stdin: " \n\t", msg: "no hex input"},
		{name: "odd hex length", args: []string{"818"}, msg: "odd length"},
		{name: "not hex", args: []string{"8g"}, msg: "invalid byte"},
		{name: "0x prefix", args: []string{"0x8182617802"}, msg: "invalid byte"},
		{name: "empty batch", args: []string{"80"}, is: proto.ErrMalformed, msg: "empty batch"},
		{name: "indefinite batch without break", args: []string{"9f8261780 2"}, is: proto.ErrMalformed, msg: "no break"},
		{name: "id with an escape", args: []string{"81 82 63 1b5b41 02"}, is: proto.ErrMalformed, msg: "control character U+001B"},
		{name: "unknown command type", args: []string{"8182617803"}, is: proto.ErrMalformed, msg: "unknown command type 3"},
		{name: "mixed batch", args: []string{"82 82617802 82617818 66"}, is: proto.ErrMalformed, msg: "element 1"},
		{name: "mixed batch, responses first", args: []string{"82 82617818 66 82617802"}, is: proto.ErrMalformed, msg: "unknown response type 2"},
		{name: "eleven commands", args: []string{"8b" + strings.Repeat("82617802", 11)}, is: proto.ErrTooMany, msg: "too many commands: 11, limit 10"},
		{name: "limit flag", args: []string{"--limit", "5", "86" + strings.Repeat("82617802", 6)}, is: proto.ErrTooMany, msg: "limit 5"},
		{name: "seven ignore codes", args: []string{"81 85 6161 00 60 60 87 01020304050607"}, is: proto.ErrTooMany, msg: "too many ignore_cme_errors"},
		{name: "id with a newline stays on one line", args: []string{"81 82 62610a 03"}, is: proto.ErrMalformed, msg: "control character U+000A"},
		{name: "a bad id is not echoed", args: []string{"81 82 62611b 03"}, is: proto.ErrMalformed, msg: "element 0: malformed"},
		{name: "hostile count", args: []string{"9bffffffffffffffff"}, is: proto.ErrTooMany, msg: "too many"},
		{name: "deep nesting", args: []string{strings.Repeat("81", 5000)}, is: proto.ErrMalformed, msg: "malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := runCodecCmd(t, newDecodeCmd(), tc.stdin, tc.args...)
			checkCLIError(t, out, err, tc.is, tc.msg)
		})
	}
}

func checkCLIError(t *testing.T, out string, err, is error, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("succeeded, printed %q", out)
	}
	if out != "" {
		t.Errorf("printed %q on stdout as well", out)
	}
	if strings.ContainsAny(err.Error(), "\r\n") {
		t.Errorf("error is not one line: %q", err)
	}
	if !strings.Contains(err.Error(), msg) {
		t.Errorf("err %q does not mention %q", err, msg)
	}
	if is != nil {
		var ee *exitError
		if !errors.As(err, &ee) || ee.code == 0 {
			t.Errorf("err %v is not an exitError with a non-zero code", err)
		}
		if !errors.Is(err, is) {
			t.Errorf("err %v does not wrap %v", err, is)
		}
	}
}

func TestEncodeCLI(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		stdin string
		want  string
	}{
		{name: "argument", args: []string{`[{"id":"x","type":"finished"}]`}, want: "8182617802\n"},
		{name: "stdin", args: []string{"-"}, stdin: "[\n {\"id\":\"c1\",\"type\":\"error\",\"cme_error\":514,\"message\":\"\"}\n]\n",
			want: "8184626331186319020260\n"},
		{name: "oversize batches can be built", args: []string{`[{"id":"a","type":"at","command":"","parameters":"","ignore_cme_errors":[1,2,3,4,5,6,7]}]`},
			want: "818561610060608701020304050607\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := runCodecCmd(t, newEncodeCmd(), tc.stdin, tc.args...)
			if err != nil || stderr != "" {
				t.Fatalf("encode: %v, stderr %q", err, stderr)
			}
			if out != tc.want {
				t.Errorf("printed %q, want %q", out, tc.want)
			}
		})
	}
}

func TestEncodeCLIRefusals(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		stdin string
		is    error
		msg   string
	}{
		{name: "no argument", args: nil, msg: "accepts 1 arg"},
		{name: "empty stdin", args: []string{"-"}, is: proto.ErrInvalid, msg: "unexpected EOF"},
		{name: "not JSON", args: []string{"8182617802"}, is: proto.ErrInvalid, msg: "invalid value"},
		{name: "empty array", args: []string{"[]"}, is: proto.ErrInvalid, msg: "empty batch"},
		{name: "unknown type", args: []string{`[{"id":"x","type":"reboot"}]`}, is: proto.ErrInvalid, msg: `unknown type "reboot"`},
		{name: "mixed batch", args: []string{`[{"id":"x","type":"finished"},{"id":"x","type":"config_ack"}]`}, is: proto.ErrInvalid, msg: "mixes"},
		{name: "unknown field", args: []string{`[{"id":"x","type":"finished","ttl":1}]`}, is: proto.ErrInvalid, msg: `unknown field "ttl"`},
		{name: "multi-line input, one-line error", args: []string{"-"}, stdin: "[\n{\"id\":\n1}]", is: proto.ErrInvalid, msg: `"id": got a number`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := runCodecCmd(t, newEncodeCmd(), tc.stdin, tc.args...)
			checkCLIError(t, out, err, tc.is, tc.msg)
		})
	}
}

// failingReader fails every read.
type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("device gone") }

func TestCodecCLIStdin(t *testing.T) {
	tests := []struct {
		name  string
		cmd   func() *cobra.Command
		stdin io.Reader
		msg   string
	}{
		{name: "decode read error", cmd: newDecodeCmd, stdin: failingReader{}, msg: "decode: read stdin: device gone"},
		{name: "encode read error", cmd: newEncodeCmd, stdin: failingReader{}, msg: "encode: read stdin: device gone"},
		{name: "decode oversize stdin", cmd: newDecodeCmd, stdin: strings.NewReader(strings.Repeat("0", maxCodecInput+1)), msg: "more than"},
		{name: "encode oversize stdin", cmd: newEncodeCmd, stdin: strings.NewReader(strings.Repeat(" ", maxCodecInput+1)), msg: "more than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := tc.cmd()
			var out bytes.Buffer
			cmd.SetArgs([]string{"-"})
			cmd.SetIn(tc.stdin)
			cmd.SetOut(&out)
			cmd.SetErr(io.Discard)
			cmd.SilenceUsage, cmd.SilenceErrors = true, true
			err := cmd.Execute()
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err %v, want exit 1 mentioning %q", err, tc.msg)
			}
		})
	}
}

// TestDecodeCLIAcceptsAsTheDevice: batches the device accepts in a non-canonical form decode,
// with a warning on stderr where the JSON cannot show everything, and encode prints their
// canonical form.
func TestDecodeCLIAcceptsAsTheDevice(t *testing.T) {
	const finishedX = "[\n  {\"id\":\"x\",\"type\":\"finished\"}\n]\n"
	tests := []struct {
		name      string
		in        string
		out       string
		warnings  []string
		canonical string
	}{
		{name: "indefinite batch", in: "9f8261780 2ff", out: finishedX, canonical: "8182617802"},
		{name: "non-minimal heads", in: "98 01 9802 7801 78 1b0000000000000002", out: finishedX, canonical: "8182617802"},
		{name: "trailing bytes", in: "8182617802 00 ff", out: finishedX, canonical: "8182617802",
			warnings: []string{"decode: warning: 2 bytes after the batch ignored, as the device ignores them"}},
		{name: "parameters not UTF-8", in: "81 85 6161 00 62 2558 62 319b 80",
			out:       "[\n  {\"id\":\"a\",\"type\":\"at\",\"command\":\"%X\",\"parameters\":\"1\\ufffd\",\"ignore_cme_errors\":[]}\n]\n",
			warnings:  []string{`decode: warning: not UTF-8, shown as U+FFFD: element 0 parameters: "1\x9b"`},
			canonical: "81856161006225586431efbfbd80"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := runCodecCmd(t, newDecodeCmd(), "", tc.in)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if out != tc.out {
				t.Errorf("decode printed\n%s\nwant\n%s", out, tc.out)
			}
			var warnings []string
			if stderr != "" {
				warnings = strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			}
			if strings.Join(warnings, "|") != strings.Join(tc.warnings, "|") {
				t.Errorf("stderr %q, want %q", warnings, tc.warnings)
			}
			enc, _, err := runCodecCmd(t, newEncodeCmd(), out, "-")
			if err != nil || strings.TrimSpace(enc) != tc.canonical {
				t.Errorf("encode printed %q, %v; want %s", enc, err, tc.canonical)
			}
		})
	}
}

// FuzzDecodeCLI: the decode subcommand never panics, and either prints JSON that encode turns
// back into canonical bytes, or fails with a one-line error.
func FuzzDecodeCLI(f *testing.F) {
	for _, s := range []string{"8182617802", "80", "9f9f6178 1866ffff", "zz", "", strings.Repeat("81", 40)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, _, err := runCodecCmd(t, newDecodeCmd(), in, "-")
		if err != nil {
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		enc, _, err := runCodecCmd(t, newEncodeCmd(), out, "-")
		if err != nil {
			t.Fatalf("encode of decoded %q: %v", out, err)
		}
		data, err := hex.DecodeString(strings.TrimSpace(enc))
		if err != nil || len(data) == 0 {
			t.Fatalf("encode printed %q", enc)
		}
	})
}
