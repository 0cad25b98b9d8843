// Command footprint starts N long-running daemons (`provisiond run`), each on its own
// simulated modem and all against one simulated service, lets each make its first attempt
// (nothing queued), waits until they are idle, and reads /proc/PID/smaps_rollup of each:
// Rss, Pss (what the host pays: shared pages are split between the processes that map them)
// private memory (Private_Clean + Private_Dirty: pages no other process maps, so with one
// instance the binary's own pages count too) and anonymous memory (heap and stacks, what each
// more instance costs whatever the count).
//
// Usage: go run ./bench/footprint [-bin path] [-n 1,64] [-settle 5s]
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/provisiond/provisiond/bench/internal/benchkit"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/testbed"
)

func main() {
	bin := benchkit.BinFlag()
	ns := flag.String("n", "1,64", "instance counts, comma-separated")
	settle := flag.Duration("settle", 5*time.Second, "idle time after the last first attempt before reading")
	flag.Parse()
	benchkit.Main("footprint", func(ctx context.Context) error {
		return run(ctx, *bin, *ns, *settle)
	})
}

// rollup is the part of smaps_rollup we report, in KiB.
type rollup struct{ rss, pss, private, anon int64 }

func readRollup(pid int) (rollup, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return rollup{}, err
	}
	var r rollup
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "Rss:":
			r.rss = v
		case "Pss:":
			r.pss = v
		case "Private_Clean:", "Private_Dirty:":
			r.private += v
		case "Anonymous:":
			r.anon = v
		}
	}
	return r, sc.Err()
}

func run(ctx context.Context, bin, ns string, settle time.Duration) error {
	tmp, err := os.MkdirTemp("", "provisiond-footprint-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if bin, err = benchkit.Binary(ctx, bin, tmp); err != nil {
		return err
	}
	st, err := os.Stat(bin)
	if err != nil {
		return err
	}
	fmt.Printf("# footprint: %s, binary %d bytes\n\n", benchkit.Machine(), st.Size())
	fmt.Println("| instances | Rss per instance (median) | Pss per instance (median) | private per instance (median) | anonymous per instance (median) | Pss, all instances | Rss, all instances |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, s := range strings.Split(ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("-n %q: want positive counts", ns)
		}
		if err := measure(ctx, bin, filepath.Join(tmp, s), n, settle); err != nil {
			return fmt.Errorf("%d instances: %w", n, err)
		}
	}
	return nil
}

func measure(ctx context.Context, bin, dir string, n int, settle time.Duration) error {
	cloud, err := simcloud.New(simcloud.Config{StateDir: filepath.Join(dir, "cloud")})
	if err != nil {
		return err
	}
	if err := cloud.Start(ctx); err != nil {
		return err
	}
	defer cloud.Close()
	var procs []*testbed.Process
	defer func() {
		for _, p := range procs {
			_ = p.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if _, err := p.Wait(wctx); err != nil {
				_ = p.Kill()
			}
			cancel()
		}
	}()
	for i := range n {
		bed, err := testbed.Start(ctx, testbed.Options{Dir: filepath.Join(dir, strconv.Itoa(i)), SharedCloud: cloud})
		if err != nil {
			return err
		}
		defer bed.Close()
		p, err := bed.Start(ctx, bin, nil, "run")
		if err != nil {
			return err
		}
		procs = append(procs, p)
	}
	for i, p := range procs {
		wctx, cancel := context.WithTimeout(ctx, 120*time.Second)
		_, _, err := p.WaitEvent(wctx, 0, "STOP")
		cancel()
		if err != nil {
			return fmt.Errorf("instance %d first attempt: %w (%s)", i, err, p.Stderr())
		}
	}
	time.Sleep(settle)
	var rss, pss, priv, anon []int64
	var sumPss, sumRss int64
	for _, p := range procs {
		r, err := readRollup(p.Pid())
		if err != nil {
			return err
		}
		rss, pss, priv, anon = append(rss, r.rss), append(pss, r.pss), append(priv, r.private), append(anon, r.anon)
		sumPss += r.pss
		sumRss += r.rss
	}
	fmt.Printf("| %d | %s | %s | %s | %s | %s | %s |\n", n, mib(med(rss)), mib(med(pss)), mib(med(priv)), mib(med(anon)), mib(sumPss), mib(sumRss))
	return nil
}

func med(v []int64) int64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }
