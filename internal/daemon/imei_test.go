package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/provisiond/provisiond/internal/atmodem"
)

func TestIMEI(t *testing.T) {
	tests := []struct {
		name    string
		answer  reply
		noModem bool
		want    string
		wantErr string
	}{
		{name: "quoted", answer: reply{lines: []string{`+CGSN: "351358811234565"`}}, want: "351358811234565"},
		{name: "no modem", noModem: true, wantErr: ErrNoModem.Error()},
		{name: "error", answer: reply{final: "ERROR"}, wantErr: "AT+CGSN=1"},
		{name: "not digits", answer: reply{lines: []string{`+CGSN: "35135881123456x"`}}, wantErr: "not 15 digits"},
		{name: "short", answer: reply{lines: []string{`+CGSN: "1234"`}}, wantErr: "not 15 digits"},
		{name: "no line", answer: reply{lines: []string{"351358811234565"}}, wantErr: "no +CGSN line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(), nil, nil)
			h.m.replies["AT+CGSN=1"] = tt.answer
			if !tt.noModem {
				h.d.mu.Lock()
				h.d.modem = h.m
				h.d.mu.Unlock()
			}
			got, err := h.d.IMEI(context.Background())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("IMEI = %q, %v; want an error with %q", got, err, tt.wantErr)
				}
				if tt.answer.final == "ERROR" && !errors.Is(err, atmodem.ErrError) {
					t.Errorf("error %v does not wrap the modem's ERROR", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("IMEI = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
