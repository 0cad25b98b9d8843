// Command station measures a provisioning station with its live page open (BENCHMARKS.md
// §11): n simulated nRF91s plugged in at once, one provisiond instance each with the
// realistic job waiting at one simulated service, `provisiond dashboard` as a process of its
// own, and its page open in headless Chromium driven over the DevTools protocol. It reports
// the dashboard's CPU and memory (from /proc) during the run and idle afterwards, the wall
// time from plug-in to every attempt DONE and to every tile showing it, and for each modem
// the delay from its daemon's DONE (last_attempt.finished in its status) to its tile
// changing in the open page, timed in the page by a MutationObserver with Date.now() (same
// host clock).
//
// Usage: go run ./bench/station [-bin path] [-n 64] [-idle 10s]
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/provisiond/provisiond/bench/internal/benchkit"
	"github.com/provisiond/provisiond/internal/fleet"
	"github.com/provisiond/provisiond/internal/fleet/livepage"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/testbed"
)

func main() {
	bin := benchkit.BinFlag()
	n := flag.Int("n", 64, "boards and instances")
	idle := flag.Duration("idle", 10*time.Second, "how long to watch the dashboard idle after every tile is done")
	every := flag.Duration("every", 0, "the dashboard's --every (0: its default)")
	flag.Parse()
	benchkit.Main("station", func(ctx context.Context) error {
		return run(ctx, *bin, *n, *idle, *every)
	})
}

