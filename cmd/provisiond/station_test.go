package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadAPIKey(t *testing.T) {
	const key = "k3y-0123456789abcdef"
	dir := t.TempDir()
	tests := []struct {
		name, content string
		want, wantErr string
	}{
		{name: "with newline", content: key + "\n", want: key},
		{name: "surrounding space", content: "  " + key + " \r\n", want: key},
		{name: "empty", content: " \n", wantErr: "the file is empty"},
		{name: "two keys", content: key + "\n" + key + "\n", wantErr: "white space inside it"},
		{name: "missing", wantErr: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if tt.name != "missing" {
				if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := readAPIKey(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), key) {
					t.Fatalf("readAPIKey = %q, %v; want an error with %q and without the key", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("readAPIKey = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
