// Command cost measures what the built provisiond binary costs on this machine, against the
// simulators of internal/testbed (a simulated nRF91 on a pty, the simulated service on
// loopback, both with zero latency):
//
//   - binary size, default and stripped (-trimpath -ldflags '-s -w');
//   - CPU time of `run --once` per attempt (the child's rusage), for the realistic job,
//     a 10-command batch and an empty queue, next to `provisiond version` (process start-up);
//   - AT commands and serial bytes of each `run --once`;
//   - CPU time per attempt of a long-running `run`, triggered with SIGUSR1 (from /proc);
//   - idle CPU time and context switches of that daemon between attempts, and its RSS;
//   - optionally (-long N), its memory and open files over N more attempts;
//   - with -writes instead, only the settings-store writes (slot writes, new slot files, checkpoints)
//     and fsyncs of one `run --once` per job, counted by strace.
//
// Usage: go run ./bench/cost [-bin path] [-n 30] [-idle 20s,150s] [-transport http|coap] [-long 3000] [-once]
// or: go run ./bench/cost -bin path -writes [-transport http|coap]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/provisiond/provisiond/bench/internal/benchkit"
	"github.com/provisiond/provisiond/internal/atmodem"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/testbed"
)

func main() {
	bin := benchkit.BinFlag()
	n := flag.Int("n", 30, "runs per measurement")
	idle := flag.String("idle", "20s", "idle sampling checkpoints from one start, comma-separated (e.g. 20s,150s)")
	transport := flag.String("transport", "http", "http or coap")
	long := flag.Int("long", 0, "after the idle window, this many more attempts of the 10-command batch, printing memory every twelfth")
	onceOnly := flag.Bool("once", false, "measure only `run --once` (sizes, CPU, AT commands, serial bytes), no long-running daemon")
	writes := flag.Bool("writes", false, "only count the store writes and fsyncs of one `run --once` per job, under strace")
	flag.Parse()
	benchkit.Main("cost", func(ctx context.Context) error {
		if *writes {
			return countWrites(ctx, *bin, *transport)
		}
		return run(ctx, *bin, *n, *idle, *transport, *long, *onceOnly)
	})
}

func run(ctx context.Context, bin string, n int, idleFlag, transport string, long int, onceOnly bool) error {
	var idle []time.Duration
	for _, f := range strings.Split(idleFlag, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil || d <= 0 || (len(idle) > 0 && d <= idle[len(idle)-1]) {
			return fmt.Errorf("-idle %q: want increasing positive durations", idleFlag)
		}
		idle = append(idle, d)
	}
	root, err := benchkit.ModuleRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "provisiond-cost-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	fmt.Printf("# provisiond cost (%s)\n\nmachine: %s\n\n", transport, benchkit.Machine())
	if err := sizes(ctx, root, tmp); err != nil {
		return err
	}
	if bin == "" {
		if err := os.Mkdir(tmp+"/stripped", 0o700); err != nil {
			return err
		}
		if bin, err = benchkit.Build(ctx, root, tmp+"/stripped", true); err != nil {
			return err
		}
	} else if err := benchkit.CheckRun(ctx, bin); err != nil {
		return err
	}
	fmt.Printf("binary measured: %s\n\n", bin)

	bed, err := testbed.Start(ctx, testbed.Options{Transport: transport, InitialMode: 1,
		Settings: map[string]any{"provisioning.interval": "24h"}})
	if err != nil {
		return err
	}
	defer bed.Close()

	if err := onceCPU(ctx, bed, bin, n); err != nil {
		return err
	}
	if onceOnly {
		return nil
	}
	return daemonCPU(ctx, bed, bin, n, idle, long)
}

