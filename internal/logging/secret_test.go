package logging

import (
	"bytes"
	"strings"
	"testing"
)

func TestFingerprint(t *testing.T) {
	jwt := "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI1MGQ0MzJjYyJ9.c2lnbmF0dXJlLXNlY3JldC1wYXJ0"
	tests := []struct {
		name  string
		value string
		want  string
	}{
		{name: "empty", value: "", want: ""},
		{name: "short value shows no characters", value: "s3cret", want: "sha256:1ec1c26b len=6"},
		{name: "jwt", value: jwt, want: "eyJhbG…sha256:"},
		{name: "multibyte prefix stays valid UTF-8", value: "ééééééàèìòùâêîôûäëïöüçñœæøåßþðÿ", want: "éééééé…sha256:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Fingerprint(tt.value)
			if tt.want == "" && got != "" {
				t.Fatalf("got %q, want empty", got)
			}
			if !strings.HasPrefix(got, tt.want) {
				t.Errorf("got %q, want prefix %q", got, tt.want)
			}
			if len(tt.value) > 12 && strings.Contains(got, tt.value[len(tt.value)-12:]) {
				t.Errorf("fingerprint %q reveals the tail of the secret", got)
			}
		})
	}
	if a, b := Fingerprint(jwt), Fingerprint(string([]byte(jwt))); a != b || a == Fingerprint(jwt+"x") {
		t.Error("fingerprint is not a stable function of the value")
	}
}

func TestSecretFieldNeverLogsValue(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(Config{Level: "debug", Format: "json", Writer: &buf})
	if err != nil {
		t.Fatal(err)
	}
	token := "2dn3hQFQUDYxVDkxRPCAIhIbZAFifUERWA.0oRDoQEmoQRBIfZYQGuXwJliinHc6xDPruiyjsaXyXZbZVpUuOhHG4YpZG"
	log.Info("attestation token", Secret("token", token))
	out := buf.String()
	if strings.Contains(out, token) || strings.Contains(out, token[6:20]) {
		t.Fatalf("log line reveals the token: %s", out)
	}
	if !strings.Contains(out, `"token":"`+Fingerprint(token)+`"`) {
		t.Errorf("log line %s lacks the fingerprint %q", out, Fingerprint(token))
	}
}