func run(ctx context.Context, bin string, n int, idle, every time.Duration) error {
	chromium, err := livepage.Find()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	tmp, err := os.MkdirTemp("", "provisiond-station-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if bin, err = benchkit.Binary(ctx, bin, tmp); err != nil {
		return err
	}
	load0 := loadavg()
	started := time.Now()

	cloud, err := simcloud.New(simcloud.Config{StateDir: filepath.Join(tmp, "cloud")})
	if err != nil {
		return err
	}
	if err := cloud.Start(ctx); err != nil {
		return err
	}
	defer cloud.Close()
	runDir := filepath.Join(tmp, "run")
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return err
	}

	dash, base, err := startDashboard(ctx, bin, runDir, every)
	if err != nil {
		return err
	}
	defer func() { _ = dash.Process.Signal(os.Interrupt); _ = dash.Wait() }()
	pid := dash.Process.Pid

	page, err := livepage.Open(ctx, livepage.Config{Chromium: chromium}, base+"/")
	if err != nil {
		return err
	}
	defer page.Close()
	if err := page.MarkWindow(ctx); err != nil {
		return err
	}
	if err := page.Watch(ctx); err != nil {
		return err
	}

	// The same event stream, read here too: each snapshot's time is when the dashboard's
	// collector finished asking the sockets, which splits the delay in two.
	stream := &streamLog{}
	go stream.read(ctx, base+"/events")
	before, err := benchkit.ReadProc(pid)
	if err != nil {
		return err
	}
	before0 := time.Now()

	// Round 1, plug-in: every board with its job already waiting, so each instance's first
	// attempt, right at its start, provisions it. A tile appears when the dashboard first
	// finds the instance's socket, often already DONE.
	plugged := time.Now()
	st, err := testbed.PlugIn(ctx, testbed.StationOptions{Boards: n, Bin: bin, RunDir: runDir, Cloud: cloud,
		Prepare: func(b *testbed.Bed) error { _, err := b.QueueRealisticJob(); return err }})
	if err != nil {
		return err
	}
	defer st.Close()
	answering := time.Since(plugged)
	if err := waitDone(ctx, st, func(*testbed.Board) int { return 0 }); err != nil {
		return err
	}
	if err := page.WaitFor(ctx, allTiles(n, 1), 60*time.Second); err != nil {
		return err
	}
	tiles1 := time.Now()
	snap1, err := listJSON(ctx, bin, runDir)
	if err != nil {
		return err
	}
	cpu1, err := benchkit.ReadProc(pid)
	if err != nil {
		return err
	}

	// Round 2, on tiles already shown: a new job for every board and `provisiond now` on
	// every instance at once, as a station does after a bulk claim; each tile changes from
	// DONE (one good attempt) through running to DONE with two.
	from := make(map[*testbed.Board]int, n)
	for _, b := range st.Boards {
		from[b] = len(b.Proc.Entries())
		if _, err := b.Bed.QueueRealisticJob(); err != nil {
			return err
		}
	}
	round2 := time.Now()
	if err := st.Each(func(b *testbed.Board) error {
		_, err := b.Bed.Output(ctx, bin, "now")
		return err
	}); err != nil {
		return err
	}
	if err := waitDone(ctx, st, func(b *testbed.Board) int { return from[b] }); err != nil {
		return err
	}
	if err := page.WaitFor(ctx, allTiles(n, 2), 60*time.Second); err != nil {
		return err
	}
	tiles2 := time.Now()
	cpu2, err := benchkit.ReadProc(pid)
	if err != nil {
		return err
	}
	smaps2, _ := benchkit.ReadSmaps(pid)
	time.Sleep(idle)
	after, err := benchkit.ReadProc(pid)
	if err != nil {
		return err
	}
	afterSmaps, _ := benchkit.ReadSmaps(pid)
	load1 := loadavg()

	same, err := page.SameDocument(ctx)
	if err != nil || !same {
		return fmt.Errorf("the page was reloaded or left during the run (%v)", err)
	}
	changes, err := page.Changes(ctx)
	if err != nil {
		return err
	}
	snap2, err := listJSON(ctx, bin, runDir)
	if err != nil {
		return err
	}
	var failures []string
	delays1, last1, f1 := delays(snap1, changes, 1)
	delays2, last2, f2 := delays(snap2, changes, 2)
	polled1, pushed1, tl1 := stream.split(snap1, changes, 1)
	polled2, pushed2, tl2 := stream.split(snap2, changes, 2)
	failures = append(append(failures, f1...), f2...)
	provisioned := 0
	for _, b := range st.Boards {
		jobs, err := cloud.Jobs(b.Bed.UUID())
		ok := err == nil && len(jobs) > 0
		for _, j := range jobs {
			ok = ok && j.Status == simcloud.StatusSucceeded
		}
		if ok {
			provisioned++
		} else {
			failures = append(failures, fmt.Sprintf("%s: jobs %v (%v)", b.Name, jobs, err))
		}
	}

	cpuRun1 := cpu1.CPU - before.CPU
	cpuRun2 := cpu2.CPU - cpu1.CPU
	icpu := after.CPU - cpu2.CPU
	fmt.Printf("# station: %d boards, %d instances, the dashboard as its own process, its page open in headless Chromium\n\n", n, n)
	fmt.Printf("machine: %s\nstarted %s; load average %s at the start, %s at the end\ndashboard: %s\n\n",
		benchkit.Machine(), started.UTC().Format(time.RFC3339), load0, load1, dashArgs(every))
	fmt.Println("| figure | round 1: plug-in, job waiting | round 2: new job, `now` on every instance |")
	fmt.Println("|---|---|---|")
	fmt.Printf("| boards provisioned (DONE in status, every job SUCCEEDED at the service) | %d / %d | %d / %d (all jobs of both rounds) |\n",
		n-len(f1), n, provisioned, n)
	fmt.Printf("| start → every instance's modem answering | %.2f s | – |\n", answering.Seconds())
	fmt.Printf("| start → last daemon DONE (its last_attempt.finished) | %.2f s | %.2f s |\n",
		last1.Sub(plugged).Seconds(), last2.Sub(round2).Seconds())
	fmt.Printf("| start → every tile showing that DONE in the open page | %.2f s | %.2f s |\n",
		tiles1.Sub(plugged).Seconds(), tiles2.Sub(round2).Seconds())
	fmt.Printf("| DONE → its tile changed in the page: p50 / p95 / max (min) over the modems | %s | %s |\n",
		spread(delays1), spread(delays2))
	fmt.Printf("| of which DONE → the collector's first snapshot showing it (its poll period + asking %d sockets) | %s | %s |\n",
		n, spread(polled1), spread(polled2))
	fmt.Printf("| (DONE → the first snapshot with it on the tile's timeline, whatever the tile's class) | %s | %s |\n",
		spread(tl1), spread(tl2))
	fmt.Printf("| of which that snapshot → the tile drawn (event stream push + the page's redraw) | %s | %s |\n",
		spread(pushed1), spread(pushed2))
	fmt.Printf("| dashboard CPU (utime+stime) over the round | %s in %.2f s = %.0f %% of one core | %s in %.2f s = %.0f %% of one core |\n",
		cpuRun1, tiles1.Sub(before0).Seconds(), 100*cpuRun1.Seconds()/tiles1.Sub(before0).Seconds(),
		cpuRun2, tiles2.Sub(tiles1).Seconds(), 100*cpuRun2.Seconds()/tiles2.Sub(tiles1).Seconds())
	fmt.Println()
	fmt.Println("| the dashboard process | value |")
	fmt.Println("|---|---|")
	fmt.Printf("| CPU idle afterwards (%d instances, page open) | %s in %s = %.1f %% of one core |\n",
		n, icpu, idle, 100*icpu.Seconds()/idle.Seconds())
	fmt.Printf("| VmRSS after round 2 / at the end / peak (VmHWM) | %.1f / %.1f / %.1f MiB |\n",
		mib(cpu2.RSSKiB), mib(after.RSSKiB), mib(after.HWMKiB))
	fmt.Printf("| Pss / Private after round 2 | %.1f / %.1f MiB |\n", mib(smaps2.Pss), mib(smaps2.Private))
	fmt.Printf("| Pss / Private at the end (after %s idle) | %.1f / %.1f MiB |\n", idle, mib(afterSmaps.Pss), mib(afterSmaps.Private))
	fmt.Printf("| threads / open fds at the end | %d / %d |\n", after.Threads, after.FDs)
	fmt.Printf("| tile changes logged by the page's observer | %d (no reload: the window's marker survived) |\n", len(changes))
	fmt.Println()
	if len(failures) > 0 {
		for _, f := range failures {
			fmt.Println("FAIL:", f)
		}
		return fmt.Errorf("%d failure(s)", len(failures))
	}
	return nil
}

