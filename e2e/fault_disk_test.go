package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/testbed"
)

// stateDisk is the folder of the daemon's store, on a file system of its own so that a test
// can make it read-only or full without touching anything else.
type stateDisk struct {
	dir     string
	mounted bool // a tmpfs (root); otherwise permission bits (read-only only)
	filler  string
}

// newStateDisk puts the bench's state folder on a small tmpfs. As root it mounts one (and
// skips the test when the kernel refuses, e.g. without CAP_SYS_ADMIN in a container); as
// another user it can only make the folder read-only through its permissions, and a test that
// needs a full disk is skipped.
func newStateDisk(t *testing.T, b *testbed.Bed, needFull bool) *stateDisk {
	t.Helper()
	d := &stateDisk{dir: filepath.Dir(b.StorePath())}
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		if needFull {
			t.Skip("a full disk needs a tmpfs mount, which needs root")
		}
		t.Cleanup(func() { _ = os.Chmod(d.dir, 0o700) })
		return d
	}
	if err := syscall.Mount("tmpfs", d.dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=256k,mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs for the state folder (%v): read-only and full-disk faults need one as root", err)
	}
	d.mounted = true
	t.Cleanup(func() {
		if err := syscall.Unmount(d.dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", d.dir, err)
		}
	})
	return d
}

// readOnly makes the state folder read-only (true) or writable again.
func (d *stateDisk) readOnly(t *testing.T, ro bool) {
	t.Helper()
	if !d.mounted {
		mode := os.FileMode(0o700)
		if ro {
			mode = 0o500
		}
		if err := os.Chmod(d.dir, mode); err != nil {
			t.Fatal(err)
		}
		return
	}
	flags := uintptr(syscall.MS_REMOUNT | syscall.MS_NOSUID | syscall.MS_NODEV)
	if ro {
		flags |= syscall.MS_RDONLY
	}
	if err := syscall.Mount("tmpfs", d.dir, "tmpfs", flags, "size=256k,mode=0700"); err != nil {
		t.Fatalf("remount %s (read-only %v): %v", d.dir, ro, err)
	}
}

// fill takes every free byte of the state folder's file system (full) or gives them back.
func (d *stateDisk) fill(t *testing.T, full bool) {
	t.Helper()
	if !full {
		if err := os.Remove(d.filler); err != nil {
			t.Fatal(err)
		}
		return
	}
	d.filler = filepath.Join(d.dir, "filler")
	f, err := os.Create(d.filler)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 512)
	for {
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}

// TestFaultStateFolder: the state folder is read-only or full, from the start or from the
// middle of a job. The daemon runs no command it could not record (it does not even take the
// modem offline without saving its mode), says why in a log line, and once the disk is back
// the job completes with every command run once and every result reported. A folder that
// fills up after the first upload stops nothing: the store's slot file exists by then and its
// writes need no new block (internal/store); the job completes and only the settings file's
// checkpoint fails, with a warning.
func TestFaultStateFolder(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		full     bool // else read-only
		midJob   bool // the fault strikes after the first batch was uploaded
		wantText string
	}{
		{name: "read-only from the start", wantText: "read-only file system"},
		{name: "read-only after the first upload", midJob: true, wantText: "read-only file system"},
		{name: "full from the start", full: true, wantText: "no space left on device"},
		{name: "full after the first upload", full: true, midJob: true, wantText: "no space left on device"},
	}
	for i, tt := range tests {
		for _, tr := range rowTransports(i) {
			t.Run(tr+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t)
				b := newBed(t, ctx, testbed.Options{Transport: tr, InitialMode: 1})
				disk := newStateDisk(t, b, tt.full)
				if !disk.mounted && tt.full {
					return
				}
				if !disk.mounted {
					tt.wantText = "permission denied"
				}
				queue(t, b, testbed.RealisticJob()...)
				strike := func() {
					if tt.full {
						disk.fill(t, true)
					} else {
						disk.readOnly(t, true)
					}
				}
				var p *testbed.Process
				if tt.midJob {
					// The service holds the first upload a moment; the fault strikes meanwhile,
					// so the cursor after it can no longer be saved, nor the next batch's state.
					setFault(t, b, simcloud.Fault{Kind: simcloud.FaultSlow, Count: 1, Op: simcloud.OpUpload, Delay: 300 * time.Millisecond})
					p = start(t, ctx, b, "run", "--once")
					waitFaultsSpent(t, ctx, b)
					strike()
				} else {
					strike()
					p = start(t, ctx, b, "run", "--once")
				}
				inPlace := tt.full && tt.midJob
				code, err := p.Wait(ctx)
				if inPlace && (err != nil || code != 0) {
					t.Errorf("run --once on a disk that filled up mid-job: exit %d, %v; want 0 (every write in place)", code, err)
				}
				if !inPlace && (err != nil || code == 0) {
					t.Errorf("run --once on a broken disk: exit %d, %v; want non-zero", code, err)
				}
				if !strings.Contains(strings.ToLower(p.Stderr()), tt.wantText) {
					t.Errorf("no log line says %q:\n%s", tt.wantText, p.Stderr())
				}
				if got := b.Modem().FunctionalMode(); got != 1 {
					t.Errorf("modem mode %d with the disk broken, want 1 (never taken offline unrecorded)", got)
				}
				cmds := mustCommands(t, b)
				switch {
				case inPlace:
					checkExecutedTimes(t, b, cmds, 1)
				case tt.midJob:
					checkExecutedTimes(t, b, cmds[:3], 1) // the first batch, before the fault
					checkExecutedTimes(t, b, cmds[3:4], 0)
				default:
					checkExecutedTimes(t, b, cmds, 0)
				}
				if _, err := b.Settings(ctx, provisiond); err != nil {
					t.Errorf("store unreadable with the disk broken: %v", err)
				}

				if tt.full {
					disk.fill(t, false)
				} else {
					disk.readOnly(t, false)
				}
				recoverAll(t, ctx, b)
				invariants(t, ctx, b, 1)
				jobDone(t, b)
			})
		}
	}
}
