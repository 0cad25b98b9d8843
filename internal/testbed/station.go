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
	for i := range s.Boards {
		s.Boards[i] = &Board{Name: fmt.Sprintf("ttyACM%d", i)}
	}
	err := s.Each(func(b *Board) error {
		var err error
		b.Bed, err = Start(ctx, Options{Unclaimed: o.Unclaimed, SharedCloud: o.Cloud, Modem: o.Modem,
			Settings: map[string]any{"control.socket": filepath.Join(o.RunDir, b.Name, "provisiond.sock")}})
		if err != nil {
			return err
		}
		if o.Prepare != nil {
			if err := o.Prepare(b.Bed); err != nil {
				return err
			}
		}
		if b.Proc, err = b.Bed.Start(ctx, o.Bin, nil, "run"); err != nil {
			return err
		}
		_, _, err = b.Proc.WaitLog(ctx, 0, func(e LogEntry) bool { return e.MsgID() == "modem-answering" })
		return err
	})
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Each runs f on every board at once and returns when all are done, with the errors joined,
// each named by its board.
func (s *Station) Each(f func(*Board) error) error {
	errs := make([]error, len(s.Boards))
	var wg sync.WaitGroup
	for i, b := range s.Boards {
		wg.Go(func() {
			if err := f(b); err != nil {
				errs[i] = fmt.Errorf("%s: %w", b.Name, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
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
