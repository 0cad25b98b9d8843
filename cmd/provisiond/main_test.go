package main

import (
	"strings"
	"testing"
)

func TestVersionFlag(t *testing.T) {
	want := "provisiond " + version + "\n"
	tests := []struct {
		args []string
		want string // exact stdout; "" means the root help
	}{
		{[]string{"--version"}, want},
		{[]string{"-v"}, want},
		{[]string{"--version=true"}, want},
		{[]string{"version"}, want},
		{[]string{"--version=false"}, ""},
		{[]string{"--version", "--help"}, ""},
		{[]string{"--help"}, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, err := runRoot(t, tt.args...)
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if tt.want != "" {
				if out != tt.want {
					t.Errorf("stdout = %q, want %q", out, tt.want)
				}
				return
			}
			if !strings.Contains(out, "Usage:\n  provisiond [command]") || !strings.Contains(out, "-v, --version   version for provisiond\n") {
				t.Errorf("stdout is not the root help with the version flag:\n%s", out)
			}
		})
	}
}

func TestVersionFlagOnlyOnRoot(t *testing.T) {
	if _, err := runRoot(t, "settings", "--version"); err == nil || !strings.Contains(err.Error(), "unknown flag: --version") {
		t.Errorf("settings --version: err = %v, want unknown flag", err)
	}
}
