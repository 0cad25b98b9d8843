package store

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/v1.settings from the encoder")

// golden is the content of testdata/v1.settings, which pins the file format.
var golden = map[string]string{
	"provisioning/interval-sec":         "3600",
	"provisioning/after-correlation-id": "1700000000123-4",
	"provisiond/outbox":                 "{\"cursor\":\"x\",\"responses\":\"a1b2\"}",
	"server/key with spaces & <html> ✓": "multi\nline\tvalue",
}

func TestGoldenFormat(t *testing.T) {
	path := filepath.Join("testdata", "v1.settings")
	if *update {
		if err := os.WriteFile(path, encode(golden), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := encode(golden); !bytes.Equal(got, data) {
		t.Fatalf("encoder output differs from %s (format drift; -update if intended):\n%s", path, got)
	}
	got, err := Load(path, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, golden) {
		t.Fatalf("Load = %q, want %q", got, golden)
	}
	if !bytes.HasPrefix(data, []byte("provisiond-settings 1 ")) {
		t.Fatalf("header is %q", data[:40])
	}
}

func writeFile(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "settings")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCorruptFiles(t *testing.T) {
	valid := encode(map[string]string{"provisioning/interval-sec": "60", "a": "b"})
	nl := bytes.IndexByte(valid, '\n')
	flip := func(i int) []byte { b := bytes.Clone(valid); b[i] ^= 0x01; return b }
	tests := []struct {
		name   string
		data   []byte
		reason string // substring of CorruptError.Reason
	}{
		{"truncated body", valid[:len(valid)-1], "truncated"},
		{"truncated to header", valid[:nl+1], "truncated"},
		{"truncated inside header", valid[:nl-3], "no header line"},
		{"appended byte", append(bytes.Clone(valid), 'x'), "extended"},
		{"flipped body byte", flip(nl + 5), "checksum mismatch"},
		{"flipped checksum digit", flip(nl - 1), "checksum"},
		{"upper-case checksum", bytes.Replace(valid, valid[nl-64:nl], bytes.ToUpper(valid[nl-64:nl]), 1), "bad checksum"},
		{"flipped length digit", flip(len(magic) + 3), "header"},
		{"garbage", []byte("\x00\x01\x02 not a settings file\n{}"), "not a provisiond settings file"},
		{"zeros", make([]byte, 4096), "no header line"},
		{"future version", bytes.Replace(valid, []byte(magic+" 1 "), []byte(magic+" 2 "), 1), "version"},
		{"plain JSON", []byte("{\"a\":\"b\"}\n"), "not a provisiond settings file"},
		{"valid checksum, not canonical", withHeader([]byte("{\"b\":\"1\",\"a\":\"2\"}\n")), "canonical"},
		{"valid checksum, duplicate key", withHeader([]byte("{\n  \"a\": \"1\",\n  \"a\": \"1\"\n}\n")), "canonical"},
		{"valid checksum, number value", withHeader([]byte("{\n  \"a\": 1\n}\n")), "JSON object of strings"},
		{"valid checksum, null body", withHeader([]byte("null\n")), "JSON object of strings"},
		{"valid checksum, invalid UTF-8", withHeader([]byte("{\n  \"a\": \"\xff\"\n}\n")), "UTF-8"},
		{"valid checksum, empty key", withHeader([]byte("{\n  \"\": \"x\"\n}\n")), "bad key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, tc.data)

			// Load reports and leaves the file alone.
			_, err := Load(path, Limits{})
			var ce *CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Load: got %v, want *CorruptError", err)
			}
			if !strings.Contains(ce.Reason, tc.reason) || ce.Aside != "" {
				t.Fatalf("Load: got reason %q aside %q, want reason containing %q and no aside", ce.Reason, ce.Aside, tc.reason)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, tc.data) {
				t.Fatal("Load changed the file")
			}

			// Open moves it aside, keeps its bytes, and names the new place.
			f, err := Open(path, Limits{})
			if !errors.As(err, &ce) || f != nil {
				t.Fatalf("Open: got %v, %v; want nil, *CorruptError", f, err)
			}
			if !strings.HasPrefix(ce.Aside, path+".corrupt-") || !strings.Contains(err.Error(), ce.Aside) {
				t.Fatalf("Open: aside %q, error %q", ce.Aside, err)
			}
			if got, err := os.ReadFile(ce.Aside); err != nil || !bytes.Equal(got, tc.data) {
				t.Fatalf("aside copy: %v, content changed: %v", err, !bytes.Equal(got, tc.data))
			}
			if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("corrupt file still at %s: %v", path, err)
			}
			// The caller may now choose to go on with an empty store.
			f, err = Open(path, Limits{})
			if err != nil || len(f.All()) != 0 {
				t.Fatalf("second Open: %v, %v", f, err)
			}
		})
	}
}

