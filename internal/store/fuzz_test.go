package store

import (
	"bytes"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary bytes as a settings file. Loading must not panic; it either fails
// with ErrCorrupt (or ErrLimit for oversized input) or yields a map that encodes back to the
// same bytes and survives a write and reload through Open.
func FuzzLoad(f *testing.F) {
	seeds := [][]byte{
		encode(map[string]string{}),
		encode(map[string]string{"provisioning/interval-sec": "3600"}),
		encode(golden),
		nil,
		[]byte("provisiond-settings 1 3 0000\n{}\n"),
		[]byte("{\"a\":\"b\"}"),
		withHeader([]byte("{\"b\":\"1\",\"a\":\"2\"}\n")),
		withHeader([]byte("{\n  \"a\": \"\\u0000\\ud800\"\n}\n")),
	}
	if data, err := os.ReadFile(filepath.Join("testdata", "v1.settings")); err == nil {
		seeds = append(seeds, data)
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, reason := decode(data)
		if reason != "" {
			return
		}
		if got := encode(m); !bytes.Equal(got, data) {
			t.Fatalf("accepted file does not re-encode to itself:\n%q\n%q", data, got)
		}

		dir := t.TempDir()
		path := filepath.Join(dir, "settings")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		lim := Limits{MaxFileSize: 1 << 16}
		st, err := Open(path, lim)
		if errors.Is(err, ErrLimit) {
			return
		}
		if err != nil {
			t.Fatalf("decode accepted but Open failed: %v", err)
		}
		if !maps.Equal(st.All(), m) {
			t.Fatalf("Open = %q, want %q", st.All(), m)
		}
		// Rewrite through the store and read back.
		if err := st.Set("fuzz/extra", "x"); err != nil && !errors.Is(err, ErrLimit) {
			t.Fatalf("Set: %v", err)
		}
		got, err := Load(path, lim)
		if err != nil {
			t.Fatalf("reload after Set: %v", err)
		}
		if !maps.Equal(got, st.All()) {
			t.Fatalf("reload = %q, want %q", got, st.All())
		}
	})
}

func BenchmarkSet(b *testing.B) {
	value := string(bytes.Repeat([]byte("v"), 64))
	for _, bc := range []struct {
		name string
		keys int
	}{{"keys=4", 4}, {"keys=64", 64}} {
		b.Run("file/"+bc.name, func(b *testing.B) {
			f, err := Open(filepath.Join(b.TempDir(), "settings"), Limits{})
			if err != nil {
				b.Fatal(err)
			}
			benchSet(b, f, bc.keys, value)
		})
		b.Run("memory/"+bc.name, func(b *testing.B) {
			benchSet(b, NewMemory(Limits{}), bc.keys, value)
		})
	}
}

func benchSet(b *testing.B, s kv, keys int, value string) {
	for i := range keys {
		if err := s.Set("provisioning/k"+string(rune('a'+i%26))+string(rune('a'+i/26)), value); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		// Alternate the value so every Set really writes.
		if err := s.Set("provisioning/interval-sec", string(rune('0'+i%2))); err != nil {
			b.Fatal(err)
		}
	}
}
