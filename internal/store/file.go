// Package store keeps provisiond's settings: string keys (Zephyr-style settings paths such as
// "provisioning/interval-sec") mapped to string values. It is the host's stand-in for the
// device's settings subsystem; the daemon also keeps its own state (the batch journal, the
// outbox, under "provisiond/") in it.
//
// A change is durable when Apply returns: it is written in place into one of the two slots of
// "<settings>.slots" and synced (slots.go). The settings file, one checksummed file in the
// format of format.go, is brought up to date by Checkpoint, atomically replaced.
//
// File is the persistent store, Memory an in-memory one with the same semantics. Both are
// safe for concurrent use by the goroutines of one process. Only one process may write a
// settings file; others read it with Load.
package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// File is a settings store backed by the settings file and its slot file. Every change
// writes the whole new state into the slot that does not hold the current one and syncs it,
// so a reader or a restart after a crash sees either the old or the new state, never a mix.
// The slot file is made (and remade larger) by atomic replacement: temp file in the same
// folder, fsync, rename, fsync of the folder; so is the settings file at each Checkpoint.
//
// The in-memory state changes only after the file write succeeded: when a write fails
// (ENOSPC, EROFS, EACCES, …) the error is returned wrapped, Get and All keep answering the
// last stored content, and later writes try again. A File needs no closing.
type File struct {
	path string
	lim  Limits

	// fault, when set by tests, is called before each step of a write and its error is
	// used as that step's failure; nil in production.
	fault func(step string) error

	wmu sync.Mutex // serialises writers and Reload; held across the file I/O

	// slots and stale belong to the writer: guarded by wmu.
	slots slots // the slot file; size 0 until the first write makes it
	stale bool  // the settings file may not show the newest state

	mu sync.RWMutex // guards m; held only to read or swap the map, never across I/O
	m  map[string]string
}

// Open loads the store of the settings file at path: the newest valid slot of its slot file,
// or the settings file when there is no slot file (a store written by an earlier version, or
// none yet). A missing file, or an empty one (a placeholder made by an installer), is an empty
// store; the files and their folder (mode 0700) are created by the first write.
//
// A file that fails its integrity check (a settings file, or a slot file neither of whose
// slots is valid) is never replaced: Open renames it to "<file>.corrupt-<UTC time>" and
// returns a *CorruptError (errors.Is ErrCorrupt) naming that name. Whether to go on is the
// caller's decision: a second Open then finds no such file (without a slot file, an empty
// store; without a valid one, the settings file's state of the last checkpoint). A file
// larger than lim.MaxFileSize is refused with an error wrapping ErrLimit and left in place,
// since it may be intact and only the limit lowered. Key and value limits apply to writes,
// not to loading: what is on disk was accepted when it was written.
//
// Open also removes temp files left in the folder by a writer that was killed mid-write.
func Open(path string, lim Limits) (*File, error) {
	lim = lim.withDefaults()
	m, st, stale, err := load(path, lim)
	if err != nil {
		return nil, quarantine(err)
	}
	removeStaleTemps(path)
	return &File{path: path, lim: lim, m: m, slots: st, stale: stale}, nil
}

// load reads the store at path: the slot file's newest state, or the settings file. stale
// tells whether the settings file differs from that state.
func load(path string, lim Limits) (m map[string]string, st slots, stale bool, err error) {
	content, st, err := readSlots(path, lim)
	if errors.Is(err, errNoSlots) {
		m, err := read(path, lim)
		return m, slots{}, false, err
	}
	if err != nil {
		return nil, slots{}, false, err
	}
	m, reason := decode(content)
	if reason != "" {
		return nil, slots{}, false, &CorruptError{Path: slotPath(path), Reason: "newest slot: " + reason}
	}
	// The settings file is normally the same bytes, or an older state when an attempt was
	// cut short or a checkpoint failed, which the next Checkpoint replaces. One that fails
	// its own check was damaged or edited by hand: it is reported like a damaged store, so
	// that an edit is not silently undone (the store itself is intact in the slot file).
	main, err := readCapped(path, lim.MaxFileSize)
	if err != nil || bytes.Equal(main, content) {
		return m, st, err != nil, nil
	}
	if _, reason := decode(main); reason != "" && len(main) > 0 {
		return nil, slots{}, false, &CorruptError{Path: path, Reason: reason}
	}
	return m, st, true, nil
}

// Load reads the store of the settings file at path as Open does, without changing anything
// on disk: no temp file cleanup, and a corrupt file is reported (*CorruptError with an empty
// Aside) but left where it is. It is for readers other than the daemon, such as `provisiond
// settings`, which may run while the daemon writes.
//
// The daemon may be writing a slot meanwhile; a read that finds both slots failing their
// checks (the one being written, and the other overwritten by the write after it while this
// read was slow) is repeated a few times before the file is reported corrupt.
func Load(path string, lim Limits) (map[string]string, error) {
	lim = lim.withDefaults()
	var err error
	for try := 0; try < loadTries; try++ {
		if try > 0 {
			time.Sleep(loadRetryWait)
		}
		var m map[string]string
		if m, _, _, err = load(path, lim); !errors.Is(err, ErrCorrupt) {
			return m, err
		}
	}
	return nil, err
}

const (
	loadTries     = 5
	loadRetryWait = 20 * time.Millisecond
)

// Path returns the settings file's path.
func (f *File) Path() string { return f.path }

// Limits returns the limits the store enforces, defaults filled in.
func (f *File) Limits() Limits { return f.lim }

// Get returns the value of key, or an error wrapping ErrNotFound.
func (f *File) Get(key string) (string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.m[key]
	if !ok {
		return "", fmt.Errorf("store: get %q: %w", truncKey(key), ErrNotFound)
	}
	return v, nil
}

// All returns a copy of every key and value.
func (f *File) All() map[string]string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return maps.Clone(f.m)
}

// Set stores value under key. Writing the value a key already has does not touch the file.
func (f *File) Set(key, value string) error {
	return f.Apply([]Change{{Key: key, Value: value}})
}

// Delete removes key; deleting a missing key is not an error and does not touch the file.
func (f *File) Delete(key string) error {
	return f.Apply([]Change{{Key: key, Delete: true}})
}

// Apply makes all changes, in order, with one atomic file write, or none of them: an invalid
// change, a limit or a write error leaves both the file and the in-memory state as they were.
func (f *File) Apply(changes []Change) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	// Only writers replace f.m and wmu is held, so reading it here without mu is safe.
	next, data, changed, err := apply(f.m, changes, f.lim)
	if err != nil || !changed {
		return err
	}
	if err := f.write(data); err != nil {
		return err
	}
	f.mu.Lock()
	f.m = next
	f.mu.Unlock()
	return nil
}

// Reload reads the file again, e.g. after a failed write left the caller unsure of what is
// on disk. On error the in-memory state is kept; a corrupt file is moved aside as in Open, and
// the next successful write recreates the file from the in-memory state.
func (f *File) Reload() error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	m, st, stale, err := load(f.path, f.lim)
	if err != nil {
		err = quarantine(err)
		var ce *CorruptError
		if errors.As(err, &ce) && ce.Aside != "" {
			// Moved aside: the next checkpoint makes the settings file again, the next write
			// a new slot file, both from memory.
			f.stale = true
			if ce.Path == slotPath(f.path) {
				f.slots.size = 0
			}
		}
		return err
	}
	f.slots, f.stale = st, stale
	f.mu.Lock()
	f.m = m
	f.mu.Unlock()
	return nil
}

// Checkpoint rewrites the settings file with the current state when it is behind, atomically.
// Nothing depends on it for durability, which Apply already gave; it keeps the settings file,
// the one a person or an earlier provisiond reads, current while the daemon idles. A failure
// (a full or read-only disk) loses nothing and is tried again by the next Checkpoint.
func (f *File) Checkpoint() error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if !f.stale {
		return nil
	}
	f.mu.RLock()
	data := encode(f.m)
	f.mu.RUnlock()
	if err := f.replace(f.path, data); err != nil {
		return err
	}
	f.stale = false
	return nil
}

func (f *File) step(name string) error {
	if f.fault == nil {
		return nil
	}
	return f.fault(name)
}

// write makes data, the encoded next state, durable: in place in the slot file, or in a new
// one when there is none yet or data outgrew its slots. On error the store on disk is still
// the last state written.
func (f *File) write(data []byte) error {
	if f.slots.size > 0 && maxSlotHeaderLen+len(data) <= f.slots.size {
		err := f.writeSlot(f.slots, data)
		if errors.Is(err, fs.ErrNotExist) {
			// Removed under us (by hand): make it again, from the state in memory.
			f.slots.size = 0
			return f.write(data)
		}
		if err != nil {
			return err
		}
		f.slots.seq++
	} else {
		st, err := f.createSlots(f.slots, data)
		if err != nil {
			return err
		}
		f.slots = st
	}
	f.stale = true
	return nil
}

// replace replaces the file at target (the settings file or the slot file) with data
// atomically. On any error the temp file is removed.
func (f *File) replace(target string, data []byte) (err error) {
	dir := filepath.Dir(target)
	if err := f.step("mkdir"); err != nil {
		return fmt.Errorf("store: create folder %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("store: create folder: %w", err)
	}
	if err := f.step("create"); err != nil {
		return fmt.Errorf("store: create temp file in %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, tempPrefix(target)+"*")
	if err != nil {
		return fmt.Errorf("store: create temp file: %w", err)
	}
	renamed := false
	defer func() {
		if !renamed {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	steps := []struct {
		name string
		do   func() error
	}{
		{"write", func() error { _, err := tmp.Write(data); return err }},
		{"sync", tmp.Sync},
		{"chmod", func() error { return tmp.Chmod(0o600) }},
		{"close", tmp.Close},
		{"rename", func() error { return os.Rename(tmp.Name(), target) }},
	}
	for _, s := range steps {
		if err := f.step(s.name); err != nil {
			return fmt.Errorf("store: %s %s: %w", s.name, tmp.Name(), err)
		}
		if err := s.do(); err != nil {
			return fmt.Errorf("store: %s %s: %w", s.name, target, err)
		}
	}
	renamed = true
	if err := f.step("syncdir"); err != nil {
		return fmt.Errorf("store: sync folder %s: %w", dir, err)
	}
	return syncDir(dir)
}

// tempPrefix names temp files so that removeStaleTemps finds exactly ours.
func tempPrefix(path string) string { return "." + filepath.Base(path) + ".tmp-" }

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: sync folder: %w", err)
	}
	defer d.Close()
	// Some filesystems cannot sync a directory and say EINVAL; the rename is then as
	// durable as that filesystem makes it, which is all we can get.
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("store: sync folder: %w", err)
	}
	return nil
}

// readCapped returns the bytes of the file at path, nothing for a missing file, and an error
// wrapping ErrLimit for one larger than limit bytes, seen without reading all of it.
func readCapped(path string, limit int) ([]byte, error) {
	fh, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("store: read %s: %w", path, err)
	}
	if len(data) > limit {
		return nil, fmt.Errorf("store: open %s: file is larger than the limit of %d bytes: %w", path, limit, ErrLimit)
	}
	return data, nil
}

// read loads and verifies the file. A missing or empty file is an empty store.
func read(path string, lim Limits) (map[string]string, error) {
	data, err := readCapped(path, lim.MaxFileSize)
	if err != nil {
		return nil, err
	}
	if len(data) == 0 {
		return map[string]string{}, nil
	}
	m, reason := decode(data)
	if reason != "" {
		return nil, &CorruptError{Path: path, Reason: reason}
	}
	return m, nil
}

// quarantine moves a corrupt file (the one the error names) aside and names the new place in
// the error; other errors pass through.
func quarantine(err error) error {
	var ce *CorruptError
	if !errors.As(err, &ce) {
		return err
	}
	aside, merr := moveAside(ce.Path)
	if merr != nil {
		return fmt.Errorf("%w (and it could not be moved aside: %w)", ce, merr)
	}
	ce.Aside = aside
	return ce
}

// moveAside renames path to path.corrupt-<UTC time>, adding -2, -3, … when a file of that
// name exists, so an earlier corrupt copy is never overwritten.
func moveAside(path string) (string, error) {
	base := path + ".corrupt-" + time.Now().UTC().Format("20060102T150405Z")
	for i := 1; i < 1000; i++ {
		name := base
		if i > 1 {
			name += "-" + strconv.Itoa(i)
		}
		if _, err := os.Lstat(name); err == nil {
			continue
		}
		if err := os.Rename(path, name); err != nil {
			return "", err
		}
		return name, syncDir(filepath.Dir(path))
	}
	return "", fmt.Errorf("store: too many corrupt copies of %s", path)
}

// removeStaleTemps deletes temp files a killed writer left behind, of the settings file and of
// its slot file, in one listing of the folder. Only one process writes a settings file, so
// every such file is dead. Failures are ignored: a stale temp file costs
// disk space, not correctness.
func removeStaleTemps(path string) {
	dir := filepath.Dir(path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	settings, slots := tempPrefix(path), tempPrefix(slotPath(path))
	for _, e := range entries {
		name := e.Name()
		if (strings.HasPrefix(name, settings) || strings.HasPrefix(name, slots)) && e.Type().IsRegular() {
			_ = os.Remove(filepath.Join(dir, name))
		}
	}
}
