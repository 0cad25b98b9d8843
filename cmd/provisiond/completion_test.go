package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// rootWithCompletion is the real command tree with the completion command attached once,
// whether or not main.go wires it already.
func rootWithCompletion(t *testing.T) *cobra.Command {
	t.Helper()
	root := newRootCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			return root
		}
	}
	root.AddCommand(newCompletionCmd())
	return root
}

func runRoot(t *testing.T, args ...string) (stdout string, err error) {
	t.Helper()
	root := rootWithCompletion(t)
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err = root.ExecuteContext(context.Background())
	return out.String(), err
}

func TestCompletionScripts(t *testing.T) {
	tests := []struct {
		name  string
		shell string
		want  []string // fragments every script of that shell has
		check []string // syntax check: interpreter and flag, run when the shell is installed
	}{
		{name: "bash", shell: "bash", want: []string{"__start_provisiond", "complete -o default -F __start_provisiond provisiond"}, check: []string{"bash", "-n"}},
		{name: "zsh", shell: "zsh", want: []string{"#compdef provisiond", "_provisiond"}, check: []string{"zsh", "-n"}},
		{name: "fish", shell: "fish", want: []string{"complete -c provisiond", "__provisiond_perform_completion"}, check: []string{"fish", "--no-execute"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runRoot(t, "completion", tt.shell)
			if err != nil {
				t.Fatalf("completion %s: %v", tt.shell, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("completion %s: output lacks %q", tt.shell, w)
				}
			}
			interp, err := exec.LookPath(tt.check[0])
			if err != nil {
				t.Logf("%s not installed: syntax not checked", tt.check[0])
				return
			}
			script := filepath.Join(t.TempDir(), "provisiond."+tt.shell)
			if err := os.WriteFile(script, []byte(out), 0o600); err != nil {
				t.Fatal(err)
			}
			if msg, err := exec.Command(interp, tt.check[1], script).CombinedOutput(); err != nil {
				t.Errorf("%s %s: %v\n%s", tt.check[0], tt.check[1], err, msg)
			}
		})
	}
}

func TestCompletionRefusesBadArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{name: "no shell", args: []string{"completion"}},
		{name: "two shells", args: []string{"completion", "bash", "zsh"}},
		{name: "unknown shell", args: []string{"completion", "powershell"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runRoot(t, tt.args...)
			if err == nil {
				t.Fatalf("%v: got no error and %d bytes, want an error", tt.args, len(out))
			}
		})
	}
}

// TestCompletionCompletesTree asks the generated scripts' back end (cobra's hidden __complete
// command, which every script calls) for candidates, so a subcommand that stops completing shows.
func TestCompletionCompletesTree(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "subcommand", args: []string{"__complete", "conf"}, want: "config"},
		{name: "shell names", args: []string{"__complete", "completion", ""}, want: "fish"},
		{name: "nested", args: []string{"__complete", "config", "ch"}, want: "check"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runRoot(t, tt.args...)
			if err != nil {
				t.Fatalf("%v: %v", tt.args, err)
			}
			found := false
			for _, line := range strings.Split(out, "\n") {
				if strings.SplitN(line, "\t", 2)[0] == tt.want {
					found = true
				}
			}
			if !found {
				t.Errorf("%v: candidates %q lack %q", tt.args, out, tt.want)
			}
		})
	}
}
