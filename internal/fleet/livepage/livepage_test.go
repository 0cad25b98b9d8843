package livepage_test

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/fleet"
	"github.com/provisiond/provisiond/internal/fleet/livepage"
	"github.com/provisiond/provisiond/internal/status"
)

// source is an instance whose status the test sets.
type source struct {
	mu sync.Mutex
	st status.Daemon
}

func (s *source) Status(context.Context) (status.Daemon, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st, nil
}

func (s *source) IMEI(context.Context) (string, error) { return "351358811111111", nil }

func (s *source) set(st status.Daemon) {
	s.mu.Lock()
	s.st = st
	s.mu.Unlock()
}

func running() status.Daemon {
	return status.Daemon{Port: "/dev/ttyACM0", State: status.StateProvisioning, DeviceUUID: "u-a", Attempts: 1,
		Progress: &status.Progress{Attempt: 1, Step: "executing commands", Batch: 1, Command: 2, Commands: 4}}
}

func done() status.Daemon {
	fin := time.Now().Add(-time.Second)
	return status.Daemon{Port: "/dev/ttyACM0", State: status.StateIdle, DeviceUUID: "u-a", Attempts: 1,
		LastAttempt: &status.Attempt{Number: 1, Event: "DONE", Executed: 4, Finished: fin},
		Events:      []status.Event{{Event: "START"}, {Event: "DONE", Time: fin}, {Event: "STOP"}}}
}

// TestPageFollowsTheStream opens the dashboard's page once: the tile of an instance that
// finishes changes in place, the observer logs the change, and a reload is seen as one.
func TestPageFollowsTheStream(t *testing.T) {
	bin, err := livepage.Find()
	if err != nil {
		t.Skipf("%v: the page is not checked in a browser (apt-get install chromium)", err)
	}
	a, b := &source{st: running()}, &source{st: done()}
	dir := t.TempDir()
	srcs := map[string]*source{"a": a, "b": b}
	for name := range srcs {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "provisiond.sock"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d := &fleet.Dashboard{Interval: 20 * time.Millisecond, Collector: &fleet.Collector{RunDir: dir,
		Dial: func(socket string) fleet.Source { return srcs[filepath.Base(filepath.Dir(socket))] }}}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	go d.Poll(ctx)

	p, err := livepage.Open(ctx, livepage.Config{Chromium: bin, Width: 800, Height: 600}, srv.URL+"/")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.WaitFor(ctx, `document.querySelectorAll("#tiles .tile").length === 2`, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.MarkWindow(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Watch(ctx); err != nil {
		t.Fatal(err)
	}
	tiles, err := p.Tiles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []livepage.Tile{{Instance: "a", Class: "running", Word: "running"},
		{Instance: "b", Class: "done", Word: "done", Last: "last: DONE", OK: 1}}
	if len(tiles) != 2 || tiles[0] != want[0] || tiles[1] != want[1] {
		t.Fatalf("tiles %+v, want %+v", tiles, want)
	}

	changed := time.Now()
	a.set(done())
	if err := p.WaitFor(ctx, `document.querySelector('.tile[data-instance="a"]').dataset.class === "done"`, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	changes, err := p.Changes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// What the page showed when Watch began, then a's change.
	if len(changes) != 3 || changes[2].Instance != "a" || changes[2].Class != "done" || changes[2].Last != "last: DONE" ||
		changes[2].OK != 1 || time.UnixMilli(changes[2].At).Before(changed.Truncate(time.Millisecond)) {
		t.Fatalf("changes %+v, want b and a as first seen, then a done after %v", changes, changed)
	}
	if same, err := p.SameDocument(ctx); err != nil || !same {
		t.Fatalf("same document %v (%v) before any reload", same, err)
	}
	if err := p.Screenshot(ctx, filepath.Join(t.TempDir(), "page.png")); err != nil {
		t.Fatal(err)
	}

	// A reload loses the marker: SameDocument must notice it.
	if _, err := livepage.Eval[bool](ctx, p, `(location.reload(), true)`); err != nil {
		t.Fatal(err)
	}
	// Asked while the old document goes, the browser answers with an error: ask again.
	for loaded := false; !loaded; {
		loaded, _ = livepage.Eval[bool](ctx, p, `document.readyState === "complete" && document.querySelectorAll("#tiles .tile").length === 2`)
		select {
		case <-ctx.Done():
			t.Fatal("the page did not load again")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if same, err := p.SameDocument(ctx); err != nil || same {
		t.Fatalf("same document %v (%v) after a reload, want false", same, err)
	}
}
