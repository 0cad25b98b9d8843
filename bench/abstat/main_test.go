package main

import (
	"strings"
	"testing"
)

func TestReport(t *testing.T) {
	var out strings.Builder
	if err := run("testdata/log", []string{"batch"}, &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		// bin0: start-up medians 6 and 8 → 7; batch 20 and 26 → 23, 16 above; futex 10 and 30 → 20.
		"| bin0 | `version` | 2 | 7.00 ms | 0.00 ms |",
		"| bin0 | batch | 2 | 23.00 ms | 16.00 ms | — | — | — | — | 20 |",
		// bin1: an event perf could not count is shown as missing, not as zero.
		"| bin1 | batch | 1 | 15.00 ms | 10.00 ms | 700 | — | — | — | — |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "40.00 ms") {
		t.Errorf("the warm-up (run0) was reported:\n%s", got)
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"too few fields", "bin0,start,1,5.00\n"},
		{"empty field list", "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parse(strings.NewReader(tc.in)); err == nil {
				t.Fatalf("parse(%q) = nil error", tc.in)
			}
		})
	}
}

func TestRunNeedsStartUp(t *testing.T) {
	groups := summarize(map[key]map[string]float64{{"bin0", "run1", "1"}: {"task-clock": 3}})
	if err := report(&strings.Builder{}, groups, []string{"batch"}); err == nil {
		t.Fatal("a log without version runs was summarised")
	}
}
