package fleet

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/provisiond/provisiond/internal/status"
)

// WriteTable writes s as the table of `provisiond list`, one row per instance; now makes
// times relative.
func WriteTable(w io.Writer, s Snapshot, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tPORT\tDEVICE UUID\tIMEI\tSTATE\tPROGRESS\tLAST\tNEXT\tWAITING\tREASON")
	for _, r := range s.Instances {
		st := r.Status
		if st == nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t%s\t-\t-\t-\t-\t%s\n", r.Instance, ClassUnreachable, r.Error)
			continue
		}
		last, reason := "-", ""
		if la := st.LastAttempt; la != nil {
			last, reason = string(la.Event), Reason(la)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Instance, dash(st.Port), dash(st.DeviceUUID),
			dash(r.IMEI), st.State, Progress(st.Progress), last, Next(st, now), st.OutboxPending, dash(reason))
	}
	return tw.Flush()
}

// WriteJSON writes s as `list --json` and GET /api/instances give it.
func WriteJSON(w io.Writer, s Snapshot) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

// Progress is the running attempt's place: "batch 2 cmd 3/7", or its step before the first
// batch; "-" between attempts.
func Progress(p *status.Progress) string {
	switch {
	case p == nil:
		return "-"
	case p.Batch > 0 && p.Commands > 0:
		return "batch " + strconv.Itoa(p.Batch) + " cmd " + strconv.Itoa(p.Command) + "/" + strconv.Itoa(p.Commands)
	case p.Step != "":
		return p.Step
	}
	return "attempt " + strconv.Itoa(p.Attempt)
}

// Reason is why an attempt ended as it did, on one line: the failed command first, as it
// names what to look at.
func Reason(a *status.Attempt) string {
	var parts []string
	if f := a.FailedCommand; f != nil {
		parts = append(parts, f.Command+": "+f.Error)
	}
	if a.Reason != "" {
		parts = append(parts, a.Reason)
	}
	return strings.Join(strings.Fields(strings.Join(parts, "; ")), " ")
}

// Next is when the next attempt is due, relative to now ("in 4m10s", "due"), "-" if none.
func Next(st *status.Daemon, now time.Time) string {
	if st.NextAttempt == nil || st.State == status.StateProvisioning {
		return "-"
	}
	d := st.NextAttempt.Sub(now).Truncate(time.Second)
	if d <= 0 {
		return "due"
	}
	return "in " + d.String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
