package station

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/provisiond/provisiond/internal/attest"
)

// TokenSource is what reading a device's identity needs of an instance; the control client
// provides it.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
	IMEI(ctx context.Context) (string, error)
}

// Device is one attached modem's identity, read through its instance.
type Device struct {
	Instance string
	IMEI     string
	UUID     string // from the token, as Nordic's tools take it
	Token    string
	Time     time.Time // when the token was read
}

// ReadDevice asks src for the token and the IMEI at the same time and takes the device UUID
// from the token. now stamps the reading.
func ReadDevice(ctx context.Context, name string, src TokenSource, now func() time.Time) (Device, error) {
	type answer struct {
		v   string
		err error
	}
	imeiCh := make(chan answer, 1)
	go func() {
		v, err := src.IMEI(ctx)
		imeiCh <- answer{v, err}
	}()
	tok, tokErr := src.Token(ctx)
	imei := <-imeiCh
	if err := errors.Join(tokErr, imei.err); err != nil {
		return Device{}, err
	}
	id, err := attest.DeviceUUID(tok)
	if err != nil {
		return Device{}, fmt.Errorf("station: the modem's attestation token: %w", err)
	}
	return Device{Instance: name, IMEI: imei.v, UUID: id, Token: tok, Time: now().UTC()}, nil
}

// WriteCSV writes one row per device as Nordic's gather_attestation_tokens writes them and its
// claim_devices reads them: imei,uuid,token,time with the time in UTC as Python's
// datetime.isoformat() gives it, no header, no quotes, "\n" after each row. A field that would
// need quoting cannot be written that way and is an error; nothing is written then.
func WriteCSV(w io.Writer, devs []Device) error {
	var b strings.Builder
	for _, d := range devs {
		fields := []string{d.IMEI, d.UUID, d.Token}
		for _, f := range fields {
			if f == "" || strings.ContainsAny(f, ",\"\r\n") {
				return fmt.Errorf("station: %s: %q cannot be a field of an unquoted CSV row", d.Instance, f)
			}
		}
		fmt.Fprintf(&b, "%s,%s\n", strings.Join(fields, ","), isoTime(d.Time))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// isoTime formats t in UTC as Python's datetime.isoformat() formats an aware UTC datetime:
// microseconds only when there are any, and +00:00 rather than Z.
func isoTime(t time.Time) string {
	t = t.UTC().Truncate(time.Microsecond)
	if t.Nanosecond() == 0 {
		return t.Format("2006-01-02T15:04:05+00:00")
	}
	return t.Format("2006-01-02T15:04:05.000000+00:00")
}

// WriteTable writes the devices, and the instances that gave none, as a table for a person.
func WriteTable(w io.Writer, results []Result[Device], timeout time.Duration) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tIMEI\tUUID\tTOKEN")
	for _, r := range results {
		if r.Err != nil {
			fmt.Fprintf(tw, "%s\t-\t-\t%s\n", r.Instance.Name, Describe(r.Err, timeout))
			continue
		}
		d := r.Value
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Instance.Name, d.IMEI, d.UUID, d.Token)
	}
	return tw.Flush()
}