// withHeader puts a correct header over an arbitrary body, to reach the checks behind the
// checksum.
func withHeader(body []byte) []byte {
	return append(fmt.Appendf(nil, "%s 1 %d %x\n", magic, len(body), sha256.Sum256(body)), body...)
}

func TestEveryBitFlipDetected(t *testing.T) {
	valid := encode(map[string]string{"provisioning/interval-sec": "60"})
	for i := range valid {
		for bit := range 8 {
			b := bytes.Clone(valid)
			b[i] ^= 1 << bit
			if m, reason := decode(b); reason == "" {
				t.Fatalf("flip of bit %d of byte %d not detected: decoded %q", bit, i, m)
			}
		}
	}
}

func TestEveryTruncationDetected(t *testing.T) {
	valid := encode(map[string]string{"provisioning/interval-sec": "60", "b": "c"})
	for n := 1; n < len(valid); n++ {
		if m, reason := decode(valid[:n]); reason == "" {
			t.Fatalf("truncation to %d bytes not detected: decoded %q", n, m)
		}
	}
}

func TestCorruptAsideNeverOverwritten(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "settings")
	var asides []string
	for i := range 3 {
		if err := os.WriteFile(path, []byte{'x', byte('0' + i)}, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Open(path, Limits{})
		var ce *CorruptError
		if !errors.As(err, &ce) {
			t.Fatalf("got %v", err)
		}
		asides = append(asides, ce.Aside)
	}
	for i, a := range asides {
		got, err := os.ReadFile(a)
		if err != nil || string(got) != string([]byte{'x', byte('0' + i)}) {
			t.Fatalf("aside %d (%s): %q, %v", i, a, got, err)
		}
	}
}

func TestMissingAndEmptyFile(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, path string)
	}{
		{"missing", func(*testing.T, string) {}},
		{"missing folder", func(*testing.T, string) {}},
		// An installer's placeholder; our writer never produces an empty file (an empty store
		// is a header and "{}"), so an empty file cannot be a torn write of ours.
		{"empty", func(t *testing.T, path string) {
			if err := os.WriteFile(path, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "settings")
			if tc.name == "missing folder" {
				path = filepath.Join(t.TempDir(), "a", "b", "settings")
			}
			tc.setup(t, path)
			m, err := Load(path, Limits{})
			if err != nil || len(m) != 0 {
				t.Fatalf("Load = %q, %v; want empty", m, err)
			}
			f, err := Open(path, Limits{})
			if err != nil || len(f.All()) != 0 {
				t.Fatalf("Open = %v; want empty store", err)
			}
			if err := f.Set("k", "v"); err != nil {
				t.Fatal(err)
			}
			if m, err := Load(path, Limits{}); err != nil || m["k"] != "v" {
				t.Fatalf("after Set: Load = %q, %v", m, err)
			}
		})
	}
}

