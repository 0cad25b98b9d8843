package testbed

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/simmodem"
)

// StationOptions describes a provisioning station: Boards simulated nRF91s plugged in at
// once, each with its own bench and provisiond instance, all talking to one service. Each
// instance's control socket is RunDir/ttyACM<i>/provisiond.sock, where `provisiond list`,
// `tokens`, `claim` and `dashboard --run-dir RunDir` find it.
type StationOptions struct {
	Boards int
	Bin    string // the provisiond binary
	RunDir string
	Cloud  *simcloud.Server // shared by every board; the caller starts and closes it
	Modem  simmodem.Config
	// Unclaimed leaves every device registered but unclaimed, for a station that claims
	// them itself.
	Unclaimed bool
	// Prepare, when set, runs on each board's bench before its instance starts (to queue its
	// job, say); it may run concurrently for different boards.
	Prepare func(*Bed) error
}

// Board is one simulated nRF91 on the station with its running instance.
type Board struct {
	Name string // ttyACM<i>: the instance's name in the run folder
	Bed  *Bed
	Proc *Process
}

// Station is the boards of PlugIn.
type Station struct {
	Boards []*Board
}

// PlugIn plugs every board in at once and starts its instance, and returns when every
// instance's modem answers. On error it unplugs what it started.
func PlugIn(ctx context.Context, o StationOptions) (*Station, error) {
	s := &Station{Boards: make([]*Board, o.Boards)}
	errs := make([]error, o.Boards)
	var wg sync.WaitGroup
	for i := range s.Boards {
		b := &Board{Name: fmt.Sprintf("ttyACM%d", i)}
		s.Boards[i] = b
		wg.Go(func() {
			var err error
			defer func() {
				if err != nil {
					errs[i] = fmt.Errorf("%s: %w", b.Name, err)
				}
			}()
			b.Bed, err = Start(ctx, Options{Unclaimed: o.Unclaimed, SharedCloud: o.Cloud, Modem: o.Modem,
				Settings: map[string]any{"control.socket": filepath.Join(o.RunDir, b.Name, "provisiond.sock")}})
			if err != nil {
				return
			}
			if o.Prepare != nil {
				if err = o.Prepare(b.Bed); err != nil {
					return
				}
			}
			if b.Proc, err = b.Bed.Start(ctx, o.Bin, nil, "run"); err != nil {
				return
			}
			_, _, err = b.Proc.WaitLog(ctx, 0, func(e LogEntry) bool { return e.MsgID() == "modem-answering" })
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close stops every instance and unplugs its board.
func (s *Station) Close() {
	for _, b := range s.Boards {
		if b.Proc != nil {
			_ = b.Proc.Kill()
			<-b.Proc.Done()
		}
		if b.Bed != nil {
			_ = b.Bed.Close()
		}
	}
}