// sizes builds the binary twice and prints both sizes.
func sizes(ctx context.Context, root, tmp string) error {
	fmt.Println("## binary size")
	fmt.Println()
	fmt.Println("| build | bytes | MiB |")
	fmt.Println("|---|---|---|")
	for _, stripped := range []bool{false, true} {
		dir, err := os.MkdirTemp(tmp, "size-")
		if err != nil {
			return err
		}
		path, err := benchkit.Build(ctx, root, dir, stripped)
		if errors.Is(err, benchkit.ErrNoRun) {
			// Size does not need run; the caller reports a missing run when it needs it.
			path = dir + "/provisiond"
		} else if err != nil {
			return err
		}
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		name := "go build ./cmd/provisiond"
		if stripped {
			name = "go build -trimpath -tags " + benchkit.ReleaseTags + " -ldflags '-s -w' ./cmd/provisiond"
		}
		fmt.Printf("| `%s` | %d | %.2f |\n", name, fi.Size(), float64(fi.Size())/(1<<20))
	}
	fmt.Println()
	return nil
}

// sample is one finished child.
type sample struct {
	cpu, user, sys, wall time.Duration
	maxRSS               int64
	at                   []string
	serial               int64
}

// onceCPU runs `version` and `run --once` n times each (with the realistic job, the
// 10-command batch, and nothing queued) and prints the rusage figures.
func onceCPU(ctx context.Context, bed *testbed.Bed, bin string, n int) error {
	// One warm-up run: the root CA is written and the clock set on the first ever attempt.
	if _, err := once(ctx, bed, bin, benchkit.Realistic.Reqs); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	version := make([]sample, 0, n)
	runs := []struct {
		name string
		job  *benchkit.Job
	}{
		{"run --once, 10-command batch", &benchkit.Batch10},
		{"run --once, realistic job", &benchkit.Realistic},
		{"run --once, nothing queued (NO_COMMANDS)", nil},
	}
	results := make([][]sample, len(runs))
	// Interleave the kinds, start-up included, so drift of a shared machine hits them alike:
	// the figures that matter are differences from the start-up median.
	for range n {
		s, err := child(exec.CommandContext(ctx, bin, "version"))
		if err != nil {
			return fmt.Errorf("version: %w", err)
		}
		version = append(version, s)
		for i, r := range runs {
			var reqs func() []simcloud.Request
			if r.job != nil {
				reqs = r.job.Reqs
			}
			s, err := once(ctx, bed, bin, reqs)
			if err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			results[i] = append(results[i], s)
		}
	}
	base := benchkit.Summarize(cpus(version))
	fmt.Println("## CPU time of one `run --once` (child rusage, utime+stime)")
	fmt.Println()
	fmt.Printf("%d runs each, interleaved. Start-up baseline `provisiond version`: %s.\n\n", n, base)
	fmt.Println("| run | CPU median | min | p90 | max | minus start-up (median) | user / sys (median) | wall median | peak RSS (median) | AT commands | serial bytes |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	printRow := func(name string, ss []sample) {
		c := benchkit.Summarize(cpus(ss))
		u := benchkit.Summarize(pick(ss, func(s sample) time.Duration { return s.user }))
		y := benchkit.Summarize(pick(ss, func(s sample) time.Duration { return s.sys }))
		w := benchkit.Summarize(pick(ss, func(s sample) time.Duration { return s.wall }))
		r := benchkit.Summarize(pick(ss, func(s sample) time.Duration { return time.Duration(s.maxRSS) }))
		at, serial := "—", "—"
		if len(ss[0].at) > 0 {
			at = fmt.Sprintf("%d", len(ss[len(ss)-1].at))
			serial = fmt.Sprintf("%d", ss[len(ss)-1].serial)
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s / %s | %s | %.1f MiB | %s | %s |\n", name,
			benchkit.Ms(c.Median), benchkit.Ms(c.Min), benchkit.Ms(c.P90), benchkit.Ms(c.Max),
			benchkit.Ms(c.Median-base.Median), benchkit.Ms(u.Median), benchkit.Ms(y.Median),
			benchkit.Ms(w.Median), float64(r.Median)/1024, at, serial)
	}
	printRow("`provisiond version`", version)
	for i, r := range runs {
		printRow("`"+r.name+"`", results[i])
	}
	fmt.Println()
	extra, err := extraBytes(ctx, bed)
	if err != nil {
		return err
	}
	fmt.Println("AT commands of the last `run --once` of each kind (serial bytes are both directions).")
	fmt.Printf("The minimum leaves out %s, which the job does not need; their exchanges (command and answer) were\n", strings.Join(notNeeded, " and "))
	fmt.Printf("replayed alone on the same modem to get their bytes: %v.\n\n", extra)
	for i, r := range runs {
		last := results[i][len(results[i])-1]
		minimum := "—"
		if r.job != nil {
			m := r.job.MinimumAT(1, true)
			minBytes := last.serial
			for _, c := range last.at {
				minBytes -= extra[c]
			}
			minimum = fmt.Sprintf("%d (ratio %.2f); serial bytes %d, minimum %d (ratio %.2f)", m, float64(len(last.at))/float64(m),
				last.serial, minBytes, float64(last.serial)/float64(minBytes))
		}
		fmt.Printf("- %s: %d commands, minimum %s: `%s`\n", r.name, len(last.at), minimum, strings.Join(shorten(last.at), "`, `"))
	}
	fmt.Println()
	return nil
}