func TestOversizedFileRefusedNotMoved(t *testing.T) {
	big := encode(map[string]string{"a": strings.Repeat("x", 300)})
	path := writeFile(t, big)
	for _, open := range []func() error{
		func() error { _, err := Load(path, Limits{MaxFileSize: 100}); return err },
		func() error { _, err := Open(path, Limits{MaxFileSize: 100}); return err },
	} {
		if err := open(); !errors.Is(err, ErrLimit) || errors.Is(err, ErrCorrupt) {
			t.Fatalf("got %v, want ErrLimit", err)
		}
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, big) {
		t.Fatal("oversized file was changed or moved")
	}
	// Loading applies only the size cap: content over key limits is still read.
	f, err := Open(path, Limits{MaxValueLen: 10})
	if err != nil || len(f.All()["a"]) != 300 {
		t.Fatalf("Open with small value limit: %v", err)
	}
}

func TestPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "lib", "provisiond")
	path := filepath.Join(dir, "settings")
	f, err := Open(path, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open created the folder: %v", err)
	}
	if err := f.Set("a", "1"); err != nil {
		t.Fatal(err)
	}
	if err := f.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		want fs.FileMode
	}{{dir, 0o700 | fs.ModeDir}, {filepath.Dir(dir), 0o700 | fs.ModeDir}, {path, 0o600}, {slotPath(path), 0o600}} {
		st, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != c.want {
			t.Errorf("%s: mode %v, want %v", c.path, st.Mode(), c.want)
		}
	}
	// Files an operator widened are narrowed again: the slot file by the next write, the
	// settings file by the next checkpoint.
	for _, p := range []string{path, slotPath(path)} {
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Set("a", "2"); err != nil {
		t.Fatal(err)
	}
	if err := f.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, slotPath(path)} {
		if st, _ := os.Stat(p); st.Mode() != 0o600 {
			t.Errorf("%s after a write: mode %v, want 0600", p, st.Mode())
		}
	}
	checkFolder(t, dir, "settings", "settings.slots")
}

// checkFolder fails unless dir holds exactly the files named.
func checkFolder(t *testing.T, dir string, want ...string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("folder holds %q, want %q", got, want)
	}
}

// openWithA opens a store in a fresh folder and sets a=1 in it.
func openWithA(t *testing.T) (f *File, dir, path string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "settings")
	f, err := Open(path, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Set("a", "1"); err != nil {
		t.Fatal(err)
	}
	return f, dir, path
}

func TestReadOnlyFolder(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores folder permissions; TestWriteFaults covers EACCES by injection")
	}
	f, dir, path := openWithA(t)
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	// The slot file exists: a write in place needs no new file and goes through.
	if err := f.Set("a", "2"); err != nil {
		t.Fatalf("write in place in a read-only folder: %v", err)
	}
	// The checkpoint needs a new file: refused, and nothing is lost.
	err := f.Checkpoint()
	if !errors.Is(err, fs.ErrPermission) || !errors.Is(err, syscall.EACCES) {
		t.Fatalf("checkpoint: got %v, want EACCES", err)
	}
	if m, err := Load(path, Limits{}); err != nil || m["a"] != "2" {
		t.Fatalf("Load after the failed checkpoint: %q, %v", m, err)
	}
	// So does a write that outgrows the slots.
	err = f.Set("big", strings.Repeat("x", 2*slotBlock))
	if !errors.Is(err, syscall.EACCES) {
		t.Fatalf("write that outgrows the slots: got %v, want EACCES", err)
	}
	if v, _ := f.Get("a"); v != "2" {
		t.Fatalf("Get after failed write = %q, want 2", v)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := f.Checkpoint(); err != nil {
		t.Fatalf("checkpoint after the folder became writable: %v", err)
	}
	if m, err := read(path, f.lim); err != nil || m["a"] != "2" {
		t.Fatalf("settings file after the checkpoint: %q, %v", m, err)
	}
}

