package daemon

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// hookQueueSize bounds the events waiting for their hooks; when hooks are slower than events
// the newest are dropped (and logged) rather than delaying provisioning.
const hookQueueSize = 64

// hookOutputLimit is how much of a failing hook's output is logged.
const hookOutputLimit = 2 << 10

// hookJob is one event for the hooks, or (argv set) the on_finished command.
type hookJob struct {
	dir     string
	argv    []string
	timeout time.Duration
	env     []string
	event   Event
}

// hookRunner runs hooks on one worker goroutine, so a slow or hanging hook delays only other
// hooks, never provisioning; each is killed after its timeout.
type hookRunner struct {
	log    *zap.Logger
	queue  chan hookJob
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	closed bool
}

func startHooks(log *zap.Logger) *hookRunner {
	ctx, cancel := context.WithCancel(context.Background())
	h := &hookRunner{log: log, queue: make(chan hookJob, hookQueueSize), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go h.loop()
	return h
}

// enqueue never blocks.
func (h *hookRunner) enqueue(j hookJob) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	select {
	case h.queue <- j:
	default:
		h.log.Warn("hook queue full; event not passed to hooks", zap.String("event", string(j.event)))
	}
}

// stop lets the worker finish the queued jobs for at most grace, then kills what still runs
// and drops the rest.
func (h *hookRunner) stop(grace time.Duration) {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		close(h.queue)
	}
	h.mu.Unlock()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-h.done:
	case <-t.C:
		h.cancel()
		<-h.done
	}
	h.cancel()
}

func (h *hookRunner) loop() {
	defer close(h.done)
	for j := range h.queue {
		if h.ctx.Err() != nil {
			continue // stopping: drain without running
		}
		if j.argv != nil {
			h.run(j, j.argv[0], j.argv[1:])
			continue
		}
		for _, path := range listHooks(h.log, j.dir) {
			if h.ctx.Err() != nil {
				break
			}
			h.run(j, path, nil)
		}
	}
}

// listHooks returns the executable regular files of dir, sorted by name, skipping hidden
// files and editor or package-manager leftovers.
func listHooks(log *zap.Logger, dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Warn("cannot read hooks folder", zap.String("dir", dir), zap.Error(err))
		}
		return nil
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~") || strings.Contains(name, ".dpkg-") {
			continue
		}
		path := filepath.Join(dir, name)
		fi, err := os.Stat(path) // follows symlinks
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			continue
		}
		out = append(out, path)
	}
	sort.Strings(out)
	return out
}

func (h *hookRunner) run(j hookJob, path string, args []string) {
	ctx, cancel := context.WithTimeout(h.ctx, j.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), j.env...)
	var out limitedBuffer
	out.limit = hookOutputLimit
	cmd.Stdout, cmd.Stderr = &out, &out
	setProcessGroup(cmd)
	// A hook's children may keep its output pipe open after it is killed; don't wait for them.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if err == nil {
		h.log.Debug("hook ran", zap.String("hook", path), zap.String("event", string(j.event)))
		return
	}
	fields := []zap.Field{zap.String("hook", path), zap.String("event", string(j.event)), zap.Error(err),
		zap.String("output", strings.TrimSpace(out.String()))}
	if ctx.Err() == context.DeadlineExceeded {
		fields = append(fields, zap.Duration("timeout", j.timeout))
		h.log.Warn("hook killed after its timeout", fields...)
		return
	}
	h.log.Warn("hook failed", fields...)
}

// limitedBuffer keeps the first limit bytes written to it.
type limitedBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	limit int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.limit - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