// notNeeded are the commands of a `run --once` that the job does not need.
var notNeeded = []string{"AT%ATTESTTOKEN", "AT%CCLK?"}

// extraBytes sends each notNeeded command alone to the modem and returns the serial bytes
// of its exchange (command and answer). No daemon may be running.
func extraBytes(ctx context.Context, bed *testbed.Bed) (map[string]int64, error) {
	port, err := atmodem.OpenPort(bed.ModemPath(), 115200, "none")
	if err != nil {
		return nil, err
	}
	c := atmodem.New(port, atmodem.Config{})
	defer c.Close()
	out := map[string]int64{}
	for _, cmd := range notNeeded {
		s0 := bed.Modem().Stats()
		if _, err := c.Command(ctx, cmd); err != nil {
			return nil, fmt.Errorf("%s: %w", cmd, err)
		}
		s1 := bed.Modem().Stats()
		out[cmd] = s1.BytesIn - s0.BytesIn + s1.BytesOut - s0.BytesOut
	}
	return out, nil
}

func cpus(ss []sample) []time.Duration {
	return pick(ss, func(s sample) time.Duration { return s.cpu })
}

func pick(ss []sample, f func(sample) time.Duration) []time.Duration {
	out := make([]time.Duration, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

// once queues reqs (if any) and runs `run --once`, which must succeed.
func once(ctx context.Context, bed *testbed.Bed, bin string, reqs func() []simcloud.Request) (sample, error) {
	if reqs != nil {
		if _, err := bed.Queue(reqs()...); err != nil {
			return sample{}, err
		}
	}
	n0 := len(bed.ModemCommands())
	st0 := bed.Modem().Stats()
	cmd := bed.Command(ctx, bin, "run", "--once")
	s, err := child(cmd)
	if err != nil {
		return s, err
	}
	st1 := bed.Modem().Stats()
	s.at = bed.ModemCommands()[n0:]
	s.serial = st1.BytesIn - st0.BytesIn + st1.BytesOut - st0.BytesOut
	return s, nil
}

// child runs cmd to completion and returns its rusage.
func child(cmd *exec.Cmd) (sample, error) {
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		return sample{}, fmt.Errorf("%w: %s", err, lastLines(stderr.String(), 3))
	}
	var s sample
	s.wall = time.Since(t0)
	s.user, s.sys = benchkit.CPU(cmd.ProcessState)
	s.cpu = s.user + s.sys
	s.maxRSS = benchkit.MaxRSS(cmd.ProcessState)
	return s, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

func shorten(cmds []string) []string {
	out := make([]string, len(cmds))
	for i, c := range cmds {
		if len(c) > 32 {
			c = c[:32] + "…"
		}
		out[i] = strings.ReplaceAll(c, "`", "'")
	}
	return out
}

// daemonCPU starts a long-running `run`, triggers n attempts of the 10-command batch with
// SIGUSR1, and measures CPU per attempt, then the idle figures.
func daemonCPU(ctx context.Context, bed *testbed.Bed, bin string, n int, idle []time.Duration, long int) error {
	p, err := bed.Start(ctx, bin, nil, "run")
	if err != nil {
		return err
	}
	defer func() {
		_ = p.Signal(syscall.SIGTERM)
		wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := p.Wait(wctx); err != nil {
			_ = p.Kill()
		}
	}()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// auto_start makes a first attempt (nothing queued: NO_COMMANDS).
	if _, _, err := p.WaitEvent(wctx, 0, "STOP"); err != nil {
		return fmt.Errorf("first attempt: %w (stderr %s)", err, lastLines(p.Stderr(), 5))
	}
	attempt := func(reqs []simcloud.Request) (benchkit.Proc, benchkit.Proc, int, error) {
		if _, err := bed.Queue(reqs...); err != nil {
			return benchkit.Proc{}, benchkit.Proc{}, 0, err
		}
		from := len(p.Entries())
		n0 := len(bed.ModemCommands())
		before, err := benchkit.ReadProc(p.Pid())
		if err != nil {
			return before, before, 0, err
		}
		if err := p.Signal(syscall.SIGUSR1); err != nil {
			return before, before, 0, err
		}
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := waitOutcome(actx, p, from, "DONE"); err != nil {
			return before, before, 0, err
		}
		after, err := benchkit.ReadProc(p.Pid())
		return before, after, len(bed.ModemCommands()) - n0, err
	}
	var perAttempt []time.Duration
	var ticks time.Duration
	var at int
	var first, last benchkit.Proc
	for i := range n {
		before, after, cmds, err := attempt(benchkit.Batch10.Reqs())
		if err != nil {
			return fmt.Errorf("attempt %d: %w", i+1, err)
		}
		if i == 0 {
			first = before
		}
		last = after
		perAttempt = append(perAttempt, after.OnCPU-before.OnCPU)
		ticks += after.CPU - before.CPU
		at = cmds
	}
	s := benchkit.Summarize(perAttempt)
	fmt.Println("## CPU time per attempt of a running daemon (`run`, SIGUSR1, 10-command batch)")
	fmt.Println()
	fmt.Printf("%d attempts. Per attempt, from the threads' schedstat: %s. Mean from utime+stime ticks: %s. AT commands per attempt: %d (minimum %d).\n",
		n, s, benchkit.Ms(ticks/time.Duration(n)), at, benchkit.Batch10.MinimumAT(0, false))
	fmt.Printf("Context switches over the %d attempts: %d voluntary, %d involuntary (%.0f per attempt).\n\n",
		n, last.Voluntary-first.Voluntary, last.Involuntary-first.Involuntary,
		float64(last.Voluntary-first.Voluntary+last.Involuntary-first.Involuntary)/float64(n))

	// Idle: let the last attempt's tail settle, then watch.
	time.Sleep(2 * time.Second)
	a, err := benchkit.ReadProc(p.Pid())
	if err != nil {
		return err
	}
	t0 := time.Now()
	for _, at := range idle {
		select {
		case <-time.After(time.Until(t0.Add(at))):
		case <-ctx.Done():
			return ctx.Err()
		}
		b, err := benchkit.ReadProc(p.Pid())
		if err != nil {
			return err
		}
		printIdle(time.Since(t0), a, b)
	}
	if long <= 0 {
		return nil
	}
	fmt.Printf("## Memory over %d more attempts (10-command batch each)\n\n", long)
	fmt.Printf("Back to back; at each checkpoint RssAnon is read when the attempt's DONE is logged, then, after %s\n", settle)
	fmt.Println("without an attempt (production attempts are seconds to hours apart), everything else. Private anon:")
	fmt.Println("per mapping of /proc/PID/smaps, min(Anonymous, Private_Clean+Private_Dirty), summed.")
	fmt.Println()
	fmt.Println("| attempts | RssAnon at DONE | RssAnon | private anon (smaps) | Pss | VmRSS | RssFile | open fds | threads |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	every := max(1, long/12)
	start, err := benchkit.ReadProc(p.Pid())
	if err != nil {
		return err
	}
	var end benchkit.Proc
	for i := 1; i <= long; i++ {
		_, after, _, err := attempt(benchkit.Batch10.Reqs())
		if err != nil {
			return fmt.Errorf("long attempt %d: %w", i, err)
		}
		if i%every == 0 || i == long {
			select {
			case <-time.After(settle):
			case <-ctx.Done():
				return ctx.Err()
			}
			q, err := benchkit.ReadProc(p.Pid())
			if err != nil {
				return err
			}
			end = q
			sm, err := benchkit.ReadSmaps(p.Pid())
			if err != nil {
				return err
			}
			fmt.Printf("| %d | %s | %s | %s | %s | %s | %s | %d | %d |\n", n+i, mib(after.AnonKiB), mib(q.AnonKiB),
				mib(sm.PrivateAnon), mib(sm.Pss), mib(q.RSSKiB), mib(q.FileKiB), q.FDs, q.Threads)
		}
	}
	// Then idle as long as the longest -idle window: what the daemon keeps between attempts.
	rest := idle[len(idle)-1]
	select {
	case <-time.After(rest):
	case <-ctx.Done():
		return ctx.Err()
	}
	q, err := benchkit.ReadProc(p.Pid())
	if err != nil {
		return err
	}
	sm, err := benchkit.ReadSmaps(p.Pid())
	if err != nil {
		return err
	}
	fmt.Printf("| then %s idle | | %s | %s | %s | %s | %s | %d | %d |\n", rest, mib(q.AnonKiB),
		mib(sm.PrivateAnon), mib(sm.Pss), mib(q.RSSKiB), mib(q.FileKiB), q.FDs, q.Threads)
	fmt.Println()
	// Whatever the daemon does after an attempt's DONE (returning memory) is in these: the
	// last reading is taken after the settle time.
	fmt.Printf("CPU per attempt over the %d attempts (mean, whole run): %s from the threads' schedstat, %s from utime+stime ticks.\n\n",
		long, benchkit.Ms((end.OnCPU-start.OnCPU)/time.Duration(long)), benchkit.Ms((end.CPU-start.CPU)/time.Duration(long)))
	return nil
}

// settle is how long the long run leaves the daemon idle before a memory checkpoint.
const settle = time.Second

func mib(kib int64) string { return fmt.Sprintf("%.2f MiB", float64(kib)/1024) }

func printIdle(el time.Duration, a, b benchkit.Proc) {
	fmt.Printf("## Idle between attempts (%s window, next attempt 24 h away)\n\n", el.Round(time.Millisecond))
	fmt.Println("| figure | start | end | delta |")
	fmt.Println("|---|---|---|---|")
	fmt.Printf("| CPU, utime+stime (10 ms ticks) | %s | %s | %s |\n", a.CPU, b.CPU, b.CPU-a.CPU)
	fmt.Printf("| CPU, schedstat of live threads | %s | %s | %s |\n", benchkit.Ms(a.OnCPU), benchkit.Ms(b.OnCPU), benchkit.Ms(b.OnCPU-a.OnCPU))
	fmt.Printf("| voluntary context switches (all threads) | %d | %d | %d |\n", a.Voluntary, b.Voluntary, b.Voluntary-a.Voluntary)
	fmt.Printf("| involuntary context switches (all threads) | %d | %d | %d |\n", a.Involuntary, b.Involuntary, b.Involuntary-a.Involuntary)
	fmt.Printf("| threads | %d | %d | |\n", a.Threads, b.Threads)
	fmt.Printf("| open fds | %d | %d | |\n", a.FDs, b.FDs)
	fmt.Printf("| VmRSS | %.1f MiB | %.1f MiB | |\n", float64(a.RSSKiB)/1024, float64(b.RSSKiB)/1024)
	fmt.Printf("| VmHWM (peak RSS) | %.1f MiB | %.1f MiB | |\n", float64(a.HWMKiB)/1024, float64(b.HWMKiB)/1024)
	fmt.Printf("| RssAnon (heap, stacks) | %.1f MiB | %.1f MiB | |\n", float64(a.AnonKiB)/1024, float64(b.AnonKiB)/1024)
	fmt.Printf("| RssFile (binary pages) | %.1f MiB | %.1f MiB | |\n", float64(a.FileKiB)/1024, float64(b.FileKiB)/1024)
	fmt.Println()
}

// outcomes are the events that end an attempt (docs/protocol.md §4.8).
var outcomes = map[string]bool{"DONE": true, "NO_COMMANDS": true, "FAILED": true, "FAILED_TOO_MANY_COMMANDS": true,
	"FAILED_DEVICE_NOT_CLAIMED": true, "FAILED_WRONG_ROOT_CA": true, "FAILED_NO_VALID_DATETIME": true, "FATAL_ERROR": true}

// waitOutcome waits for the next attempt's STOP from log index from on and checks that its
// outcome event was want.
func waitOutcome(ctx context.Context, p *testbed.Process, from int, want string) error {
	if _, _, err := p.WaitEvent(ctx, from, "STOP"); err != nil {
		return err
	}
	// Find the STOP ourselves, whatever index WaitEvent returns.
	entries := p.Entries()
	stop := from
	for stop < len(entries) && entries[stop].Event() != "STOP" {
		stop++
	}
	for i := min(stop, len(entries)-1); i >= from; i-- {
		if ev := entries[i].Event(); outcomes[ev] {
			if ev != want {
				return fmt.Errorf("attempt ended in %s: %s", ev, entries[i].Str("reason"))
			}
			return nil
		}
	}
	return fmt.Errorf("attempt stopped without an outcome event")
}

// countWrites runs `run --once` once per job under `strace -f` and counts the renames onto the
// settings file (one per store write: temporary file, fsync, rename, fsync of the folder) and
// the fsyncs, next to the AT commands sent.
func countWrites(ctx context.Context, bin, transport string) error {
	if bin == "" {
		return errors.New("-writes needs -bin")
	}
	straceBin, err := exec.LookPath("strace")
	if err != nil {
		return fmt.Errorf("-writes needs strace: %w", err)
	}
	tmp, err := os.MkdirTemp("", "provisiond-writes-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bed, err := testbed.Start(ctx, testbed.Options{Transport: transport, InitialMode: 1,
		Settings: map[string]any{"provisioning.interval": "24h"}})
	if err != nil {
		return err
	}
	defer bed.Close()
	// The first run writes the root CA and sets the clock; it is not counted.
	if _, err := once(ctx, bed, bin, benchkit.Realistic.Reqs); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	fmt.Printf("# store writes per `run --once` (%s), binary %s\n\n", transport, bin)
	fmt.Println("| job | AT commands sent | of them the job's | store writes (in place + new slot file) | checkpoints of the settings file | fsync + fdatasync | store writes per job AT command |")
	fmt.Println("|---|---|---|---|---|---|---|")
	store := filepath.Base(bed.StorePath())
	for _, job := range []*benchkit.Job{&benchkit.Batch10, &benchkit.Realistic} {
		if _, err := bed.Queue(job.Reqs()...); err != nil {
			return err
		}
		trace := filepath.Join(tmp, job.Name+".strace")
		n0 := len(bed.ModemCommands())
		cmd := bed.Command(ctx, bin, "run", "--once")
		cmd.Args = append([]string{straceBin, "-f", "-qq", "-o", trace,
			"-e", "trace=fsync,fdatasync,rename,renameat,renameat2", bin}, cmd.Args[1:]...)
		cmd.Path = straceBin
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w: %s", job.Name, err, lastLines(string(out), 3))
		}
		b, err := os.ReadFile(trace)
		if err != nil {
			return err
		}
		// A store write is a data sync of a slot written in place (the only fdatasync the
		// daemon makes) or a new slot file renamed into place; a checkpoint is a rename onto
		// the settings file (internal/store).
		writes, checkpoints, syncs := 0, 0, 0
		for _, l := range strings.Split(string(b), "\n") {
			switch {
			case strings.Contains(l, "rename") && strings.Contains(l, "/"+store+".slots\""):
				writes++
			case strings.Contains(l, "rename") && strings.Contains(l, "/"+store+"\""):
				checkpoints++
			case strings.Contains(l, "fdatasync("):
				writes++
				syncs++
			case strings.Contains(l, "fsync("):
				syncs++
			}
		}
		at := len(bed.ModemCommands()) - n0
		fmt.Printf("| %s | %d | %d | %d | %d | %d | %.2f |\n", job.Name, at, job.AT, writes, checkpoints, syncs, float64(writes)/float64(job.AT))
	}
	return nil
}
