package daemon

import (
	"context"
	"fmt"
	"strings"
)

// imeiLen is the IMEI's length: 8 digits TAC, 6 serial, 1 check (docs/modem.md §1.4).
const imeiLen = 15

// IMEI asks the modem for its IMEI (AT+CGSN=1 → +CGSN: "<imei>"), for the control socket's
// /v1/imei: a station lists it next to each attestation token, as Nordic's tools do.
func (d *Daemon) IMEI(ctx context.Context) (string, error) {
	m := d.currentModem()
	if m == nil {
		return "", fmt.Errorf("daemon: imei: %w", ErrNoModem)
	}
	resp, err := m.Command(ctx, "AT+CGSN=1")
	if err != nil {
		return "", fmt.Errorf("daemon: imei: %w", err)
	}
	for _, l := range resp.Lines {
		rest, ok := strings.CutPrefix(l, "+CGSN:")
		if !ok {
			continue
		}
		v := strings.Trim(strings.TrimSpace(rest), `"`)
		if len(v) != imeiLen || strings.Trim(v, "0123456789") != "" {
			return "", fmt.Errorf("daemon: imei: %q is not 15 digits", v)
		}
		return v, nil
	}
	return "", fmt.Errorf("daemon: imei: no +CGSN line in %q", resp.Raw)
}
