// Package fleet is the station's view of its instances as people and monitoring read it: one
// row per instance built from its control socket's status (package status), rendered as the
// table and JSON of `provisiond list`, as Prometheus text exposition, and as the live page of
// `provisiond dashboard`. It asks the instances through package station, so
// an instance that hangs or is gone shows as such and never holds up the others.
package fleet

import (
	"context"
	"sync"
	"time"

	"github.com/provisiond/provisiond/internal/station"
	"github.com/provisiond/provisiond/internal/status"
)

// Source is what a row needs of an instance; the control client provides it.
type Source interface {
	Status(ctx context.Context) (status.Daemon, error)
	IMEI(ctx context.Context) (string, error)
}

// Row is one instance as `list --json` and GET /api/instances give it.
type Row struct {
	Instance string `json:"instance"`
	Socket   string `json:"socket"`
	// Error says why the instance gave no status ("no answer within 1s", "gone: …"); Status
	// is nil then.
	Error string `json:"error,omitempty"`
	// IMEI is read once per instance and device; empty until the instance was idle once.
	IMEI   string         `json:"imei,omitempty"`
	Status *status.Daemon `json:"status,omitempty"`
}

// Snapshot is every instance of the station at one time.
type Snapshot struct {
	Time      time.Time `json:"time"`
	Instances []Row     `json:"instances"`
}

// Collector reads snapshots. The IMEI costs the instance an AT command and waits for a
// running attempt to free the modem, so it is asked only of an instance that is not
// provisioning and then kept for that instance's device UUID: a busy instance shows no IMEI
// until it is idle once. Safe for concurrent use.
type Collector struct {
	RunDir  string
	Only    string        // one instance's name, or "" for all
	Timeout time.Duration // per instance; station.QueryTimeout when 0
	Dial    func(socket string) Source
	Now     func() time.Time

	mu   sync.Mutex
	imei map[string]imeiEntry // by instance name
}

type imeiEntry struct{ uuid, imei string }

// Collect asks every instance at once. The error is only for a run folder without
// instances (station.ErrNoInstances) or an unknown Only.
func (c *Collector) Collect(ctx context.Context) (Snapshot, error) {
	all, err := station.Discover(c.RunDir)
	if err != nil {
		return Snapshot{}, err
	}
	insts, err := station.Select(all, c.Only)
	if err != nil {
		return Snapshot{}, err
	}
	timeout := c.timeout()
	results := station.Query(ctx, insts, timeout, func(ctx context.Context, in station.Instance) (Row, error) {
		return c.row(ctx, in)
	})
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	snap := Snapshot{Time: now().UTC(), Instances: make([]Row, len(results))}
	for i, r := range results {
		row := r.Value
		row.Instance, row.Socket = r.Instance.Name, r.Instance.Socket
		if r.Err != nil {
			row = Row{Instance: r.Instance.Name, Socket: r.Instance.Socket, Error: station.Describe(r.Err, timeout)}
		}
		snap.Instances[i] = row
	}
	return snap, nil
}

func (c *Collector) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return station.QueryTimeout
}

func (c *Collector) row(ctx context.Context, in station.Instance) (Row, error) {
	src := c.Dial(in.Socket)
	st, err := src.Status(ctx)
	if err != nil {
		return Row{}, err
	}
	row := Row{Status: &st}
	c.mu.Lock()
	e, ok := c.imei[in.Name]
	c.mu.Unlock()
	switch {
	case ok && e.uuid == st.DeviceUUID:
		row.IMEI = e.imei
	case st.State != status.StateProvisioning && st.State != status.StateWaitingForModem && st.DeviceUUID != "":
		// A failure leaves the column empty; the status is what the row is for.
		if imei, err := src.IMEI(ctx); err == nil && imei != "" {
			row.IMEI = imei
			c.mu.Lock()
			if c.imei == nil {
				c.imei = make(map[string]imeiEntry)
			}
			c.imei[in.Name] = imeiEntry{uuid: st.DeviceUUID, imei: imei}
			c.mu.Unlock()
		}
	}
	return row, nil
}

// Class is how a tile and the header count an instance.
type Class string

const (
	ClassDone        Class = "done"        // the last attempt succeeded and none runs
	ClassRunning     Class = "running"     // an attempt runs
	ClassFailed      Class = "failed"      // the last attempt failed
	ClassWaiting     Class = "waiting"     // no attempt yet, or waiting for the modem
	ClassUnreachable Class = "unreachable" // no status: hanging or gone
)

// Classify says which class r is in.
func Classify(r Row) Class {
	st := r.Status
	switch {
	case st == nil:
		return ClassUnreachable
	case st.State == status.StateProvisioning:
		return ClassRunning
	case st.LastAttempt == nil:
		return ClassWaiting
	case !st.LastAttempt.Succeeded():
		return ClassFailed
	case st.State == status.StateWaitingForModem:
		return ClassWaiting
	}
	return ClassDone
}

// Counts is the header of the page: how many instances are in each class.
type Counts struct {
	Done        int `json:"done"`
	Running     int `json:"running"`
	Failed      int `json:"failed"`
	Waiting     int `json:"waiting"`
	Unreachable int `json:"unreachable"`
}

// Count classifies every row of s.
func Count(s Snapshot) Counts {
	var c Counts
	for _, r := range s.Instances {
		switch Classify(r) {
		case ClassDone:
			c.Done++
		case ClassRunning:
			c.Running++
		case ClassFailed:
			c.Failed++
		case ClassWaiting:
			c.Waiting++
		case ClassUnreachable:
			c.Unreachable++
		}
	}
	return c
}

// Exit codes of `provisiond list`.
const (
	ExitOK       = 0 // every last attempt succeeded, or none ran yet
	ExitFailed   = 1 // some last attempt failed, or some instance gave no status
	ExitNoneSeen = 2 // no instance gave a status
)

// ExitCode is the exit code of `provisiond list` for s. An instance that gave no status
// counts as failed: its last attempt is not known to have succeeded.
func ExitCode(s Snapshot) int {
	reached, failed := 0, false
	for _, r := range s.Instances {
		if r.Status == nil {
			failed = true
			continue
		}
		reached++
		if la := r.Status.LastAttempt; la != nil && !la.Succeeded() {
			failed = true
		}
	}
	switch {
	case reached == 0:
		return ExitNoneSeen
	case failed:
		return ExitFailed
	}
	return ExitOK
}
