package control

import (
	"context"
	"errors"
	"net/http"
	"testing"
)

// imeiBackend is a fakeBackend that can also read the IMEI.
type imeiBackend struct {
	fakeBackend
	imei string
}

func (b *imeiBackend) IMEI(context.Context) (string, error) { return b.imei, b.err }

func TestIMEI(t *testing.T) {
	tests := []struct {
		name       string
		b          Backend
		want       string
		wantStatus int // 0: success
	}{
		{"backend reads it", &imeiBackend{imei: "351358811234565"}, "351358811234565", 0},
		{"modem fails", &imeiBackend{fakeBackend: fakeBackend{err: errors.New("modem: timeout")}}, "", http.StatusBadGateway},
		{"backend without IMEI", &fakeBackend{}, "", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Dial(serve(t, tt.b)).IMEI(context.Background())
			if tt.wantStatus == 0 {
				if err != nil || got != tt.want {
					t.Fatalf("IMEI = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.Status != tt.wantStatus {
				t.Fatalf("IMEI error = %v, want an APIError with status %d", err, tt.wantStatus)
			}
		})
	}
}
