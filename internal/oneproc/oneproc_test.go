package oneproc

import "testing"

func TestWanted(t *testing.T) {
	env := func(vars map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	}
	tests := []struct {
		name string
		args []string
		vars map[string]string
		want bool
	}{
		{"daemon", []string{"provisiond", "run"}, nil, true},
		{"once", []string{"/usr/bin/provisiond", "run", "--once", "--config", "x.yaml"}, nil, true},
		{"GOMAXPROCS set", []string{"provisiond", "run"}, map[string]string{"GOMAXPROCS": "4"}, false},
		{"GOMAXPROCS set empty", []string{"provisiond", "run"}, map[string]string{"GOMAXPROCS": ""}, false},
		{"other command", []string{"provisiond", "dashboard"}, nil, false},
		{"run as an argument", []string{"provisiond", "help", "run"}, nil, false},
		{"no command", []string{"provisiond"}, nil, false},
		{"no args", nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := wanted(tt.args, env(tt.vars)); got != tt.want {
				t.Errorf("wanted(%q) = %v, want %v", tt.args, got, tt.want)
			}
		})
	}
}
