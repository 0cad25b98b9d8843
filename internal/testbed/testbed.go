// Package testbed sets up a provisiond test bench without hardware or cloud: a simulated nRF91
// served on a pty (internal/simmodem) and a simulated Provisioning Service on loopback
// (internal/simcloud), the device registered and claimed, and a provisiond config file that
// points the real daemon at both through its ordinary settings (modem.port, hostname, port,
// ca_file). The daemon itself is not special-cased in any way: it is run as a separate
// process by the caller (the demo, the end-to-end tests).
//
// A Bed is created by Start and released by Close. Its accessors are safe for concurrent use;
// WriteConfig must not race with itself.
package testbed

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/simmodem"
)

// Transports a Bed can configure.
const (
	TransportHTTP = simcloud.TransportHTTP
	TransportCoAP = simcloud.TransportCoAP
)

// maxSocketPath is the longest Unix socket path Linux accepts (sun_path without its NUL).
const maxSocketPath = 107

// Options describes a bench. The zero value is an HTTP bench with a zero-latency modem that
// starts in +CFUN=0, claimed, in a fresh temporary folder.
type Options struct {
	// Transport is "http" (default) or "coap": provisioning.transport in the config.
	Transport string
	// Dir is the bench's folder (config, store, socket, the service's CA). Empty makes a
	// temporary folder that Close removes; a given folder is left in place.
	Dir string
	// Modem is the simulated modem's config. Link is set by the bench when StableLink is on.
	Modem simmodem.Config
	// StableLink serves the modem behind a symlink in Dir that follows Unplug/Replug (like a
	// /dev/serial/by-id name), and configures that symlink as modem.port.
	StableLink bool
	// InitialMode, when not 0, is the modem's +CFUN mode before the daemon first opens it
	// (1 or 4; it overrides Modem.FunctionalMode). 1 is a modem found online and registered.
	InitialMode int
	// Unclaimed registers the device with the service but leaves it unclaimed (401s).
	Unclaimed bool
	// Cloud is the simulated service's config. StateDir defaults to Dir/cloud.
	Cloud simcloud.Config
	// SharedCloud, when set, is a running service the bench uses instead of starting its own
	// (Cloud is then ignored), so that several benches' modems talk to one service. The
	// bench registers its device there but never closes it.
	SharedCloud *simcloud.Server
	// Timeout is http.timeout and coap.timeout in the config; zero means 10 s.
	Timeout time.Duration
	// Settings are extra config keys, dotted ("provisioning.initial_backoff") → value; they
	// win over the bench's own.
	Settings map[string]any
}

// Bed is a running bench. Create it with Start; Close releases it.
type Bed struct {
	opts      Options
	dir       string
	ownDir    bool
	sockDir   string // a short extra folder for the socket when Dir is too deep; "" otherwise
	transport string

	cancel context.CancelFunc
	cloud  *simcloud.Server
	modem  *simmodem.Modem
	pty    *simmodem.PTY
	uuid   string

	cfgMu    sync.Mutex // serialises WriteConfig
	settings map[string]any

	closeOnce sync.Once
	closeErr  error
}

// Start builds a bench: the service, the modem on a pty, registration and claim, and the
// config file. ctx bounds the setup only; the bench runs until Close.
func Start(ctx context.Context, opts Options) (*Bed, error) {
	b := &Bed{opts: opts, transport: opts.Transport}
	switch b.transport {
	case "":
		b.transport = TransportHTTP
	case TransportHTTP, TransportCoAP:
	default:
		return nil, fmt.Errorf("testbed: transport %q: %w", opts.Transport, ErrOptions)
	}
	switch opts.InitialMode {
	case 0, 1, 4:
	default:
		return nil, fmt.Errorf("testbed: initial mode %d: %w", opts.InitialMode, ErrOptions)
	}
	if err := b.setup(ctx); err != nil {
		_ = b.Close()
		return nil, err
	}
	return b, nil
}

