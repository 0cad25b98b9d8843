package station

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/ownerapi"
)

// fakeAPI answers bulk claims with res or err and dry runs from dry (by token).
type fakeAPI struct {
	res   ownerapi.BulkResult
	err   error
	dry   map[string]error
	calls [][]ownerapi.ClaimRow
}

func (f *fakeAPI) BulkClaim(_ context.Context, rows []ownerapi.ClaimRow) (ownerapi.BulkResult, error) {
	f.calls = append(f.calls, rows)
	return f.res, f.err
}

func (f *fakeAPI) DryRun(_ context.Context, token string) error { return f.dry[token] }

func devices(n int) []Device {
	var out []Device
	for i := range n {
		out = append(out, Device{Instance: fmt.Sprintf("ttyACM%d", i), IMEI: fmt.Sprintf("35135881000000%d", i),
			UUID: fmt.Sprintf("00000000-0000-4000-8000-00000000000%d", i), Token: fmt.Sprintf("tok%d.cose", i)})
	}
	return out
}

func TestClaim(t *testing.T) {
	devs := devices(3)
	type line struct {
		outcome Outcome
		reason  string
	}
	tests := []struct {
		name string
		api  fakeAPI
		want []line
	}{
		{"all claimed", fakeAPI{res: ownerapi.BulkResult{ClaimedIDs: []string{devs[0].UUID, devs[1].UUID, devs[2].UUID}}},
			[]line{{Claimed, ""}, {Claimed, ""}, {Claimed, ""}}},
		{"partial failure", fakeAPI{res: ownerapi.BulkResult{ClaimedIDs: []string{devs[0].UUID},
			Failed: []ownerapi.BulkFailure{{Row: 2, Reason: "simcloud: claim x: device already claimed"}, {Row: 3, Reason: "unknown device"}}}},
			[]line{{Claimed, ""}, {AlreadyClaimed, "simcloud: claim x: device already claimed"}, {Failed, "unknown device"}}},
		{"answer leaves a device out", fakeAPI{res: ownerapi.BulkResult{ClaimedIDs: []string{devs[0].UUID, devs[2].UUID}}},
			[]line{{Claimed, ""}, {Failed, "the service's answer names neither this device nor its row"}, {Claimed, ""}}},
		{"bad key", fakeAPI{err: &ownerapi.APIError{Op: "POST /v1/claimed-devices", Status: http.StatusUnauthorized, Message: "missing or wrong API key"}},
			[]line{{Failed, "owner API: POST /v1/claimed-devices: 401 Unauthorized: missing or wrong API key"},
				{Failed, "owner API: POST /v1/claimed-devices: 401 Unauthorized: missing or wrong API key"},
				{Failed, "owner API: POST /v1/claimed-devices: 401 Unauthorized: missing or wrong API key"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reports := Claim(context.Background(), &tt.api, devs, []string{"nrf-cloud-onboarding", "line-2"})
			if len(tt.api.calls) != 1 {
				t.Fatalf("%d bulk calls, want 1", len(tt.api.calls))
			}
			for i, row := range tt.api.calls[0] {
				if row.Token != devs[i].Token || !reflect.DeepEqual(row.Tags, []string{"nrf-cloud-onboarding", "line-2"}) {
					t.Errorf("row %d = %+v, want device %d's token with the tags", i+1, row, i)
				}
			}
			var got []line
			for i, r := range reports {
				if r.Instance != devs[i].Instance || r.UUID != devs[i].UUID || r.IMEI != devs[i].IMEI {
					t.Errorf("report %d is for %+v, want device %d", i, r, i)
				}
				got = append(got, line{r.Outcome, r.Reason})
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("reports %v, want %v", got, tt.want)
			}
		})
	}
}

func TestClaimSplitsAtTheServiceLimit(t *testing.T) {
	devs := make([]Device, ownerapi.MaxBulkRows+1)
	api := &fakeAPI{}
	Claim(context.Background(), api, devs, nil)
	if len(api.calls) != 2 || len(api.calls[0]) != ownerapi.MaxBulkRows || len(api.calls[1]) != 1 {
		t.Fatalf("%d calls for %d devices, want %d rows then 1", len(api.calls), len(devs), ownerapi.MaxBulkRows)
	}
}

func TestDryRun(t *testing.T) {
	devs := devices(4)
	api := &fakeAPI{dry: map[string]error{
		devs[1].Token: &ownerapi.APIError{Status: http.StatusConflict, Message: "device already claimed"},
		devs[2].Token: &ownerapi.APIError{Status: http.StatusNotFound, Message: "unknown device"},
		devs[3].Token: errors.New("ownerapi: POST /v1/claimed-devices: connection refused"),
	}}
	var got []string
	for _, r := range DryRun(context.Background(), api, devs) {
		got = append(got, string(r.Outcome)+": "+r.Reason)
	}
	want := []string{"claimable: ", "already claimed: device already claimed", "failed: unknown device",
		"failed: ownerapi: POST /v1/claimed-devices: connection refused"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("dry run %q, want %q", got, want)
	}
	if len(api.calls) != 0 {
		t.Fatal("a dry run made a bulk claim")
	}
}

func TestWriteReport(t *testing.T) {
	reports := []ClaimReport{
		{Instance: "ttyACM0", IMEI: "351358811111118", UUID: "u0", Outcome: Claimed},
		{Instance: "ttyACM1", IMEI: "351358812222226", UUID: "u1", Outcome: AlreadyClaimed, Reason: "device already claimed"},
	}
	results := []Result[Device]{{Instance: Instance{Name: "ttyACM2"}, Err: context.DeadlineExceeded}}
	reports = append(reports, Unread(results, time.Second)...)
	var buf bytes.Buffer
	failed, err := WriteReport(&buf, reports)
	if err != nil || failed != 1 {
		t.Fatalf("WriteReport: %d failed, %v; want 1", failed, err)
	}
	out := buf.String()
	for _, want := range []string{
		"ttyACM1   351358812222226  u1    already claimed  device already claimed",
		"ttyACM2   -                -     failed           no attestation token: no answer within 1s",
		"3 device(s): 1 claimed, 1 already claimed, 1 failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