// TestWriteFaults injects an error at every step of the three kinds of write: in place into
// the slot file, the first write of a store (or one that outgrows its slots), which makes a
// new slot file, and the checkpoint of the settings file. Each leaves the store on disk and in
// memory as it was, and the same write goes through once the fault clears.
func TestWriteFaults(t *testing.T) {
	errnos := []syscall.Errno{syscall.ENOSPC, syscall.EROFS, syscall.EACCES, syscall.EIO}
	replaceSteps := []string{"mkdir", "create", "write", "sync", "chmod", "close", "rename", "syncdir"}
	kinds := []struct {
		name  string
		steps []string
		// open returns a store holding a=1 whose next Apply is a write of this kind.
		open func(t *testing.T) (*File, string)
		// visible lists the steps whose fault comes after the new state reached the file,
		// so that a reader may already see it.
		visible string
	}{
		{name: "in place", steps: []string{"slot-open", "slot-write", "slot-sync"}, visible: "slot-sync",
			open: func(t *testing.T) (*File, string) { f, _, path := openWithA(t); return f, path }},
		{name: "new slot file", steps: replaceSteps, visible: "syncdir",
			open: func(t *testing.T) (*File, string) {
				// A store an earlier version wrote: the settings file only.
				path := writeFile(t, encode(map[string]string{"a": "1"}))
				f, err := Open(path, Limits{})
				if err != nil {
					t.Fatal(err)
				}
				return f, path
			}},
	}
	for _, kind := range kinds {
		for _, errno := range errnos {
			for _, step := range kind.steps {
				t.Run(kind.name+"/"+errno.Error()+"/"+step, func(t *testing.T) {
					f, path := kind.open(t)
					f.fault = func(s string) error {
						if s == step {
							return &fs.PathError{Op: s, Path: path, Err: errno}
						}
						return nil
					}
					err := f.Apply([]Change{{Key: "a", Value: "2"}, {Key: "b", Value: "3"}})
					if !errors.Is(err, errno) {
						t.Fatalf("got %v, want %v", err, errno)
					}
					if !strings.HasPrefix(err.Error(), "store: ") {
						t.Errorf("error %q lacks the op prefix", err)
					}
					want := map[string]string{"a": "1"}
					if got := f.All(); !maps.Equal(got, want) {
						t.Fatalf("in-memory state after failed write = %q, want %q", got, want)
					}
					checkNoTemps(t, path)
					onDisk, err := Load(path, Limits{})
					if err != nil {
						t.Fatal(err)
					}
					if step != kind.visible && !maps.Equal(onDisk, want) {
						t.Fatalf("store on disk = %q, want old content %q", onDisk, want)
					}
					// The fault clears (space freed, remounted rw): the same store writes again.
					f.fault = nil
					if err := f.Apply([]Change{{Key: "a", Value: "2"}, {Key: "b", Value: "3"}}); err != nil {
						t.Fatal(err)
					}
					want = map[string]string{"a": "2", "b": "3"}
					if onDisk, err := Load(path, Limits{}); err != nil || !maps.Equal(onDisk, want) {
						t.Fatalf("after recovery: %q, %v", onDisk, err)
					}
				})
			}
		}
	}
	for _, errno := range errnos {
		for _, step := range replaceSteps {
			t.Run("checkpoint/"+errno.Error()+"/"+step, func(t *testing.T) {
				f, _, path := openWithA(t)
				if err := f.Checkpoint(); err != nil {
					t.Fatal(err)
				}
				if err := f.Set("a", "2"); err != nil {
					t.Fatal(err)
				}
				f.fault = func(s string) error {
					if s == step {
						return &fs.PathError{Op: s, Path: path, Err: errno}
					}
					return nil
				}
				if err := f.Checkpoint(); !errors.Is(err, errno) {
					t.Fatalf("got %v, want %v", err, errno)
				}
				checkNoTemps(t, path)
				if m, err := read(path, f.lim); err != nil || (step != "syncdir" && m["a"] != "1") {
					t.Fatalf("settings file after a failed checkpoint: %q, %v; want the old one", m, err)
				}
				if m, err := Load(path, Limits{}); err != nil || m["a"] != "2" {
					t.Fatalf("store after a failed checkpoint: %q, %v; want the new state", m, err)
				}
				f.fault = nil
				if err := f.Checkpoint(); err != nil {
					t.Fatal(err)
				}
				if m, err := read(path, f.lim); err != nil || m["a"] != "2" {
					t.Fatalf("settings file after the checkpoint: %q, %v", m, err)
				}
			})
		}
	}
}

