// Package station is the host-wide view of a provisioning station: every provisiond instance
// running on the host, found by its control socket, asked in parallel, each within its own
// time limit, so that one instance that hangs or is gone never holds up the others. It lists
// the attached modems' attestation tokens (in the CSV rows Nordic's tools exchange) and
// claims the devices in bulk through the owner API.
package station

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

const (
	// DefaultRunDir holds the control sockets: provisiond.service's directly, each
	// provisiond@<name> instance's in its own subfolder (deploy/systemd/provisiond@.service).
	DefaultRunDir = "/run/provisiond"
	// SocketName is the control socket's file name in every instance's folder.
	SocketName = "provisiond.sock"
	// PlainName names the instance whose socket lies in the run folder itself: the plain
	// provisiond.service.
	PlainName = "provisiond"
)

var (
	// ErrNoInstances means the run folder holds no control socket.
	ErrNoInstances = errors.New("no provisiond instance found")
	// ErrUnknownInstance means --instance names no instance of the run folder.
	ErrUnknownInstance = errors.New("no such instance")
)

// Instance is one daemon on the host, known by its control socket.
type Instance struct {
	Name   string // the socket's subfolder, or PlainName for the run folder's own socket
	Socket string
}

// Discover returns every instance whose socket is dir/provisiond.sock or
// dir/<name>/provisiond.sock, sorted by name. It does not connect: a socket whose daemon is
// gone is still listed, and asking it says so. A missing dir is ErrNoInstances, as is a dir
// without sockets.
func Discover(dir string) ([]Instance, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("station: %s does not exist: %w", dir, ErrNoInstances)
	}
	if err != nil {
		return nil, fmt.Errorf("station: %w", err)
	}
	var out []Instance
	for _, e := range entries {
		switch {
		case e.Name() == SocketName:
			out = append(out, Instance{Name: PlainName, Socket: filepath.Join(dir, SocketName)})
		case e.IsDir():
			p := filepath.Join(dir, e.Name(), SocketName)
			if _, err := os.Lstat(p); err == nil {
				out = append(out, Instance{Name: e.Name(), Socket: p})
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("station: no %s in %s or its subfolders: %w", SocketName, dir, ErrNoInstances)
	}
	slices.SortFunc(out, func(a, b Instance) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Select returns the instance called name, or all of them when name is empty.
func Select(all []Instance, name string) ([]Instance, error) {
	if name == "" {
		return all, nil
	}
	for _, in := range all {
		if in.Name == name {
			return []Instance{in}, nil
		}
	}
	names := make([]string, len(all))
	for i, in := range all {
		names[i] = in.Name
	}
	return nil, fmt.Errorf("station: %q: %w (found: %s)", name, ErrUnknownInstance, strings.Join(names, ", "))
}
