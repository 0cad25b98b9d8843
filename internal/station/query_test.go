package station

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/csv"
	"errors"
	"github.com/provisiond/provisiond/internal/status"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/attest"
	"github.com/provisiond/provisiond/internal/control"
)

// backend is a daemon as the control server sees it, with a modem of a given identity.
type backend struct {
	token, imei string
	err         error
}

func (b *backend) Status() status.Daemon                            { return status.Daemon{State: "idle"} }
func (b *backend) TriggerNow()                                      {}
func (b *backend) Interval() int                                    { return 60 }
func (b *backend) SetInterval(context.Context, int) error           { return nil }
func (b *backend) AttestationToken(context.Context) (string, error) { return b.token, b.err }
func (b *backend) DeviceUUID(context.Context) (string, error)       { return attest.DeviceUUID(b.token) }
func (b *backend) IMEI(context.Context) (string, error)             { return b.imei, b.err }

// newToken makes an attestation token for a fresh device UUID and returns both.
func newToken(t *testing.T) (token, uuid string) {
	t.Helper()
	key, err := attest.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	tok, err := attest.BuildToken(key, attest.Identity{MsgType: 1, DeviceUUID: raw, DeviceType: attest.DeviceTypeNRF9161})
	if err != nil {
		t.Fatal(err)
	}
	return tok, attest.FormatUUID(raw)
}

// serveControl runs the daemon's control server for b at path until the test ends.
func serveControl(t *testing.T, b control.Backend, path string) {
	t.Helper()
	ln, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- control.NewServer(b, nil, control.Limits{}).ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("control server: %v", err)
		}
	})
}

// hangingSocket accepts connections at path and never answers, like a daemon stuck in a
// system call; the connections close when the test ends.
func hangingSocket(t *testing.T, path string) {
	t.Helper()
	ln := listenUnix(t, path)
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
}

// TestReadDevicesAndCSV asks a station of four instances: two with a modem, one that hangs,
// one that is gone and one whose modem fails. The answering ones give their devices, the
// others say why not, and the CSV of the devices reads back as Nordic's claim_devices reads
// it.
func TestReadDevicesAndCSV(t *testing.T) {
	dir := t.TempDir()
	tok0, uuid0 := newToken(t)
	tok1, uuid1 := newToken(t)
	serveControl(t, &backend{token: tok0, imei: "351358811111118"}, filepath.Join(dir, "ttyACM0", SocketName))
	serveControl(t, &backend{token: tok1, imei: "351358812222226"}, filepath.Join(dir, SocketName))
	serveControl(t, &backend{err: errors.New("modem: no answer to AT%ATTESTTOKEN")}, filepath.Join(dir, "ttyACM3", SocketName))
	hangingSocket(t, filepath.Join(dir, "ttyACM1", SocketName))
	staleSocket(t, filepath.Join(dir, "ttyACM2", SocketName))

	insts, err := Discover(dir)
	if err != nil {
		t.Fatal(err)
	}
	read := time.Date(2026, 12, 2, 4, 5, 6, 789012345, time.FixedZone("CET", 3600))
	// Long enough for a healthy instance on a loaded machine or under qemu-user (make
	// test-arch), where 300 ms was missed; only the hanging instance waits it out.
	const timeout = 2 * time.Second
	results := Query(context.Background(), insts, timeout, func(ctx context.Context, in Instance) (Device, error) {
		return ReadDevice(ctx, in.Name, control.Dial(in.Socket), func() time.Time { return read })
	})

	wantErr := map[string]func(error) bool{
		"ttyACM1": func(err error) bool { return errors.Is(err, context.DeadlineExceeded) && Unreachable(err) },
		"ttyACM2": func(err error) bool { return errors.Is(err, control.ErrNotRunning) && Unreachable(err) },
		"ttyACM3": func(err error) bool {
			var ae *control.APIError
			return errors.As(err, &ae) && strings.Contains(ae.Message, "AT%ATTESTTOKEN") && !Unreachable(err)
		},
	}
	var devs []Device
	for _, r := range results {
		check, wantFail := wantErr[r.Instance.Name]
		switch {
		case wantFail && (r.Err == nil || !check(r.Err)):
			t.Errorf("%s: err %v, not the expected kind", r.Instance.Name, r.Err)
		case !wantFail && r.Err != nil:
			t.Errorf("%s: %v", r.Instance.Name, r.Err)
		case r.Err == nil:
			devs = append(devs, r.Value)
		}
	}
	if got := Describe(results[2].Err, timeout); got != "no answer within 2s" {
		t.Errorf("hanging instance described as %q", got)
	}
	if got := Describe(results[3].Err, timeout); !strings.HasPrefix(got, "gone") {
		t.Errorf("stale instance described as %q", got)
	}

	var buf bytes.Buffer
	if err := WriteCSV(&buf, devs); err != nil {
		t.Fatal(err)
	}
	// claim_devices: csv.reader(delimiter=','), then imei, uuid, attest_tok, date_time = row[:4].
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatalf("CSV does not parse: %v\n%s", err, buf.String())
	}
	want := [][]string{
		{"provisiond", "351358812222226", uuid1, tok1},
		{"ttyACM0", "351358811111118", uuid0, tok0},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d:\n%s", len(rows), len(want), buf.String())
	}
	for i, row := range rows {
		if len(row) != 4 {
			t.Fatalf("row %d has %d fields, want 4", i+1, len(row))
		}
		imei, uuid, tok, at := row[0], row[1], row[2], row[3]
		if imei != want[i][1] || uuid != want[i][2] || tok != want[i][3] {
			t.Errorf("row %d = %v, want the device of %s", i+1, row[:3], want[i][0])
		}
		// datetime.fromisoformat reads what isoformat wrote.
		ts, err := time.Parse("2006-01-02T15:04:05.999999-07:00", at)
		if err != nil || !ts.Equal(read.Truncate(time.Microsecond)) || !strings.HasSuffix(at, "+00:00") {
			t.Errorf("row %d time %q (%v), want %v in UTC", i+1, at, err, read)
		}
	}
}

func TestISOTime(t *testing.T) {
	tests := []struct {
		in   time.Time
		want string
	}{
		{time.Date(2026, 12, 2, 4, 5, 6, 789012345, time.UTC), "2026-12-02T04:05:06.789012+00:00"},
		{time.Date(2026, 12, 2, 4, 5, 6, 0, time.UTC), "2026-12-02T04:05:06+00:00"},
		{time.Date(2026, 12, 2, 4, 5, 6, 999, time.UTC), "2026-12-02T04:05:06+00:00"},
		{time.Date(2026, 12, 2, 5, 5, 6, 1000, time.FixedZone("CET", 3600)), "2026-12-02T04:05:06.000001+00:00"},
	}
	for _, tt := range tests {
		if got := isoTime(tt.in); got != tt.want {
			t.Errorf("isoTime(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestWriteCSVRefusesFieldsNeedingQuotes(t *testing.T) {
	tok, uuid := newToken(t)
	for _, d := range []Device{
		{Instance: "a", IMEI: "", UUID: uuid, Token: tok},
		{Instance: "b", IMEI: "3513588,1111118", UUID: uuid, Token: tok},
		{Instance: "c", IMEI: "351358811111118", UUID: uuid, Token: "x\ny"},
	} {
		var buf bytes.Buffer
		ok := Device{Instance: "ok", IMEI: "351358811111118", UUID: uuid, Token: tok}
		if err := WriteCSV(&buf, []Device{ok, d}); err == nil || buf.Len() != 0 {
			t.Errorf("%s: err %v, wrote %q; want an error and nothing written", d.Instance, err, buf.String())
		}
	}
}
