// Package benchkit holds what the bench programs share: building the provisiond binary,
// reading a process's CPU, context switches, memory and open files from /proc and rusage,
// summarising samples, and describing the machine. It is Linux-only, like the daemon's
// serial code, and is never imported by provisiond itself.
package benchkit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNoRun means the binary has no `run` subcommand (main.go does not wire it yet).
var ErrNoRun = errors.New("benchkit: binary has no run subcommand")

// ReleaseTags are the build tags of `make build` and `make deb`: net/http without HTTP/2.
const ReleaseTags = "nethttpomithttp2"

// Build builds ./cmd/provisiond of the module at root into dir and returns the binary's path.
// Stripped builds use -trimpath -tags ReleaseTags -ldflags '-s -w', the release form. The binary must offer
// `run`, or ErrNoRun is returned.
func Build(ctx context.Context, root, dir string, stripped bool) (string, error) {
	out := filepath.Join(dir, "provisiond")
	args := []string{"build", "-o", out}
	if stripped {
		args = append(args, "-trimpath", "-tags", ReleaseTags, "-ldflags", "-s -w")
	}
	args = append(args, "./cmd/provisiond")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("benchkit: go build: %w: %s", err, b)
	}
	if err := CheckRun(ctx, out); err != nil {
		return "", err
	}
	return out, nil
}

// CheckRun fails with ErrNoRun when bin has no run subcommand.
func CheckRun(ctx context.Context, bin string) error {
	b, err := exec.CommandContext(ctx, bin, "run", "--help").CombinedOutput()
	if err != nil || !bytes.Contains(b, []byte("--once")) {
		return fmt.Errorf("%w: %s", ErrNoRun, bin)
	}
	return nil
}

// Binary is the daemon a bench measures: bin when the user gave one (it must offer `run`),
// else a stripped build of this module into dir.
func Binary(ctx context.Context, bin, dir string) (string, error) {
	if bin != "" {
		return bin, CheckRun(ctx, bin)
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return Build(ctx, root, dir, true)
}

// ModuleRoot finds the directory holding go.mod, from the working directory up.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("benchkit: no go.mod above the working directory")
		}
		dir = parent
	}
}

// CPU is the user and system time a finished child used (its rusage).
func CPU(ps *os.ProcessState) (user, sys time.Duration) {
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok {
		return ps.UserTime(), ps.SystemTime()
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// MaxRSS is the peak resident set of a finished child in KiB (rusage ru_maxrss).
func MaxRSS(ps *os.ProcessState) int64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss
	}
	return 0
}

// ClockTick is the unit of utime/stime in /proc/<pid>/stat (USER_HZ; 100 on Linux).
const ClockTick = 10 * time.Millisecond

// Proc is one reading of a live process from /proc.
type Proc struct {
	CPU         time.Duration // utime+stime of every thread, live or gone (ClockTick resolution)
	OnCPU       time.Duration // time on CPU of the live threads, ns resolution (task schedstat)
	Voluntary   int64         // voluntary context switches, summed over the live threads
	Involuntary int64         // involuntary context switches, summed over the live threads
	RSSKiB      int64         // VmRSS
	HWMKiB      int64         // VmHWM: peak RSS
	AnonKiB     int64         // RssAnon: heap, stacks and other private memory
	FileKiB     int64         // RssFile: mapped file pages (mostly the binary's text)
	Threads     int
	FDs         int
}

