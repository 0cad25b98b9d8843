package store

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// kv is what the daemon needs from a store; both File and Memory must satisfy it identically.
type kv interface {
	Get(key string) (string, error)
	All() map[string]string
	Set(key, value string) error
	Delete(key string) error
	Apply(changes []Change) error
}

// backend makes a fresh store and a way to see it as a restarted process would.
type backend struct {
	name string
	// open returns an empty store with lim and a reopen func; for Memory reopen returns the
	// same store, for File a new File loaded from disk.
	open func(t *testing.T, lim Limits) (s kv, reopen func() kv)
}

func backends() []backend {
	return []backend{
		{name: "file", open: func(t *testing.T, lim Limits) (kv, func() kv) {
			path := filepath.Join(t.TempDir(), "state", "settings")
			f, err := Open(path, lim)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			return f, func() kv {
				t.Helper()
				g, err := Open(path, lim)
				if err != nil {
					t.Fatalf("reopen: %v", err)
				}
				return g
			}
		}},
		{name: "memory", open: func(t *testing.T, lim Limits) (kv, func() kv) {
			m := NewMemory(lim)
			return m, func() kv { return m }
		}},
	}
}

func TestContract(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			testKV(t, b)
		})
	}
}

// op is one step of a contract case: a call and the error it must give (nil or a sentinel).
type op struct {
	set     [2]string // key, value
	del     string
	apply   []Change
	wantErr error
}

