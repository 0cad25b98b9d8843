package manpage

import (
	"bufio"
	"strings"
	"testing"
)

func TestEscape(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain text", "plain text"},
		{"use --config FILE", `use \-\-config FILE`},
		{"re-plugging keeps a well-known name", "re-plugging keeps a well-known name"},
		{`a \ backslash`, `a \e backslash`},
		{"[--json] or (-x) or `-`", "[\\-\\-json] or (\\-x) or `\\-`"},
	}
	for _, tt := range tests {
		if got := escape(tt.in); got != tt.want {
			t.Errorf("escape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestText(t *testing.T) {
	var b strings.Builder
	r := roff{bufio.NewWriter(&b)}
	r.text(".starts with a dot\n'and an apostrophe\n\nExample:\n  provisiond now --socket S\n")
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	want := `\&.starts with a dot
\&'and an apostrophe
.PP
.RS 4
.nf
Example:
  provisiond now \-\-socket S
.fi
.RE
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}
