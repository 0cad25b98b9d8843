package store

import (
	"bytes"
	"errors"
	"maps"
	"os"
	"strconv"
	"strings"
	"testing"
)

// twoStates opens a fresh store and writes two states into it, {n: 1} then {n: 2}, so that
// both slots hold one. It returns the slot file's bytes and the offset of the newest slot.
func twoStates(t *testing.T) (path string, data []byte, newest int) {
	t.Helper()
	f, _, path := openWithA(t) // state 1: a=1
	if err := f.Set("a", "2"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(slotPath(path))
	if err != nil {
		t.Fatal(err)
	}
	if f.slots.seq != 2 || len(data) != 2*f.slots.size {
		t.Fatalf("slot file of %d bytes at state %d, want two slots and state 2", len(data), f.slots.seq)
	}
	return path, data, int(f.slots.seq%2) * f.slots.size
}

// TestTornSlotFallsBack: whatever a cut-short write leaves of the slot it was writing, the
// store is the state before it. Every byte of the newest slot's header and content is
// flipped in turn, and the slot is cut at every length (the rest zeros).
func TestTornSlotFallsBack(t *testing.T) {
	path, data, newest := twoStates(t)
	n := bytes.IndexByte(data[newest:], '\n') + 1
	content, _, ok := decodeSlot(data[newest:])
	if !ok {
		t.Fatal("newest slot does not decode")
	}
	used := n + len(content)
	want := map[string]string{"a": "1"}
	check := func(name string, damaged []byte) {
		t.Helper()
		if err := os.WriteFile(slotPath(path), damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := Load(path, Limits{})
		if err != nil || !maps.Equal(got, want) {
			t.Fatalf("%s: Load = %q, %v; want the previous state %q", name, got, err, want)
		}
	}
	for i := range used {
		b := bytes.Clone(data)
		b[newest+i] ^= 0x04
		check("flip at "+strconv.Itoa(i), b)
	}
	for cut := 0; cut < used; cut++ {
		b := bytes.Clone(data)
		clear(b[newest+cut : newest+used])
		check("cut at "+strconv.Itoa(cut), b)
	}
}

// TestSlotFileCorrupt: a slot file neither of whose slots is valid is moved aside by Open and
// reported; Load reports it and leaves it.
func TestSlotFileCorrupt(t *testing.T) {
	tests := []struct {
		name   string
		damage func(data []byte) []byte
		reason string
	}{
		{"both slots flipped", func(d []byte) []byte { d[0] ^= 1; d[len(d)/2] ^= 1; return d }, "neither slot"},
		{"zeros", func(d []byte) []byte { clear(d); return d }, "neither slot"},
		{"odd size", func(d []byte) []byte { return append(d, 0) }, "not two slots"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path, data, _ := twoStates(t)
			if err := os.WriteFile(slotPath(path), tc.damage(data), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path, Limits{})
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Aside != "" || !strings.Contains(ce.Reason, tc.reason) {
				t.Fatalf("Load: %v; want a CorruptError saying %q, file left", err, tc.reason)
			}
			_, err = Open(path, Limits{})
			if !errors.As(err, &ce) || ce.Aside == "" || ce.Path != slotPath(path) {
				t.Fatalf("Open: %v; want the slot file moved aside", err)
			}
			if _, err := os.Stat(ce.Aside); err != nil {
				t.Fatal(err)
			}
			// The caller's second Open finds the settings file: the store as of the last
			// checkpoint (none here: empty).
			if f, err := Open(path, Limits{}); err != nil || len(f.All()) != 0 {
				t.Fatalf("second Open: %v", err)
			}
		})
	}
}

// TestSlotsGrowAndMigrate: a store an earlier version wrote (the settings file alone) is
// read, its first write makes the slot file, a state larger than a slot makes a larger one,
// and the settings file follows at each checkpoint.
func TestSlotsGrowAndMigrate(t *testing.T) {
	path := writeFile(t, encode(map[string]string{"old": "1"}))
	f, err := Open(path, Limits{})
	if err != nil || f.slots.size != 0 || f.stale {
		t.Fatalf("Open of a settings file alone: %v, slots %+v, stale %v", err, f.slots, f.stale)
	}
	if err := f.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := f.Set("a", "1"); err != nil {
		t.Fatal(err)
	}
	if f.slots.size != slotBlock || !f.stale {
		t.Fatalf("after the first write: slots %+v, stale %v", f.slots, f.stale)
	}
	for i := range 3 {
		before := f.slots.size
		big := strings.Repeat(strconv.Itoa(i), before)
		if err := f.Set("big", big); err != nil {
			t.Fatal(err)
		}
		if f.slots.size <= before {
			t.Fatalf("state of %d bytes in slots of %d", len(big), f.slots.size)
		}
		if m, err := Load(path, Limits{}); err != nil || m["big"] != big || m["old"] != "1" {
			t.Fatalf("Load after growing to %d: %v", f.slots.size, err)
		}
	}
	// Shrinking keeps the slots: no new file for a smaller state.
	size := f.slots.size
	if err := f.Delete("big"); err != nil || f.slots.size != size {
		t.Fatalf("delete: %v, slots %d → %d", err, size, f.slots.size)
	}
	if err := f.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if m, err := read(path, f.lim); err != nil || !maps.Equal(m, map[string]string{"old": "1", "a": "1"}) {
		t.Fatalf("settings file after the checkpoint: %q, %v", m, err)
	}
	// Reopened with the settings file current, no checkpoint is owed.
	g, err := Open(path, Limits{})
	if err != nil || g.stale || g.slots != f.slots {
		t.Fatalf("reopen: %v, stale %v, slots %+v want %+v", err, g.stale, g.slots, f.slots)
	}
	g.fault = func(step string) error { return errors.New("no write expected: " + step) }
	if err := g.Checkpoint(); err != nil {
		t.Fatal(err)
	}
}

func TestSlotSizeFor(t *testing.T) {
	for _, n := range []int{0, 1, 100, slotBlock, 10 * slotBlock, DefaultMaxFileSize} {
		s := slotSizeFor(n)
		if s%slotBlock != 0 || s < maxSlotHeaderLen+n+n/2 {
			t.Errorf("slotSizeFor(%d) = %d", n, s)
		}
	}
}

// TestSettingsFileCheckedBesideSlots: with a valid slot file, a settings file that is merely
// behind is replaced by the next checkpoint, but one that fails its check (damage, a hand
// edit) is reported and moved aside by Open, as without a slot file; the store is the slot
// file's.
func TestSettingsFileCheckedBesideSlots(t *testing.T) {
	f, _, path := openWithA(t)
	if err := f.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := f.Set("a", "2"); err != nil {
		t.Fatal(err)
	}
	g, err := Open(path, Limits{})
	if err != nil || !g.stale || g.All()["a"] != "2" {
		t.Fatalf("settings file behind: %v, stale %v, %q", err, g.stale, g.All())
	}
	edited := bytes.Replace(encode(map[string]string{"a": "1"}), []byte(`"1"`), []byte(`"9"`), 1)
	if err := os.WriteFile(path, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	var ce *CorruptError
	if _, err := Load(path, Limits{}); !errors.As(err, &ce) || ce.Path != path || ce.Aside != "" {
		t.Fatalf("Load with a hand-edited settings file: %v", err)
	}
	if _, err := Open(path, Limits{}); !errors.As(err, &ce) || ce.Path != path || ce.Aside == "" {
		t.Fatalf("Open with a hand-edited settings file: %v", err)
	}
	if h, err := Open(path, Limits{}); err != nil || h.All()["a"] != "2" || !h.stale {
		t.Fatalf("second Open: %v, %q", err, h.All())
	}
}

// TestReloadQuarantinedSettingsFileCheckpointed: a corrupt settings file that Reload moves
// aside beside a valid slot file is made again by the next checkpoint, with no write between.
func TestReloadQuarantinedSettingsFileCheckpointed(t *testing.T) {
	f, _, path := openWithA(t)
	if err := f.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	var ce *CorruptError
	if err := f.Reload(); !errors.As(err, &ce) || ce.Path != path || ce.Aside == "" {
		t.Fatalf("Reload: %v; want the settings file moved aside", err)
	}
	if err := f.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if m, err := read(path, f.lim); err != nil || !maps.Equal(m, map[string]string{"a": "1"}) {
		t.Fatalf("settings file after the checkpoint: %q, %v", m, err)
	}
}

// TestSlotFileRemovedUnderUs: a slot file removed by hand while the store is open is made
// again by the next write, from the state in memory plus the change.
func TestSlotFileRemovedUnderUs(t *testing.T) {
	f, _, path := openWithA(t)
	if err := os.Remove(slotPath(path)); err != nil {
		t.Fatal(err)
	}
	if err := f.Set("b", "2"); err != nil {
		t.Fatalf("write after the slot file was removed: %v", err)
	}
	if m, err := Load(path, Limits{}); err != nil || !maps.Equal(m, map[string]string{"a": "1", "b": "2"}) {
		t.Fatalf("Load: %q, %v", m, err)
	}
}
