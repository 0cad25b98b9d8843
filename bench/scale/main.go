// Command scale provisions many simulated modems at once, one provisiond `run --once` per
// modem, against one simulated Provisioning Service: the factory bench of docs/design.md
// ("Scale": dozens of modems on USB hubs attached to one host, one template instance per
// port). Each daemon has its own config, state folder and control socket; each modem is
// served on its own pty and gets the realistic job (a client certificate by %KEYGEN, an
// interval, FINISHED). It checks that every daemon exits 0 with DONE, every job succeeded,
// every modem holds its new certificate and is back in its mode, and prints the wall time,
// the daemons' CPU time (rusage of each child) and the simulators' (this process).
//
// Usage: go run ./bench/scale [-bin path] [-n 64] [-transport http|coap|mixed] [-latency 0]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/provisiond/provisiond/bench/internal/benchkit"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/simmodem"
	"github.com/provisiond/provisiond/internal/testbed"
)

func main() {
	bin := benchkit.BinFlag()
	n := flag.Int("n", 64, "modems and daemons")
	transport := flag.String("transport", "http", "http, coap or mixed (alternating)")
	latency := flag.Duration("latency", 0, "simulated modem processing time per AT command")
	flag.Parse()
	benchkit.Main("scale", func(ctx context.Context) error {
		return run(ctx, *bin, *n, *transport, *latency)
	})
}

// device is one modem with its daemon's files.
type device struct {
	i         int
	transport string
	modem     *simmodem.Modem
	pty       *simmodem.PTY
	dir       string
	config    string

	// filled by the run
	wall       time.Duration
	user, sys  time.Duration
	maxRSS     int64
	stdout     string
	stderrTail string
	err        error
}

func run(ctx context.Context, bin string, n int, transport string, latency time.Duration) error {
	switch transport {
	case "http", "coap", "mixed":
	default:
		return fmt.Errorf("-transport %q: want http, coap or mixed", transport)
	}
	tmp, err := os.MkdirTemp("", "provisiond-scale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if bin, err = benchkit.Binary(ctx, bin, tmp); err != nil {
		return err
	}

	simCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	cloud, err := simcloud.New(simcloud.Config{StateDir: filepath.Join(tmp, "cloud"), MaxJobs: 20})
	if err != nil {
		return err
	}
	if err := cloud.Start(simCtx); err != nil {
		return err
	}
	defer cloud.Close()

	devs := make([]*device, n)
	for i := range devs {
		tr := transport
		if tr == "mixed" {
			tr = []string{"http", "coap"}[i%2]
		}
		d, err := newDevice(simCtx, cloud, tmp, i, tr, latency)
		if err != nil {
			return fmt.Errorf("device %d: %w", i, err)
		}
		defer d.pty.Close()
		devs[i] = d
	}
	fmt.Printf("# scale: %d daemons (`run --once`), %d simulated modems on ptys, one simulated service\n\n", n, n)
	fmt.Printf("machine: %s\ntransport: %s; modem latency per command: %s; job: realistic (client certificate by %%KEYGEN, interval, FINISHED)\n\n",
		benchkit.Machine(), transport, latency)

	self0 := selfCPU()
	t0 := time.Now()
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Go(func() { d.once(ctx, bin) })
	}
	wg.Wait()
	wall := time.Since(t0)
	self1 := selfCPU()

	var failures []string
	var user, sys time.Duration
	var walls, cpus []time.Duration
	var maxRSS int64
	for _, d := range devs {
		user += d.user
		sys += d.sys
		walls = append(walls, d.wall)
		cpus = append(cpus, d.user+d.sys)
		maxRSS = max(maxRSS, d.maxRSS)
		if err := d.check(cloud); err != nil {
			failures = append(failures, fmt.Sprintf("device %d (%s): %v", d.i, d.transport, err))
		}
	}
	fmt.Println("| figure | value |")
	fmt.Println("|---|---|")
	fmt.Printf("| daemons that exited 0 with DONE, job succeeded, certificate in the modem, mode restored | **%d / %d** |\n", n-len(failures), n)
	fmt.Printf("| total wall time (all started at once → last exit) | %s |\n", benchkit.Ms(wall))
	fmt.Printf("| wall time per daemon | %s |\n", benchkit.Summarize(walls))
	fmt.Printf("| daemons' CPU, sum of rusage (user + sys) | %s (%s + %s) |\n", benchkit.Ms(user+sys), benchkit.Ms(user), benchkit.Ms(sys))
	fmt.Printf("| CPU per daemon | %s |\n", benchkit.Summarize(cpus))
	fmt.Printf("| simulators' CPU (this process: %d modems + the service) | %s |\n", n, benchkit.Ms(self1-self0))
	fmt.Printf("| machine load: (daemons + simulators) CPU / (wall × %d cores) | %.0f %% |\n", benchkit.Cores(),
		100*float64(user+sys+self1-self0)/float64(wall)/float64(benchkit.Cores()))
	fmt.Printf("| largest peak RSS of a daemon | %.1f MiB |\n", float64(maxRSS)/1024)
	fmt.Println()
	if len(failures) > 0 {
		for _, f := range failures {
			fmt.Println("FAIL:", f)
		}
		return fmt.Errorf("%d of %d daemons failed", len(failures), n)
	}
	return nil
}