func testKV(t *testing.T, b backend) {
	small := Limits{MaxKeyLen: 8, MaxValueLen: 16, MaxKeys: 3, MaxFileSize: 200}
	tests := []struct {
		name string
		lim  Limits
		ops  []op
		want map[string]string
	}{
		{name: "empty", want: map[string]string{}},
		{name: "set", ops: []op{{set: [2]string{"provisioning/interval-sec", "3600"}}},
			want: map[string]string{"provisioning/interval-sec": "3600"}},
		{name: "overwrite", ops: []op{{set: [2]string{"a", "1"}}, {set: [2]string{"a", "2"}}},
			want: map[string]string{"a": "2"}},
		{name: "empty value is a value", ops: []op{{set: [2]string{"a", ""}}},
			want: map[string]string{"a": ""}},
		{name: "unicode, quotes, newlines and NUL survive",
			ops:  []op{{set: [2]string{"k/ü", "line1\r\nline2 \"q\" <&> \x00 \u2028 ✓"}}},
			want: map[string]string{"k/ü": "line1\r\nline2 \"q\" <&> \x00 \u2028 ✓"}},
		{name: "delete", ops: []op{{set: [2]string{"a", "1"}}, {set: [2]string{"b", "2"}}, {del: "a"}},
			want: map[string]string{"b": "2"}},
		{name: "delete missing is no error", ops: []op{{del: "nope"}}, want: map[string]string{}},
		{name: "apply sets and deletes in order",
			ops: []op{{set: [2]string{"old", "x"}}, {apply: []Change{
				{Key: "a", Value: "1"}, {Key: "old", Delete: true}, {Key: "a", Value: "2"}, {Key: "b", Value: "3"}}}},
			want: map[string]string{"a": "2", "b": "3"}},
		{name: "apply nothing", ops: []op{{apply: nil}}, want: map[string]string{}},
		{name: "empty key refused", ops: []op{{set: [2]string{"", "v"}, wantErr: ErrInvalid}}, want: map[string]string{}},
		{name: "control character in key refused", ops: []op{{set: [2]string{"a\nb", "v"}, wantErr: ErrInvalid}},
			want: map[string]string{}},
		{name: "invalid UTF-8 key refused", ops: []op{{set: [2]string{"a\xff", "v"}, wantErr: ErrInvalid}},
			want: map[string]string{}},
		{name: "invalid UTF-8 value refused", ops: []op{{set: [2]string{"a", "v\xfe"}, wantErr: ErrInvalid}},
			want: map[string]string{}},
		{name: "key length limit", lim: small,
			ops:  []op{{set: [2]string{"12345678", "ok"}}, {set: [2]string{"123456789", "v"}, wantErr: ErrLimit}},
			want: map[string]string{"12345678": "ok"}},
		{name: "value length limit", lim: small,
			ops:  []op{{set: [2]string{"a", strings.Repeat("v", 16)}}, {set: [2]string{"b", strings.Repeat("v", 17)}, wantErr: ErrLimit}},
			want: map[string]string{"a": strings.Repeat("v", 16)}},
		{name: "key count limit; overwrite and delete still work", lim: small,
			ops: []op{{set: [2]string{"a", "1"}}, {set: [2]string{"b", "2"}}, {set: [2]string{"c", "3"}},
				{set: [2]string{"d", "4"}, wantErr: ErrLimit}, {set: [2]string{"c", "33"}}, {del: "a"}, {set: [2]string{"d", "4"}}},
			want: map[string]string{"b": "2", "c": "33", "d": "4"}},
		{name: "file size limit", lim: Limits{MaxFileSize: 200},
			ops:  []op{{set: [2]string{"a", strings.Repeat("v", 50)}}, {set: [2]string{"b", strings.Repeat("w", 60)}, wantErr: ErrLimit}},
			want: map[string]string{"a": strings.Repeat("v", 50)}},
		{name: "apply is all or nothing", lim: small,
			ops: []op{{set: [2]string{"keep", "1"}}, {apply: []Change{
				{Key: "keep", Value: "2"}, {Key: "x", Value: "1"}, {Key: "y", Value: strings.Repeat("v", 17)}}, wantErr: ErrLimit}},
			want: map[string]string{"keep": "1"}},
		{name: "apply with invalid key is all or nothing",
			ops:  []op{{apply: []Change{{Key: "a", Value: "1"}, {Key: "", Value: "2"}}, wantErr: ErrInvalid}},
			want: map[string]string{}},
		{name: "apply over key limit is all or nothing", lim: small,
			ops:  []op{{apply: []Change{{Key: "a"}, {Key: "b"}, {Key: "c"}, {Key: "d"}}, wantErr: ErrLimit}},
			want: map[string]string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, reopen := b.open(t, tc.lim)
			for i, o := range tc.ops {
				var err error
				switch {
				case o.apply != nil || (o.set == [2]string{} && o.del == ""):
					err = s.Apply(o.apply)
				case o.del != "":
					err = s.Delete(o.del)
				default:
					err = s.Set(o.set[0], o.set[1])
				}
				if !errors.Is(err, o.wantErr) || (o.wantErr == nil) != (err == nil) {
					t.Fatalf("op %d: got error %v, want %v", i, err, o.wantErr)
				}
			}
			for _, s := range []kv{s, reopen()} {
				if got := s.All(); !maps.Equal(got, tc.want) {
					t.Fatalf("All() = %q, want %q", got, tc.want)
				}
				for k, v := range tc.want {
					got, err := s.Get(k)
					if err != nil || got != v {
						t.Fatalf("Get(%q) = %q, %v; want %q", k, got, err, v)
					}
				}
			}
		})
	}

	t.Run("get missing", func(t *testing.T) {
		s, _ := b.open(t, Limits{})
		if _, err := s.Get("provisioning/after-correlation-id"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("got %v, want ErrNotFound", err)
		}
	})
	t.Run("limit error names key and limit", func(t *testing.T) {
		s, _ := b.open(t, Limits{MaxValueLen: 4})
		err := s.Set("provisioning/x", "12345")
		var le *LimitError
		if !errors.As(err, &le) {
			t.Fatalf("got %v, want *LimitError", err)
		}
		if le.Key != "provisioning/x" || le.What != "value length" || le.Limit != 4 || le.Got != 5 {
			t.Fatalf("got %+v", *le)
		}
		if msg := err.Error(); !strings.Contains(msg, "provisioning/x") || !strings.Contains(msg, "4") {
			t.Fatalf("message %q does not name key and limit", msg)
		}
	})
	t.Run("All returns a copy", func(t *testing.T) {
		s, _ := b.open(t, Limits{})
		if err := s.Set("a", "1"); err != nil {
			t.Fatal(err)
		}
		m := s.All()
		m["a"] = "changed"
		m["b"] = "new"
		if v, _ := s.Get("a"); v != "1" {
			t.Fatalf("Get(a) = %q after changing All()'s map, want 1", v)
		}
		if _, err := s.Get("b"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(b) = %v, want ErrNotFound", err)
		}
	})
	t.Run("concurrent use", func(t *testing.T) {
		s, reopen := b.open(t, Limits{})
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 20 {
					key := fmt.Sprintf("g%d/k%d", g, i%5)
					if err := s.Set(key, fmt.Sprint(i)); err != nil {
						t.Error(err)
						return
					}
					_, _ = s.Get(key)
					_ = s.All()
				}
			})
		}
		wg.Wait()
		if got, want := len(reopen().All()), 8*5; got != want {
			t.Fatalf("%d keys after concurrent writes, want %d", got, want)
		}
		for g := range 8 {
			for k := range 5 {
				if v, _ := s.Get(fmt.Sprintf("g%d/k%d", g, k)); v != fmt.Sprint(15+k) {
					t.Fatalf("g%d/k%d = %q, want %d", g, k, v, 15+k)
				}
			}
		}
	})
}
