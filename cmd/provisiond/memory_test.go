package main

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestReleaserWaitsForQuiet(t *testing.T) {
	const quiet = 50 * time.Millisecond
	var calls atomic.Int32
	done := make(chan struct{}, 10)
	r := newReleaser(quiet, func() { calls.Add(1); done <- struct{}{} })
	defer r.stop()

	time.Sleep(3 * quiet)
	if n := calls.Load(); n != 0 {
		t.Fatalf("released %d times before any attempt ended", n)
	}
	// A burst of attempts: one release, after the last.
	for range 3 {
		r.attemptEnded()
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("no release after the burst")
	}
	time.Sleep(3 * quiet)
	if n := calls.Load(); n != 1 {
		t.Errorf("released %d times after one burst, want 1", n)
	}
	r.attemptEnded()
	r.stop()
	time.Sleep(3 * quiet)
	if n := calls.Load(); n != 1 {
		t.Errorf("released %d times after stop, want 1", n)
	}
}
