package config

import (
	"slices"
	"testing"
	"time"
)

func TestRestartNeeded(t *testing.T) {
	known := map[string]bool{}
	for _, k := range Keys() {
		known[k.Key] = true
	}
	for k := range startOnlyKeys() {
		if !known[k] {
			t.Errorf("start-only key %s is not in the table", k)
		}
	}
	base := Default
	tests := []struct {
		name   string
		change func(c *Config)
		want   []string
	}{
		{"nothing", func(*Config) {}, nil},
		{"reloadable only", func(c *Config) { c.Log.Level = "debug"; c.Provisioning.Interval = time.Hour }, nil},
		{"start-only", func(c *Config) { c.Modem.Port = "/dev/ttyACM9"; c.Control.Socket = "/run/x.sock" }, []string{"modem.port", "control.socket"}},
		{"mixed", func(c *Config) { c.Modem.Baud = 9600; c.Modem.JWTSecTag = 7; c.Log.Format = "json" }, []string{"modem.baud", "log.format"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			old, cur := base(), base()
			tc.change(cur)
			if got := RestartNeeded(old, cur); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
