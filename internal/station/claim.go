package station

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/provisiond/provisiond/internal/ownerapi"
)

// Outcome is what became of one device in a claim.
type Outcome string

// Outcomes of a claim and of a dry run.
const (
	Claimed        Outcome = "claimed"
	AlreadyClaimed Outcome = "already claimed"
	Claimable      Outcome = "claimable" // dry run: the service would claim it
	Failed         Outcome = "failed"
)

// ClaimReport is one device's line of a claim: the instance it sits on, what it is, what
// happened and the service's reason.
type ClaimReport struct {
	Instance string
	IMEI     string
	UUID     string
	Outcome  Outcome
	Reason   string
}

// OwnerAPI is what claiming needs of the owner API; *ownerapi.Client provides it.
type OwnerAPI interface {
	BulkClaim(ctx context.Context, rows []ownerapi.ClaimRow) (ownerapi.BulkResult, error)
	DryRun(ctx context.Context, token string) error
}

// Claim claims devs with tags in bulk calls of at most ownerapi.MaxBulkRows rows (one call
// for any real station) and reports each device. A call that fails as a whole (a wrong key,
// no network) fails each of its devices with that reason.
func Claim(ctx context.Context, api OwnerAPI, devs []Device, tags []string) []ClaimReport {
	var out []ClaimReport
	for batch := range slices.Chunk(devs, ownerapi.MaxBulkRows) {
		rows := make([]ownerapi.ClaimRow, len(batch))
		for i, d := range batch {
			rows[i] = ownerapi.ClaimRow{Token: d.Token, Tags: tags}
		}
		res, err := api.BulkClaim(ctx, rows)
		failedRows := map[int]string{}
		for _, f := range res.Failed {
			failedRows[f.Row] = f.Reason
		}
		for i, d := range batch {
			r := ClaimReport{Instance: d.Instance, IMEI: d.IMEI, UUID: d.UUID}
			reason, failed := failedRows[i+1]
			switch {
			case err != nil:
				r.Outcome, r.Reason = Failed, err.Error()
			case failed && alreadyClaimed(reason):
				r.Outcome, r.Reason = AlreadyClaimed, reason
			case failed:
				r.Outcome, r.Reason = Failed, reason
			case slices.Contains(res.ClaimedIDs, d.UUID):
				r.Outcome = Claimed
			default:
				r.Outcome, r.Reason = Failed, "the service's answer names neither this device nor its row"
			}
			out = append(out, r)
		}
	}
	return out
}

// DryRun asks the service, device by device, whether it would claim each of devs.
func DryRun(ctx context.Context, api OwnerAPI, devs []Device) []ClaimReport {
	out := make([]ClaimReport, 0, len(devs))
	for _, d := range devs {
		r := ClaimReport{Instance: d.Instance, IMEI: d.IMEI, UUID: d.UUID, Outcome: Claimable}
		if err := api.DryRun(ctx, d.Token); err != nil {
			r.Outcome, r.Reason = Failed, err.Error()
			var ae *ownerapi.APIError
			if errors.As(err, &ae) {
				r.Reason = ae.Message
				if ae.Status == http.StatusConflict || alreadyClaimed(ae.Message) {
					r.Outcome = AlreadyClaimed
				}
			}
		}
		out = append(out, r)
	}
	return out
}

// alreadyClaimed recognises the reason the service gives for a device claimed before; a bulk
// answer carries no status per row, only the reason's text.
func alreadyClaimed(reason string) bool {
	return strings.Contains(strings.ToLower(reason), "already claimed")
}

// Unread turns the instances that gave no device into failed reports, so that a claim
// accounts for every instance of the station.
func Unread(results []Result[Device], timeout time.Duration) []ClaimReport {
	var out []ClaimReport
	for _, r := range results {
		if r.Err != nil {
			out = append(out, ClaimReport{Instance: r.Instance.Name, Outcome: Failed,
				Reason: "no attestation token: " + Describe(r.Err, timeout)})
		}
	}
	return out
}

// WriteReport writes reports as a table with a summary line, and returns how many failed.
func WriteReport(w io.Writer, reports []ClaimReport) (failed int, err error) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tIMEI\tUUID\tRESULT\tREASON")
	counts := map[Outcome]int{}
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, r := range reports {
		counts[r.Outcome]++
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Instance, dash(r.IMEI), dash(r.UUID), r.Outcome, dash(r.Reason))
	}
	if err := tw.Flush(); err != nil {
		return counts[Failed], err
	}
	var parts []string
	for _, o := range []Outcome{Claimed, Claimable, AlreadyClaimed, Failed} {
		if n := counts[o]; n > 0 || o == Failed {
			parts = append(parts, fmt.Sprintf("%d %s", n, o))
		}
	}
	_, err = fmt.Fprintf(w, "%d device(s): %s\n", len(reports), strings.Join(parts, ", "))
	return counts[Failed], err
}
