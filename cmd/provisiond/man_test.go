package main

import (
	"bytes"
	"flag"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

var updateMan = flag.Bool("update-man", false, "rewrite docs/man from the command tree and the key table")

var manPages = []struct {
	path  string
	write func(io.Writer) error
}{
	{"../../docs/man/provisiond.8", writeCommandManPage},
	{"../../docs/man/provisiond.yaml.5", writeConfigManPage},
}

// TestManPages keeps the pages in docs/man, which the package installs, equal to what the
// command tree and the key table generate; when man(1) is installed it also renders each page
// and wants no warning from it.
func TestManPages(t *testing.T) {
	for _, p := range manPages {
		t.Run(p.path, func(t *testing.T) {
			var buf bytes.Buffer
			if err := p.write(&buf); err != nil {
				t.Fatal(err)
			}
			if *updateMan {
				if err := os.WriteFile(p.path, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			data, err := os.ReadFile(p.path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, buf.Bytes()) {
				t.Fatalf("%s differs from the code; run go test ./cmd/provisiond -run TestManPages -update-man", p.path)
			}
			manCheck(t, p.path)
		})
	}
}

// TestCommandManPageCoversEveryCommand: every available command at any depth and each of its
// flags appear in provisiond(8).
func TestCommandManPageCoversEveryCommand(t *testing.T) {
	var buf bytes.Buffer
	if err := writeCommandManPage(&buf); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	n := 0
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, cc := range c.Commands() {
			if !cc.IsAvailableCommand() {
				continue
			}
			n++
			if !strings.Contains(page, `.SS "`+cc.CommandPath()+` `) && !strings.Contains(page, `.SS "`+cc.CommandPath()+`"`) {
				t.Errorf("no section for %q", cc.CommandPath())
			}
			cc.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
				if f.Name != "help" && !strings.Contains(page, `\fB\-\-`+strings.ReplaceAll(f.Name, "-", `\-`)+`\fR`) {
					t.Errorf("%s: flag --%s not documented", cc.CommandPath(), f.Name)
				}
			})
			walk(cc)
		}
	}
	walk(newRootCmd())
	if n < 15 {
		t.Errorf("only %d commands found in the tree", n)
	}
}

// manCheck renders page with man(1) and fails on any warning groff or man prints, which is
// the check lintian's groff-message runs on the installed page.
func manCheck(t *testing.T, page string) {
	t.Helper()
	man, err := exec.LookPath("man")
	if err != nil {
		t.Log("no man(1): page not rendered")
		return
	}
	cmd := exec.Command(man, "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", page)
	cmd.Env = append(os.Environ(), "MANROFFSEQ=", "MANWIDTH=80")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = io.Discard
	if err := cmd.Run(); err != nil {
		t.Fatalf("man %s: %v\n%s", page, err, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Errorf("man %s warns:\n%s", page, stderr.String())
	}
}