func (b *Bed) setup(ctx context.Context) error {
	b.dir = b.opts.Dir
	if b.dir == "" {
		dir, err := os.MkdirTemp("", "provisiond-bed-")
		if err != nil {
			return fmt.Errorf("testbed: %w", err)
		}
		b.dir, b.ownDir = dir, true
	} else if err := os.MkdirAll(b.dir, 0o700); err != nil {
		return fmt.Errorf("testbed: %w", err)
	}
	if len(filepath.Join(b.dir, "ctl.sock")) > maxSocketPath {
		dir, err := os.MkdirTemp("", "pvd-sock-")
		if err != nil {
			return fmt.Errorf("testbed: %w", err)
		}
		b.sockDir = dir
	}
	// The bench outlives the setup context; Close ends it.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel = cancel

	cloud := b.opts.SharedCloud
	if cloud == nil {
		ccfg := b.opts.Cloud
		if ccfg.StateDir == "" {
			ccfg.StateDir = filepath.Join(b.dir, "cloud")
		}
		var err error
		if cloud, err = simcloud.New(ccfg); err != nil {
			return fmt.Errorf("testbed: service: %w", err)
		}
		b.cloud = cloud
		if err := cloud.Start(runCtx); err != nil {
			return fmt.Errorf("testbed: service: %w", err)
		}
	}
	b.cloud = cloud

	mcfg := b.opts.Modem
	if b.opts.StableLink {
		mcfg.Link = filepath.Join(b.dir, "ttyNRF91")
	}
	if b.opts.InitialMode != 0 {
		mcfg.FunctionalMode = b.opts.InitialMode
	}
	m, err := simmodem.New(mcfg)
	if err != nil {
		return fmt.Errorf("testbed: modem: %w", err)
	}
	b.modem, b.uuid = m, m.UUID()
	p, err := m.ServePTY(runCtx)
	if err != nil {
		return fmt.Errorf("testbed: modem: %w", err)
	}
	b.pty = p

	if err := cloud.RegisterDevicePEM(b.uuid, m.PublicKeyPEM()); err != nil {
		return fmt.Errorf("testbed: register device: %w", err)
	}
	if !b.opts.Unclaimed {
		tok, err := m.AttestationToken()
		if err != nil {
			return fmt.Errorf("testbed: attestation token: %w", err)
		}
		if _, err := cloud.Claim(tok); err != nil {
			return fmt.Errorf("testbed: claim: %w", err)
		}
	}
	b.settings = maps.Clone(b.opts.Settings)
	return b.WriteConfig(nil)
}

// WriteConfig rewrites the config file with the bench's settings, the Options.Settings, and
// then changes (dotted key → value; a nil value removes the key). The changes are kept for
// later rewrites.
func (b *Bed) WriteConfig(changes map[string]any) error {
	b.cfgMu.Lock()
	defer b.cfgMu.Unlock()
	if b.settings == nil {
		b.settings = map[string]any{}
	}
	for k, v := range changes {
		if v == nil {
			delete(b.settings, k)
			continue
		}
		b.settings[k] = v
	}
	timeout := b.opts.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	httpHost, httpPort, err := splitHostPort(b.cloud.HTTPAddr())
	if err != nil {
		return err
	}
	coapHost, coapPort, err := splitHostPort(b.cloud.CoAPAddr())
	if err != nil {
		return err
	}
	flat := map[string]any{
		"modem.port":                   b.pty.Path(),
		"modem.flow_control":           "none",
		"provisioning.transport":       b.transport,
		"provisioning.auto_start":      true,
		"provisioning.hooks_dir":       "",
		"http.hostname":                httpHost,
		"http.port":                    httpPort,
		"http.ca_file":                 b.cloud.CAFile(),
		"http.timeout":                 timeout.String(),
		"coap.hostname":                coapHost,
		"coap.port":                    coapPort,
		"coap.ca_file":                 b.cloud.CAFile(),
		"coap.timeout":                 timeout.String(),
		"store.path":                   b.StorePath(),
		"control.socket":               b.SocketPath(),
		"log.format":                   "json",
		"log.level":                    "info",
		"provisioning.initial_backoff": "1s",
	}
	maps.Copy(flat, b.settings)
	tree := map[string]any{}
	for k, v := range flat {
		section, key, ok := strings.Cut(k, ".")
		if !ok {
			return fmt.Errorf("testbed: config key %q is not section.key: %w", k, ErrOptions)
		}
		s, _ := tree[section].(map[string]any)
		if s == nil {
			s = map[string]any{}
			tree[section] = s
		}
		s[key] = v
	}
	out, err := yaml.Marshal(tree)
	if err != nil {
		return fmt.Errorf("testbed: config: %w", err)
	}
	out = append([]byte("# provisiond config written by internal/testbed for the simulated modem and service\n"), out...)
	if err := os.WriteFile(b.ConfigPath(), out, 0o600); err != nil {
		return fmt.Errorf("testbed: config: %w", err)
	}
	return nil
}

func splitHostPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("testbed: address %q: %w", addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return "", 0, fmt.Errorf("testbed: address %q: %w", addr, err)
	}
	return host, n, nil
}

// Dir is the bench's folder.
func (b *Bed) Dir() string { return b.dir }

// ConfigPath is the provisiond config file.
func (b *Bed) ConfigPath() string { return filepath.Join(b.dir, "provisiond.yaml") }

// StorePath is store.path, the daemon's settings file.
func (b *Bed) StorePath() string { return filepath.Join(b.dir, "state", "settings") }

// SocketPath is control.socket.
func (b *Bed) SocketPath() string {
	if b.sockDir != "" {
		return filepath.Join(b.sockDir, "ctl.sock")
	}
	return filepath.Join(b.dir, "ctl.sock")
}

// Transport is provisioning.transport.
func (b *Bed) Transport() string { return b.transport }

// ModemPath is modem.port: the stable link when Options.StableLink, else the pty.
func (b *Bed) ModemPath() string { return b.pty.Path() }

// Modem is the simulated nRF91.
func (b *Bed) Modem() *simmodem.Modem { return b.modem }

// PTY is the modem's pty (Unplug, Plugged, Replug).
func (b *Bed) PTY() *simmodem.PTY { return b.pty }

// Replug plugs the modem back in on a new pty; simmodem re-points the stable link, as udev
// does for a /dev/serial/by-id name.
func (b *Bed) Replug() error { return b.pty.Replug() }

// Cloud is the simulated Provisioning Service.
func (b *Bed) Cloud() *simcloud.Server { return b.cloud }

// UUID is the device UUID.
func (b *Bed) UUID() string { return b.uuid }

// ModemCommands returns the command lines the modem received since Start, in order.
func (b *Bed) ModemCommands() []string { return b.modem.CommandLog() }

// Uploads returns every response batch the device uploaded, in arrival order.
func (b *Bed) Uploads() ([]simcloud.Upload, error) { return b.cloud.Responses(b.uuid) }

// Queue queues owner requests for the device.
func (b *Bed) Queue(reqs ...simcloud.Request) ([]simcloud.Job, error) {
	return b.cloud.Enqueue(b.uuid, reqs...)
}

// Close stops the modem and the service and removes the temporary folders. Idempotent.
func (b *Bed) Close() error {
	b.closeOnce.Do(func() {
		var errs []error
		if b.pty != nil {
			if err := b.pty.Close(); err != nil && !errors.Is(err, context.Canceled) {
				errs = append(errs, err)
			}
		}
		if b.cloud != nil && b.opts.SharedCloud == nil {
			errs = append(errs, b.cloud.Close())
		}
		if b.cancel != nil {
			b.cancel()
		}
		if b.ownDir {
			errs = append(errs, os.RemoveAll(b.dir))
		}
		if b.sockDir != "" {
			errs = append(errs, os.RemoveAll(b.sockDir))
		}
		b.closeErr = errors.Join(errs...)
	})
	return b.closeErr
}