func newDevice(ctx context.Context, cloud *simcloud.Server, tmp string, i int, transport string, latency time.Duration) (*device, error) {
	m, err := simmodem.New(simmodem.Config{Latency: latency})
	if err != nil {
		return nil, err
	}
	p, err := m.ServePTY(ctx)
	if err != nil {
		return nil, err
	}
	d := &device{i: i, transport: transport, modem: m, pty: p, dir: filepath.Join(tmp, fmt.Sprintf("dev%02d", i))}
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return d, err
	}
	if err := cloud.RegisterDevicePEM(m.UUID(), m.PublicKeyPEM()); err != nil {
		return d, err
	}
	tok, err := m.AttestationToken()
	if err != nil {
		return d, err
	}
	if _, err := cloud.Claim(tok); err != nil {
		return d, err
	}
	if _, err := cloud.Enqueue(m.UUID(), testbed.RealisticJob()...); err != nil {
		return d, err
	}
	d.config = filepath.Join(d.dir, "provisiond.yaml")
	return d, os.WriteFile(d.config, []byte(configYAML(cloud, p.Path(), d.dir, transport)), 0o600)
}

// configYAML is the daemon's config: its own port, state and socket, the shared service.
func configYAML(cloud *simcloud.Server, port, dir, transport string) string {
	hh, hp, _ := net.SplitHostPort(cloud.HTTPAddr())
	ch, cp, _ := net.SplitHostPort(cloud.CoAPAddr())
	q := strconv.Quote
	return fmt.Sprintf(`# provisiond config written by bench/scale
modem:
  port: %s
  flow_control: none
provisioning:
  transport: %s
  hooks_dir: ""
http:
  hostname: %s
  port: %s
  ca_file: %s
  timeout: 60s
coap:
  hostname: %s
  port: %s
  ca_file: %s
  timeout: 60s
store:
  path: %s
control:
  socket: %s
log:
  format: json
  level: info
`, q(port), transport, q(hh), hp, q(cloud.CAFile()), q(ch), cp, q(cloud.CAFile()),
		q(filepath.Join(dir, "state", "settings")), q(filepath.Join(dir, "ctl.sock")))
}

// once runs the device's daemon once and keeps its figures.
func (d *device) once(ctx context.Context, bin string) {
	cmd := exec.CommandContext(ctx, bin, "run", "--once", "--config", d.config)
	cmd.Env = cleanEnv(os.Environ())
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	d.err = cmd.Run()
	d.wall = time.Since(t0)
	if cmd.ProcessState != nil {
		d.user, d.sys = benchkit.CPU(cmd.ProcessState)
		d.maxRSS = benchkit.MaxRSS(cmd.ProcessState)
	}
	d.stdout = stdout.String()
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	d.stderrTail = strings.Join(lines[max(0, len(lines)-3):], " | ")
}

// check verifies what the daemon should have left behind.
func (d *device) check(cloud *simcloud.Server) error {
	if d.err != nil {
		return fmt.Errorf("%w: %s", d.err, d.stderrTail)
	}
	if !strings.HasPrefix(d.stdout, "DONE") {
		return fmt.Errorf("stdout %q, want DONE", d.stdout)
	}
	jobs, err := cloud.Jobs(d.modem.UUID())
	if err != nil {
		return err
	}
	var errs []error
	for _, j := range jobs {
		if j.Status != simcloud.StatusSucceeded {
			errs = append(errs, fmt.Errorf("job %s (%s) is %s", j.ID, j.Request.Type(), j.Status))
		}
	}
	if _, ok := d.modem.Credential(testbed.ClientCertSecTag, simmodem.TypeClientCert); !ok {
		errs = append(errs, errors.New("no client certificate in the modem"))
	}
	if got := d.modem.FunctionalMode(); got != 0 {
		errs = append(errs, fmt.Errorf("modem left in +CFUN=%d, want 0 as found", got))
	}
	return errors.Join(errs...)
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cleanEnv drops what would change the daemon's config or logging behind the bench's back.
func cleanEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "PROVISIOND_") || name == "NOTIFY_SOCKET" || name == "JOURNAL_STREAM" ||
			strings.HasPrefix(name, "WATCHDOG_") || strings.HasPrefix(name, "LISTEN_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}