// checkNoTemps fails when a temporary file of the store is left in its folder.
func checkNoTemps(t *testing.T, path string) {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range entries {
		if e.Name() != "settings" && e.Name() != "settings.slots" {
			t.Errorf("left behind %s", e.Name())
		}
	}
}

func TestUnchangedWriteSkipped(t *testing.T) {
	f, _, _ := openWithA(t)
	f.fault = func(step string) error { return &fs.PathError{Op: step, Err: syscall.EROFS} }
	for _, c := range [][]Change{
		{{Key: "a", Value: "1"}},
		{{Key: "missing", Delete: true}},
		{{Key: "a", Value: "2"}, {Key: "a", Value: "1"}},
		nil,
	} {
		if err := f.Apply(c); err != nil {
			t.Fatalf("Apply(%v) wrote the file: %v", c, err)
		}
	}
}

func TestStaleTempFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "settings")
	stale := filepath.Join(dir, tempPrefix(path)+"123")
	staleSlots := filepath.Join(dir, tempPrefix(slotPath(path))+"456")
	other := filepath.Join(dir, "unrelated")
	for _, p := range []string{stale, staleSlots, other} {
		if err := os.WriteFile(p, []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Load(path, Limits{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); err != nil {
		t.Fatal("Load removed a temp file; it must not change anything")
	}
	if _, err := Open(path, Limits{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{stale, staleSlots} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("stale temp file %s still there: %v", filepath.Base(p), err)
		}
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatalf("unrelated file removed: %v", err)
	}
}

func TestReload(t *testing.T) {
	f, _, path := openWithA(t)
	// Another writer changes the store (an operator restoring a backup of both files).
	other, err := Open(path, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Apply([]Change{{Key: "a", Delete: true}, {Key: "b", Value: "2"}}); err != nil {
		t.Fatal(err)
	}
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := f.All(); !maps.Equal(got, map[string]string{"b": "2"}) {
		t.Fatalf("after Reload: %q", got)
	}
	// A corrupt slot file on Reload: moved aside, memory kept, next write makes a new one.
	if err := os.WriteFile(slotPath(path), []byte("garbage!"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = f.Reload()
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Aside == "" || ce.Path != slotPath(path) {
		t.Fatalf("Reload of corrupt slot file: %v", err)
	}
	if got := f.All(); !maps.Equal(got, map[string]string{"b": "2"}) {
		t.Fatalf("memory after failed Reload: %q", got)
	}
	if err := f.Set("c", "3"); err != nil {
		t.Fatal(err)
	}
	if m, err := Load(path, Limits{}); err != nil || !maps.Equal(m, map[string]string{"b": "2", "c": "3"}) {
		t.Fatalf("store after write: %q, %v", m, err)
	}
	// Without a slot file, the settings file is the store again.
	if err := os.Remove(slotPath(path)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, encode(map[string]string{"d": "4"}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := f.All(); !maps.Equal(got, map[string]string{"d": "4"}) {
		t.Fatalf("after Reload of the settings file alone: %q", got)
	}
}

func TestErrorMessages(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"corrupt in place", &CorruptError{Path: "/s", Reason: "checksum mismatch"}, "store: /s is corrupt: checksum mismatch"},
		{"corrupt aside", &CorruptError{Path: "/s", Aside: "/s.corrupt-1", Reason: "r"}, "store: /s is corrupt: r; kept as /s.corrupt-1"},
		{"store limit", &LimitError{What: "keys", Limit: 256, Got: 257}, "store: keys 257 exceeds the limit of 256"},
		{"key limit", &LimitError{Key: strings.Repeat("k", 100), What: "key length", Limit: 255, Got: 300},
			"store: key \"" + strings.Repeat("k", 64) + "…\": key length 300 exceeds the limit of 255"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}