// ReadProc reads pid's figures. Context switches are summed over /proc/<pid>/task/*/status:
// the process-level status line counts only the main thread.
func ReadProc(pid int) (Proc, error) {
	var p Proc
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, err
	}
	// Fields after the command name, which is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return p, fmt.Errorf("benchkit: /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime 15.
	if len(f) < 13 {
		return p, fmt.Errorf("benchkit: /proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return p, fmt.Errorf("benchkit: /proc/%d/stat: %w", pid, err)
	}
	p.CPU = time.Duration(ut+st) * ClockTick

	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return p, err
	}
	p.RSSKiB = statusField(status, "VmRSS:")
	p.HWMKiB = statusField(status, "VmHWM:")
	p.AnonKiB = statusField(status, "RssAnon:")
	p.FileKiB = statusField(status, "RssFile:")
	p.Threads = int(statusField(status, "Threads:"))

	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return p, err
	}
	for _, t := range tasks {
		ts, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // the thread ended between the listing and the read
		}
		p.Voluntary += statusField(ts, "voluntary_ctxt_switches:")
		p.Involuntary += statusField(ts, "nonvoluntary_ctxt_switches:")
		if ss, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name())); err == nil {
			if f := strings.Fields(string(ss)); len(f) > 0 {
				ns, _ := strconv.ParseInt(f[0], 10, 64)
				p.OnCPU += time.Duration(ns)
			}
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return p, err
	}
	p.FDs = len(fds)
	return p, nil
}

func statusField(status []byte, name string) int64 {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// Smaps is the memory of a live process by kind, summed over /proc/<pid>/smaps, in KiB.
type Smaps struct {
	Pss         int64 // proportional set size: each page divided by the processes mapping it
	Private     int64 // Private_Clean + Private_Dirty: pages no other process maps (file or anonymous)
	Anonymous   int64 // anonymous pages: heap, stacks, written pages of the binary's data
	PrivateAnon int64 // per mapping, min(Anonymous, Private_Clean + Private_Dirty): the private anonymous pages
}

// ReadSmaps reads pid's /proc/<pid>/smaps. PrivateAnon is the figure a host pays for each more
// instance of the same binary: the binary's file pages are shared, its heap and stacks are not.
func ReadSmaps(pid int) (Smaps, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return Smaps{}, err
	}
	s, err := parseSmaps(data)
	if err != nil {
		return Smaps{}, fmt.Errorf("benchkit: /proc/%d/smaps: %w", pid, err)
	}
	return s, nil
}

func parseSmaps(data []byte) (Smaps, error) {
	var s Smaps
	var anon, priv int64 // of the current mapping
	flush := func() {
		s.PrivateAnon += min(anon, priv)
		anon, priv = 0, 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || !strings.HasSuffix(f[0], ":") {
			continue
		}
		if len(f) != 3 || f[2] != "kB" {
			// A mapping's header line ("addr-addr perms offset dev inode [path]") starts with
			// no colon-terminated key; a key line other than a size (VmFlags:) is skipped.
			continue
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return Smaps{}, fmt.Errorf("%q: %w", sc.Text(), err)
		}
		switch f[0] {
		case "Size:":
			flush() // the first key of each mapping
		case "Pss:":
			s.Pss += v
		case "Private_Clean:", "Private_Dirty:":
			s.Private += v
			priv += v
		case "Anonymous:":
			s.Anonymous += v
			anon += v
		}
	}
	flush()
	return s, sc.Err()
}

// SelfFDs counts this process's open file descriptors.
func SelfFDs() int {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(fds)
}

// Summary describes a set of durations.
type Summary struct {
	N                          int
	Min, P10, Median, P90, Max time.Duration
	Mean                       time.Duration
}

// Summarize sorts a copy of ds and picks its order statistics.
func Summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	at := func(q float64) time.Duration { return s[int(q*float64(len(s)-1)+0.5)] }
	return Summary{N: len(s), Min: s[0], P10: at(0.1), Median: at(0.5), P90: at(0.9), Max: s[len(s)-1],
		Mean: sum / time.Duration(len(s))}
}

func (s Summary) String() string {
	return fmt.Sprintf("n=%d median %s (min %s, p10 %s, p90 %s, max %s)", s.N, Ms(s.Median), Ms(s.Min),
		Ms(s.P10), Ms(s.P90), Ms(s.Max))
}

// Ms formats d in milliseconds with two decimals.
func Ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

// Machine describes the host: CPU count, model, kernel and Go version.
func Machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "unknown kernel"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	gover := runtime.Version()
	if b, err := exec.Command("go", "version").Output(); err == nil {
		gover = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("nproc %d, %s, Linux %s, %s", runtime.NumCPU(), model, kernel, gover)
}

// Cores is the number of CPUs this process may run on (nproc).
func Cores() int { return runtime.NumCPU() }
