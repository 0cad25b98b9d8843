package simmodem

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseTiming(t *testing.T) {
	tests := []struct {
		spec    string
		want    Timing
		wantErr bool
	}{
		{spec: "zero", want: Timing{}},
		{spec: "", want: Timing{}},
		{spec: "typical", want: TypicalTiming},
		{spec: "testdata/timing.yaml", want: Timing{KeyGen: 2 * time.Second, CMNGWrite: 100 * time.Millisecond,
			CMNGWritePerKiB: time.Second, Read: time.Millisecond}},
		{spec: "testdata/timing.json", want: Timing{JWT: 250 * time.Millisecond, CFUNOffline: 3 * time.Second}},
		{spec: "testdata/timing-typo.yaml", wantErr: true},
		{spec: "testdata/timing-negative.yaml", wantErr: true},
		{spec: "testdata/missing.yaml", wantErr: true},
		{spec: "fast", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := ParseTiming(tt.spec)
			if tt.wantErr {
				if !errors.Is(err, ErrTiming) {
					t.Fatalf("ParseTiming(%q) error = %v, want ErrTiming", tt.spec, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseTiming(%q) = %+v, %v; want %+v", tt.spec, got, err, tt.want)
			}
		})
	}
}

func TestTimingFor(t *testing.T) {
	// Distinct values per class, so a wrong mapping shows as a wrong duration.
	p := Timing{
		Read: 1, Set: 2, CFUNOffline: 3, CFUNOnline: 4, KeyGen: 5, CMNGWrite: 6,
		CMNGWritePerKiB: 1024, CMNGOther: 8, JWT: 9, AttestToken: 10,
	}
	long := `AT%CMNG=0,42,0,"` + strings.Repeat("A", 2000) + `"`
	tests := []struct {
		cmd  string
		want time.Duration
	}{
		{"AT", 1},
		{"AT+CGSN", 1},
		{"AT%XMODEMUUID", 1},
		{"AT+CFUN?", 1},
		{"at+cclk?", 1},
		{"AT%KEYGEN=?", 1},
		{"AT+CMEE=1", 2},
		{"ATE0", 2},
		{"AT+CFUN=4", 3},
		{"AT+CFUN=0", 3},
		{"AT+CFUN=1", 4},
		{"AT+CFUN=21", 4},
		{"AT%KEYGEN=16842753,2,0", 5},
		{`AT%CMNG=0,16842753,0,"abc"`, 6 + time.Duration(len(`AT%CMNG=0,16842753,0,"abc"`))},
		{long, 6 + time.Duration(len(long))},
		{"AT%CMNG=1", 8},
		{"AT%CMNG=3,16842753,0", 8},
		{"AT%JWT=0,600", 9},
		{"AT%ATTESTTOKEN", 10},
		{"at%attesttoken", 10},
		{"garbage", 2},
	}
	for _, tt := range tests {
		if got := p.For(tt.cmd); got != tt.want {
			t.Errorf("For(%.30q) = %d, want %d", tt.cmd, got, tt.want)
		}
	}
	if got := (Timing{}).For("AT%KEYGEN=1,2,0"); got != 0 {
		t.Errorf("zero profile: For = %v, want 0", got)
	}
}
