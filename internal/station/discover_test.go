package station

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// listenUnix makes a live socket at path, closed when the test ends.
func listenUnix(t *testing.T, path string) *net.UnixListener {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// staleSocket leaves a socket file nobody listens on, as a killed daemon does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln := listenUnix(t, path)
	ln.SetUnlinkOnClose(false)
	ln.Close()
}

func TestDiscover(t *testing.T) {
	tests := []struct {
		name    string
		sockets []string // live sockets, relative to the run folder
		stale   []string
		other   []string // plain files and folders
		want    []string // instance names
		wantErr error
	}{
		{name: "plain service only", sockets: []string{"provisiond.sock"}, want: []string{"provisiond"}},
		{name: "template instances", sockets: []string{"ttyACM1/provisiond.sock", "nrf91-000960123456/provisiond.sock", "ttyACM0/provisiond.sock"},
			want: []string{"nrf91-000960123456", "ttyACM0", "ttyACM1"}},
		{name: "both, and a stale one", sockets: []string{"provisiond.sock", "ttyACM0/provisiond.sock"}, stale: []string{"ttyACM1/provisiond.sock"},
			want: []string{"provisiond", "ttyACM0", "ttyACM1"}},
		{name: "deeper sockets and other names are not instances", sockets: []string{"a/b/provisiond.sock", "c/other.sock", "d/provisiond.sock"},
			other: []string{"empty/", "notes.txt"}, want: []string{"d"}},
		{name: "empty folder", other: []string{"ttyACM0/"}, wantErr: ErrNoInstances},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, s := range tt.sockets {
				listenUnix(t, filepath.Join(dir, s))
			}
			for _, s := range tt.stale {
				staleSocket(t, filepath.Join(dir, s))
			}
			for _, o := range tt.other {
				p := filepath.Join(dir, o)
				var err error
				if o[len(o)-1] == '/' {
					err = os.MkdirAll(p, 0o755)
				} else {
					err = os.WriteFile(p, []byte("x"), 0o644)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			got, err := Discover(dir)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Discover: %v, want %v", err, tt.wantErr)
			}
			var names []string
			for _, in := range got {
				names = append(names, in.Name)
				wantSock := filepath.Join(dir, in.Name, SocketName)
				if in.Name == PlainName {
					wantSock = filepath.Join(dir, SocketName)
				}
				if in.Socket != wantSock {
					t.Errorf("%s: socket %s, want %s", in.Name, in.Socket, wantSock)
				}
			}
			if !reflect.DeepEqual(names, tt.want) {
				t.Fatalf("instances %v, want %v", names, tt.want)
			}
		})
	}
	if _, err := Discover(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, ErrNoInstances) {
		t.Errorf("missing folder: %v, want ErrNoInstances", err)
	}
}

func TestSelect(t *testing.T) {
	all := []Instance{{Name: "provisiond"}, {Name: "ttyACM0"}, {Name: "ttyACM1"}}
	tests := []struct {
		name    string
		want    []string
		wantErr error
	}{
		{"", []string{"provisiond", "ttyACM0", "ttyACM1"}, nil},
		{"ttyACM1", []string{"ttyACM1"}, nil},
		{"provisiond", []string{"provisiond"}, nil},
		{"ttyACM9", nil, ErrUnknownInstance},
	}
	for _, tt := range tests {
		got, err := Select(all, tt.name)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("Select(%q): %v, want %v", tt.name, err, tt.wantErr)
		}
		var names []string
		for _, in := range got {
			names = append(names, in.Name)
		}
		if !reflect.DeepEqual(names, tt.want) {
			t.Errorf("Select(%q) = %v, want %v", tt.name, names, tt.want)
		}
	}
}
