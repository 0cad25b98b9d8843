// Command abstat summarises the log that wrap.sh writes when bench/cost runs several
// provisiond binaries in alternation under `perf stat`: per binary and kind of run, the median
// of each count, and the median CPU (task-clock) above the same binary's start-up (`version`).
//
// Usage: go run ./bench/abstat -log DIR/log [-kinds batch,realistic,none]
//
// -kinds names the `run --once` runs of a round in bench/cost's order (run1, run2, …).
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
)

func main() {
	logPath := flag.String("log", "", "the log wrap.sh wrote (ABSTAT_DIR/log)")
	kinds := flag.String("kinds", "batch,realistic,none", "names of run1, run2, … in bench/cost's order")
	flag.Parse()
	if err := run(*logPath, strings.Split(*kinds, ","), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "abstat:", err)
		os.Exit(1)
	}
}

func run(logPath string, kinds []string, w io.Writer) error {
	if logPath == "" {
		return errors.New("-log is required")
	}
	f, err := os.Open(logPath)
	if err != nil {
		return err
	}
	defer f.Close()
	samples, err := parse(f)
	if err != nil {
		return fmt.Errorf("%s: %w", logPath, err)
	}
	return report(w, summarize(samples), kinds)
}

// events are the counts wrap.sh asks perf for, in the order of the report's columns.
var events = []string{"task-clock", "page-faults", "context-switches", "raw_syscalls:sys_enter",
	"syscalls:sys_enter_nanosleep", "syscalls:sys_enter_futex"}

// key names one process: the binary, the kind of run and the round.
type key struct{ bin, kind, round string }

// parse reads lines "binN,kind,round,value,unit,event,…" into one map of counts per process.
func parse(r io.Reader) (map[key]map[string]float64, error) {
	out := map[key]map[string]float64{}
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		f := strings.Split(sc.Text(), ",")
		if len(f) < 6 {
			return nil, fmt.Errorf("line %d: want at least 6 fields, got %d", line, len(f))
		}
		v, err := strconv.ParseFloat(f[3], 64)
		if err != nil {
			// perf writes "<not counted>" or "<not supported>" for an event it could not count.
			continue
		}
		k := key{f[0], f[1], f[2]}
		if out[k] == nil {
			out[k] = map[string]float64{}
		}
		out[k][f[5]] = v
	}
	return out, sc.Err()
}

// group is one binary's runs of one kind: per event, every process's count.
type group struct {
	runs   int
	counts map[string][]float64
}

// groupKey names a group: one binary, one kind of run.
type groupKey struct{ bin, kind string }

func summarize(samples map[key]map[string]float64) map[groupKey]*group {
	out := map[groupKey]*group{}
	for k, counts := range samples {
		gk := groupKey{k.bin, k.kind}
		g := out[gk]
		if g == nil {
			g = &group{counts: map[string][]float64{}}
			out[gk] = g
		}
		g.runs++
		for ev, v := range counts {
			g.counts[ev] = append(g.counts[ev], v)
		}
	}
	return out
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func report(w io.Writer, groups map[groupKey]*group, kinds []string) error {
	var bins []string
	for g := range groups {
		if !slices.Contains(bins, g.bin) {
			bins = append(bins, g.bin)
		}
	}
	sort.Strings(bins)
	if len(bins) == 0 {
		return errors.New("no runs in the log")
	}
	fmt.Fprintln(w, "| binary | run | runs | CPU (task-clock) median | above start-up | page faults | context switches | system calls | nanosleep | futex |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	// The rows of one binary: its start-up, then the kinds in bench/cost's order.
	type row struct{ name, kind string }
	rows := []row{{"`version`", "start"}}
	for i, k := range kinds {
		rows = append(rows, row{k, "run" + strconv.Itoa(i+1)})
	}
	for _, bin := range bins {
		start, ok := groups[groupKey{bin, "start"}]
		if !ok {
			return fmt.Errorf("%s: no start-up (version) runs", bin)
		}
		base := median(start.counts["task-clock"])
		for _, r := range rows {
			g, ok := groups[groupKey{bin, r.kind}]
			if !ok {
				continue
			}
			cpu := median(g.counts["task-clock"])
			fmt.Fprintf(w, "| %s | %s | %d | %.2f ms | %.2f ms |", bin, r.name, g.runs, cpu, cpu-base)
			for _, ev := range events[1:] {
				if xs := g.counts[ev]; len(xs) > 0 {
					fmt.Fprintf(w, " %.0f |", median(xs))
				} else {
					fmt.Fprint(w, " — |")
				}
			}
			fmt.Fprintln(w)
		}
	}
	return nil
}