// waitDone waits for a DONE event in every board's log from the entry from(b) on.
func waitDone(ctx context.Context, st *testbed.Station, from func(*testbed.Board) int) error {
	var errs error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, b := range st.Boards {
		wg.Go(func() {
			if _, _, err := b.Proc.WaitEvent(ctx, from(b), "DONE"); err != nil {
				mu.Lock()
				errs = errors.Join(errs, fmt.Errorf("%s: %w\n%s", b.Name, err, b.Proc.Stderr()))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errs
}

// allTiles is true in the page when it shows n tiles, each done with k good attempts.
func allTiles(n, k int) string {
	return fmt.Sprintf(`(() => { const t = document.querySelectorAll("#tiles .tile");
		return t.length === %d && Array.from(t).every(x => x.dataset.class === "done" && x.querySelectorAll(".tl i.ok").length === %d); })()`, n, k)
}

// delays pairs each instance's last attempt (DONE, its k-th good one) with the first look of
// its tile showing it, and returns the delays, sorted, and the latest DONE.
func delays(snap fleet.Snapshot, changes []livepage.Change, k int) ([]time.Duration, time.Time, []string) {
	var ds []time.Duration
	var last time.Time
	var failures []string
	for _, r := range snap.Instances {
		if r.Status == nil || r.Status.LastAttempt == nil || r.Status.LastAttempt.Event != "DONE" {
			failures = append(failures, fmt.Sprintf("%s: no DONE in its status (%s)", r.Instance, r.Error))
			continue
		}
		fin := r.Status.LastAttempt.Finished
		if fin.After(last) {
			last = fin
		}
		i := slices.IndexFunc(changes, func(c livepage.Change) bool {
			return c.Instance == r.Instance && c.Class == "done" && c.Last == "last: DONE" && c.OK == k
		})
		if i < 0 {
			failures = append(failures, fmt.Sprintf("%s: its tile never showed DONE with %d good attempt(s)", r.Instance, k))
			continue
		}
		ds = append(ds, time.UnixMilli(changes[i].At).Sub(fin))
	}
	slices.Sort(ds)
	return ds, last, failures
}

// streamLog keeps, for each snapshot the event stream pushed, its time and each tile's
// class and good attempts.
type streamLog struct {
	mu    sync.Mutex
	snaps []streamSnap
}

type streamSnap struct {
	time  time.Time
	tiles map[string]string // instance → class/ok
}

func (l *streamLog) read(ctx context.Context, url string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var pd fleet.PageData
		if json.Unmarshal([]byte(data), &pd) != nil {
			continue
		}
		s := streamSnap{time: pd.Time, tiles: make(map[string]string, len(pd.Instances))}
		for _, t := range pd.Instances {
			good := 0
			for _, m := range t.Timeline {
				if m.OK {
					good++
				}
			}
			s.tiles[t.Instance] = fmt.Sprintf("%s/%d", t.Class, good)
		}
		l.mu.Lock()
		l.snaps = append(l.snaps, s)
		l.mu.Unlock()
	}
}

// split divides each instance's delay at the first snapshot showing its k-th good attempt
// done: DONE → that snapshot's time, and that time → the tile's change in the page.
func (l *streamLog) split(snap fleet.Snapshot, changes []livepage.Change, k int) (polled, pushed, timeline []time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	want := fmt.Sprintf("done/%d", k)
	for _, r := range snap.Instances {
		if r.Status == nil || r.Status.LastAttempt == nil {
			continue
		}
		si := slices.IndexFunc(l.snaps, func(s streamSnap) bool { return s.tiles[r.Instance] == want })
		ci := slices.IndexFunc(changes, func(c livepage.Change) bool {
			return c.Instance == r.Instance && c.Class == "done" && c.Last == "last: DONE" && c.OK == k
		})
		if si < 0 || ci < 0 {
			continue
		}
		at := l.snaps[si].time
		polled = append(polled, at.Sub(r.Status.LastAttempt.Finished))
		// The DONE reaches the tile's timeline while the instance may still report itself
		// provisioning (the tile still "running"): the daemon's own work after the attempt.
		ti := slices.IndexFunc(l.snaps, func(s streamSnap) bool { return strings.HasSuffix(s.tiles[r.Instance], fmt.Sprintf("/%d", k)) })
		timeline = append(timeline, l.snaps[ti].time.Sub(r.Status.LastAttempt.Finished))
		pushed = append(pushed, time.UnixMilli(changes[ci].At).Sub(at))
	}
	slices.Sort(polled)
	slices.Sort(pushed)
	slices.Sort(timeline)
	return polled, pushed, timeline
}

func spread(ds []time.Duration) string {
	return fmt.Sprintf("%s / %s / %s (%s)", ms(pct(ds, 0.5)), ms(pct(ds, 0.95)), ms(pct(ds, 1)), ms(pct(ds, 0)))
}

func dashArgs(every time.Duration) string {
	if every > 0 {
		return "provisiond dashboard --run-dir DIR --listen 127.0.0.1:PORT --every " + every.String()
	}
	return "provisiond dashboard --run-dir DIR --listen 127.0.0.1:PORT (default --every)"
}

// startDashboard runs the dashboard on a free loopback port and waits until it answers.
func startDashboard(ctx context.Context, bin, runDir string, every time.Duration) (*exec.Cmd, string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	args := []string{"dashboard", "--run-dir", runDir, "--listen", addr}
	if every > 0 {
		args = append(args, "--every", every.String())
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	// Until the first instance starts it reports an empty run folder every period.
	cmd.Stderr = nil
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	base := "http://" + addr
	for range 200 {
		if resp, err := http.Get(base + "/"); err == nil {
			resp.Body.Close()
			return cmd, base, nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return nil, "", fmt.Errorf("the dashboard never answered at %s", base)
}

// listJSON is `provisiond list --json` of the station.
func listJSON(ctx context.Context, bin, runDir string) (fleet.Snapshot, error) {
	var s fleet.Snapshot
	out, err := exec.CommandContext(ctx, bin, "list", "--json", "--run-dir", runDir).Output()
	if err != nil && len(out) == 0 {
		return s, fmt.Errorf("provisiond list --json: %w", err)
	}
	if err := json.Unmarshal(out, &s); err != nil {
		return s, fmt.Errorf("provisiond list --json: %w", err)
	}
	return s, nil
}

func pct(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(q*float64(len(sorted)-1)+0.5)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

func mib(kib int64) float64 { return float64(kib) / 1024 }

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}
