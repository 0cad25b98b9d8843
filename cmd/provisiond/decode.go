package main

import (
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/provisiond/provisiond/internal/proto"
)

// maxCodecInput bounds what decode and encode read from stdin. A batch is at most a few KiB
// (the device's receive buffer is 1 KiB), so 1 MiB leaves room for hand-built test payloads.
const maxCodecInput = 1 << 20

func newDecodeCmd() *cobra.Command {
	limit := proto.DefaultMaxCommands
	cmd := &cobra.Command{
		Use:   "decode HEX|-",
		Short: "Print a CBOR command or response batch as JSON",
		Long: `Decode a provisioning batch given as hex (white space is ignored; "-" reads stdin) and
print it as a JSON array, one object per command or response.

Commands (types 0-2) are decoded as the device's decoder decodes them: definite or indefinite
lengths, integer and length heads of any size, text bytes as they are, and bytes after the
batch ignored (a warning on stderr says how many). Limits and rules stay: at most --limit
commands, 6 ignore codes per AT command and 10 pairs per config command, exactly the
elements of each command type, and correlation ids of at most 255 bytes of UTF-8 without
control characters (provisiond refuses those; the device does not). Responses (types
99-102) are decoded tolerantly, as the service does.

JSON cannot carry text that is not UTF-8: such bytes print as U+FFFD, and a warning on
stderr gives each such field with its exact bytes. A malformed batch prints one line of
reason on stderr and exits 1.`,
		Example: `  provisiond decode 8182617802
  echo 8383626331186460826263321865826263331866 | provisiond decode -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := codecInput(cmd, args[0])
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("decode: %w", err)}
			}
			data, err := parseHexInput(in)
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("decode: %w", err)}
			}
			b, err := proto.DecodeBatch(data, limit)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			js, err := b.LinesJSON()
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			if b.Trailing > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "decode: warning: %d bytes after the batch ignored, as the device ignores them\n", b.Trailing)
			}
			for _, f := range b.NotUTF8() {
				fmt.Fprintf(cmd.ErrOrStderr(), "decode: warning: not UTF-8, shown as U+FFFD: %s\n", f)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", js)
			return err
		},
	}
	cmd.Flags().IntVar(&limit, "limit", limit,
		fmt.Sprintf("most elements accepted in one batch (the device's CBOR_RECORDS, 5-20; at most %d)", proto.MaxCommandsCeiling))
	return cmd
}

// codecInput returns arg itself, or all of stdin when arg is "-".
func codecInput(cmd *cobra.Command, arg string) ([]byte, error) {
	if arg != "-" {
		return []byte(arg), nil
	}
	b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), maxCodecInput+1))
	if err != nil {
		return nil, fmt.Errorf("read stdin: %w", err)
	}
	if len(b) > maxCodecInput {
		return nil, fmt.Errorf("stdin holds more than %d bytes", maxCodecInput)
	}
	return b, nil
}

// parseHexInput decodes hex digits in either case, ignoring white space anywhere (so pasted,
// wrapped or spaced dumps work).
func parseHexInput(in []byte) ([]byte, error) {
	digits := strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, string(in))
	if digits == "" {
		return nil, fmt.Errorf("no hex input")
	}
	data, err := hex.DecodeString(digits)
	if err != nil {
		return nil, fmt.Errorf("hex input: %w", err)
	}
	return data, nil
}
