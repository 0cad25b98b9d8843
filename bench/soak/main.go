// Command soak runs the built provisiond for many consecutive attempts with random faults
// against the simulators of internal/testbed, and checks the crash-safety invariants of
// docs/design.md after every round:
//
//   - the daemon is alive (never restarted by the soak);
//   - the settings file loads and, once the round has settled, holds no pending journal or
//     outbox;
//   - every command the service queued is resolved (succeeded or failed);
//   - no AT command was executed twice (the simulated modem's CommandLog against the
//     queue; every queued AT command line is unique, by its security tag);
//   - every AT command the modem executed has exactly one response in the service's
//     records, and no command has more than one;
//   - the modem is back in its mode (+CFUN=1) and CMEE (0);
//
// and that the daemon's open files, threads and RSS (from /proc) and this process's goroutines
// and open files stay flat.
//
// One round is: queue a job (a client certificate by %KEYGEN, or credential commands and a
// config command, FINISHED or not), inject one random fault, trigger an attempt (SIGUSR1, or
// `provisiond now` every fifth round), wait for its end, clear the fault, and trigger clean
// attempts until the round has settled (bounded). Faults: modem busy (stall), garbage lines,
// URC storms, chunked answers, CME errors ignored and not, unplug before/during/after the
// batch (and replug), service 500/503, dropped requests, failing uploads, 401, malformed and
// too-many batches, slow answers; and clean rounds.
//
// An opt-in fault, kill (SIGKILL at a random moment, then a restart as systemd would), is drawn
// only when named in -faults.
//
// Usage: go run ./bench/soak [-n 1000] [-transport http|coap|both] [-seed N] [-bin path] [-faults a,b] [-v]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/provisiond/provisiond/bench/internal/benchkit"
	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/simmodem"
	"github.com/provisiond/provisiond/internal/store"
	"github.com/provisiond/provisiond/internal/testbed"
)

func main() {
	o := options{}
	flag.IntVar(&o.rounds, "n", 1000, "rounds (one faulted attempt each, plus clean attempts until settled)")
	flag.StringVar(&o.transport, "transport", "both", "http, coap or both (alternating rounds, one daemon each)")
	flag.Uint64Var(&o.seed, "seed", 0, "random seed (0: from the clock; printed)")
	bin := benchkit.BinFlag()
	flag.StringVar(&o.faults, "faults", "", "comma-separated fault names to draw from; \"all\" is every default fault (default: all; kill only when named)")
	flag.BoolVar(&o.verbose, "v", false, "print every round")
	flag.DurationVar(&o.maxTime, "max-time", 0, "stop after this long (0: no limit); the rounds done are reported")
	flag.Parse()
	o.bin = *bin
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	benchkit.Main("soak", func(ctx context.Context) error { return run(ctx, o) })
}

type options struct {
	rounds    int
	transport string
	seed      uint64
	bin       string
	faults    string
	verbose   bool
	maxTime   time.Duration
}

// Timeouts given to the daemon, short so that dropped requests and stalls cost seconds.
const (
	netTimeout   = 2 * time.Second
	modemTimeout = 2 * time.Second
	// attemptWait bounds one attempt as seen from here.
	attemptWait = 90 * time.Second
	// settleTries bounds the clean attempts after a faulted one.
	settleTries = 8
	// baseTag is the first security tag the jobs use; round i uses baseTag+i.
	baseTag = 1_000_000
	// initialMode is the modem's mode when the daemon is not working on it.
	initialMode = 1
)

// lane is one daemon on one bench (one transport).
type lane struct {
	name string
	bed  *testbed.Bed
	bin  string
	proc *testbed.Process

	rounds   int
	restarts int // by the kill fault, as systemd's Restart=on-failure would
	// roundFrom is the log index where the current round began (of the current process).
	roundFrom int
	samples   []benchkit.Proc
	selfSamp  []selfSample
}

type selfSample struct{ goroutines, fds int }

type result struct {
	faultCounts map[string]int
	failures    []string
	failedBy    map[string]int
	cmeeLeft    int
	cmeeFlips   map[string]int // fault of the round after which CMEE went from 0 to 1
	attempts    map[string]int
	settleUsed  []int
}

func run(ctx context.Context, o options) error {
	var transports []string
	switch o.transport {
	case "http", "coap":
		transports = []string{o.transport}
	case "both":
		transports = []string{"http", "coap"}
	default:
		return fmt.Errorf("-transport %q: want http, coap or both", o.transport)
	}
	pick := allFaults
	if o.faults != "" {
		pick = nil
		for _, name := range strings.Split(o.faults, ",") {
			if strings.TrimSpace(name) == "all" {
				pick = append(pick, allFaults...)
				continue
			}
			f, ok := faultByName(strings.TrimSpace(name))
			if !ok {
				return fmt.Errorf("-faults: unknown fault %q", name)
			}
			pick = append(pick, f)
		}
	}
	tmp, err := os.MkdirTemp("", "provisiond-soak-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := o.bin
	if bin, err = benchkit.Binary(ctx, bin, tmp); err != nil {
		return err
	}

	var lanes []*lane
	for _, tr := range transports {
		bed, err := testbed.Start(ctx, testbed.Options{Transport: tr, StableLink: true, InitialMode: initialMode,
			Timeout: netTimeout, Settings: map[string]any{
				"provisioning.interval":        "24h",
				"provisioning.initial_backoff": "1s",
				"modem.command_timeout":        modemTimeout.String(),
			}})
		if err != nil {
			return err
		}
		defer bed.Close()
		l := &lane{name: tr, bed: bed, bin: bin}
		if err := l.start(ctx); err != nil {
			return err
		}
		defer l.stop()
		lanes = append(lanes, l)
	}

	fmt.Printf("# soak: %d rounds, transport %s, seed %d\n\nmachine: %s\nbinary: %s\n\n", o.rounds, o.transport, o.seed, benchkit.Machine(), bin)
	rng := rand.New(rand.NewPCG(o.seed, o.seed^0x9e3779b97f4a7c15))
	res := &result{faultCounts: map[string]int{}, failedBy: map[string]int{}, attempts: map[string]int{}, cmeeFlips: map[string]int{}}
	t0 := time.Now()
	done := 0
	for i := range o.rounds {
		if ctx.Err() != nil || (o.maxTime > 0 && time.Since(t0) > o.maxTime) {
			break
		}
		l := lanes[i%len(lanes)]
		f := pick[rng.IntN(len(pick))]
		res.faultCounts[f.name]++
		cmeeBefore := l.bed.Modem().CMEE()
		problems, settle, err := l.round(ctx, rng, i, f)
		if err != nil && ctx.Err() != nil {
			break
		}
		if err != nil {
			problems = append(problems, "round error: "+err.Error())
		}
		res.settleUsed = append(res.settleUsed, settle)
		if len(problems) > 0 {
			if o.verbose {
				fmt.Fprintf(os.Stderr, "round %d (%s, %s) failed: %s\nits daemon log:\n%s\n", i+1, l.name, f.name,
					strings.Join(problems, "; "), l.logSince(l.roundFrom))
			}
			res.failedBy[f.name]++
			for _, p := range problems {
				res.failures = append(res.failures, fmt.Sprintf("round %d (%s, %s): %s", i+1, l.name, f.name, p))
			}
		}
		if c := l.bed.Modem().CMEE(); c != 0 {
			res.cmeeLeft++
			if cmeeBefore == 0 {
				res.cmeeFlips[f.name]++
				if o.verbose {
					fmt.Fprintf(os.Stderr, "round %d: CMEE left at %d\n", i+1, c)
				}
			}
		}
		done++
		if o.verbose || (i+1)%50 == 0 {
			s := l.samples[len(l.samples)-1]
			fmt.Fprintf(os.Stderr, "round %d/%d %s %-14s settle %d problems %d | daemon fds %d threads %d rss %.1f MiB | %s\n",
				i+1, o.rounds, l.name, f.name, settle, len(problems), s.FDs, s.Threads, float64(s.RSSKiB)/1024,
				time.Since(t0).Round(time.Second))
		}
	}
	for _, l := range lanes {
		res.attempts[l.name] = countEvents(l.proc, "START")
	}
	report(o, lanes, res, done, time.Since(t0))
	if len(res.failures) > 0 {
		return fmt.Errorf("%d invariant failures", len(res.failures))
	}
	return nil
}

func (l *lane) start(ctx context.Context) error {
	p, err := l.bed.Start(ctx, l.bin, nil, "run")
	if err != nil {
		return err
	}
	l.proc = p
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// auto_start: the first attempt (root CA write, nothing queued).
	if _, _, err := p.WaitEvent(wctx, 0, "STOP"); err != nil {
		return fmt.Errorf("%s: first attempt: %w: %s", l.name, err, tail(p.Stderr(), 5))
	}
	return nil
}

func (l *lane) stop() {
	if l.proc == nil {
		return
	}
	_ = l.proc.Signal(syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := l.proc.Wait(ctx); err != nil {
		_ = l.proc.Kill()
	}
}

func (l *lane) alive() bool {
	select {
	case <-l.proc.Done():
		return false
	default:
		return true
	}
}

// trigger asks for an attempt: SIGUSR1, or `provisiond now` over the control socket.
func (l *lane) trigger(ctx context.Context, viaSocket bool) error {
	if viaSocket {
		_, err := l.bed.Output(ctx, l.bin, "now")
		return err
	}
	return l.proc.Signal(syscall.SIGUSR1)
}

// waitStop waits for the STOP of an attempt logged from index from on and returns the index
// after it and the attempt's outcome event.
func (l *lane) waitStop(ctx context.Context, from int, d time.Duration) (int, string, error) {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if _, _, err := l.proc.WaitEvent(wctx, from, "STOP"); err != nil {
		return from, "", err
	}
	// Find the STOP and the outcome before it ourselves, whatever index WaitEvent returns.
	entries := l.proc.Entries()
	stop := from
	for stop < len(entries) && entries[stop].Event() != "STOP" {
		stop++
	}
	outcome := ""
	for j := min(stop, len(entries)-1); j >= from; j-- {
		if ev := entries[j].Event(); outcomes[ev] {
			outcome = ev
			break
		}
	}
	return stop + 1, outcome, nil
}

var outcomes = map[string]bool{"DONE": true, "NO_COMMANDS": true, "FAILED": true, "FAILED_TOO_MANY_COMMANDS": true,
	"FAILED_DEVICE_NOT_CLAIMED": true, "FAILED_WRONG_ROOT_CA": true, "FAILED_NO_VALID_DATETIME": true, "FATAL_ERROR": true}

// round runs one faulted attempt and settles it; it returns the invariant failures.
func (l *lane) round(ctx context.Context, rng *rand.Rand, i int, f fault) ([]string, int, error) {
	l.rounds++
	tag := uint32(baseTag + i)
	j := newJob(rng, tag, i)
	if _, err := l.bed.Queue(j.reqs...); err != nil {
		return nil, 0, fmt.Errorf("queue: %w", err)
	}
	from := len(l.proc.Entries())
	l.roundFrom = from
	viaSocket := i%5 == 4
	r := &faultRun{l: l, ctx: ctx, rng: rng, job: j, from: from, viaSocket: viaSocket}
	err := f.run(r)
	// Whatever happened, take the faults away and plug the modem back in.
	l.bed.Modem().ClearFaults()
	_ = l.bed.Cloud().SetFault()
	if !l.bed.PTY().Plugged() {
		if perr := l.bed.Replug(); perr != nil {
			return nil, 0, fmt.Errorf("replug: %w", perr)
		}
	}
	if err != nil && ctx.Err() != nil {
		return nil, 0, err
	}
	var problems []string
	if err != nil {
		problems = append(problems, "faulted attempt: "+err.Error())
	}
	settle := 0
	for ; settle < settleTries; settle++ {
		if !l.alive() {
			break
		}
		if l.settled() == nil {
			break
		}
		from := len(l.proc.Entries())
		if err := l.trigger(ctx, false); err != nil {
			return problems, settle, err
		}
		if _, _, err := l.waitStop(ctx, from, attemptWait); err != nil {
			if ctx.Err() != nil {
				return problems, settle, err
			}
			// The trigger can land while the daemon waits for the modem: try again.
			continue
		}
	}
	problems = append(problems, l.check()...)
	l.sample()
	return problems, settle, nil
}

// settled says why the round is not over yet, or nil.
func (l *lane) settled() error {
	kv, err := store.Load(l.bed.StorePath(), store.Limits{})
	if err != nil {
		return err
	}
	for _, k := range []string{"provisiond/outbox", "provisiond/journal"} {
		if _, ok := kv[k]; ok {
			return fmt.Errorf("%s pending", k)
		}
	}
	cmds, err := l.bed.Cloud().Commands(l.bed.UUID())
	if err != nil {
		return err
	}
	for _, c := range cmds {
		if c.Status != simcloud.StatusSucceeded && c.Status != simcloud.StatusFailed {
			return fmt.Errorf("command %s is %s", c.ID, c.Status)
		}
	}
	if m := l.bed.Modem().FunctionalMode(); m != initialMode {
		return fmt.Errorf("modem in +CFUN=%d", m)
	}
	return nil
}

// check verifies the invariants over everything queued so far.
func (l *lane) check() []string {
	var problems []string
	if !l.alive() {
		problems = append(problems, "daemon exited: "+tail(l.proc.Stderr(), 5))
		return problems
	}
	if err := l.settled(); err != nil {
		problems = append(problems, "not settled after "+strconv.Itoa(settleTries)+" clean attempts: "+err.Error())
	}
	cmds, err := l.bed.Cloud().Commands(l.bed.UUID())
	if err != nil {
		return append(problems, err.Error())
	}
	uploads, err := l.bed.Uploads()
	if err != nil {
		return append(problems, err.Error())
	}
	reported := map[string]int{}
	for _, u := range uploads {
		if u.Err != "" {
			problems = append(problems, "malformed upload: "+u.Err)
		}
		for _, r := range u.Responses {
			reported[r.ID]++
		}
	}
	executed := map[string]int{}
	for _, line := range l.bed.ModemCommands() {
		executed[line]++
	}
	for _, c := range cmds {
		if n := reported[c.ID]; n > 1 {
			problems = append(problems, fmt.Sprintf("command %s reported %d times", c.ID, n))
		}
		if c.Kind != proto.KindAT {
			continue
		}
		line := c.ATString()
		switch n := executed[line]; {
		case n > 1:
			problems = append(problems, fmt.Sprintf("command %s (%.40q) executed %d times", c.ID, line, n))
		case n == 1 && reported[c.ID] != 1:
			problems = append(problems, fmt.Sprintf("command %s (%.40q) executed but reported %d times (status %s, reason %q)",
				c.ID, line, reported[c.ID], c.Status, c.Reason))
		}
	}
	if m := l.bed.Modem().FunctionalMode(); m != initialMode {
		problems = append(problems, fmt.Sprintf("modem left in +CFUN=%d, want %d", m, initialMode))
	}
	return problems
}

// logSince returns the daemon's log lines from index from on, compacted.
func (l *lane) logSince(from int) string {
	var b strings.Builder
	entries := l.proc.Entries()
	for _, e := range entries[min(from, len(entries)):] {
		line := e.Raw
		if len(line) > 300 {
			line = line[:300] + "…"
		}
		b.WriteString("  " + line + "\n")
	}
	return b.String()
}

func (l *lane) sample() {
	if p, err := benchkit.ReadProc(l.proc.Pid()); err == nil {
		l.samples = append(l.samples, p)
	}
	l.selfSamp = append(l.selfSamp, selfSample{goroutines: runtime.NumGoroutine(), fds: benchkit.SelfFDs()})
}

// job is one round's queue.
type job struct {
	reqs   []simcloud.Request
	atPref []string // prefixes of its AT command lines, for modem faults
	cert   bool
}

// newJob draws a job whose AT command lines are unique to the round (by tag).
func newJob(rng *rand.Rand, tag uint32, round int) job {
	t := strconv.FormatUint(uint64(tag), 10)
	var j job
	if rng.IntN(3) == 0 {
		j.cert = true
		j.reqs = []simcloud.Request{testbed.ClientCertificate(tag)}
		j.atPref = []string{"AT%CMNG=3," + t, "AT%KEYGEN=" + t}
	} else {
		j.reqs = []simcloud.Request{
			testbed.AT("%CMNG=1," + t), testbed.AT("%CMNG=3,"+t+",0", 513), testbed.AT("%CMNG=3,"+t+",1", 513),
			testbed.Config("soak/round", strconv.Itoa(round)),
		}
		j.atPref = []string{"AT%CMNG=1," + t, "AT%CMNG=3," + t}
	}
	if rng.IntN(2) == 0 {
		j.reqs = append(j.reqs, testbed.Finished())
	}
	return j
}

// faultRun is what a fault needs to run its round's faulted attempt.
type faultRun struct {
	l         *lane
	ctx       context.Context
	rng       *rand.Rand
	job       job
	from      int
	viaSocket bool
}

func (r *faultRun) trigger() error { return r.l.trigger(r.ctx, r.viaSocket) }

// attempt triggers and waits for the attempt's end.
func (r *faultRun) attempt() error {
	if err := r.trigger(); err != nil {
		return err
	}
	_, _, err := r.l.waitStop(r.ctx, r.from, attemptWait)
	return err
}

func (r *faultRun) modem() *simmodem.Modem  { return r.l.bed.Modem() }
func (r *faultRun) cloud() *simcloud.Server { return r.l.bed.Cloud() }
func (r *faultRun) anyAT() string           { return r.job.atPref[r.rng.IntN(len(r.job.atPref))] }

func (r *faultRun) sleep(d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
}

type fault struct {
	name string
	run  func(r *faultRun) error
}

func cloudFault(name string, f func(r *faultRun) simcloud.Fault) fault {
	return fault{name: name, run: func(r *faultRun) error {
		if err := r.cloud().SetFault(f(r)); err != nil {
			return err
		}
		return r.attempt()
	}}
}

var ops = []string{simcloud.OpFetch, simcloud.OpUpload}

var allFaults = []fault{
	{name: "none", run: func(r *faultRun) error { return r.attempt() }},
	{name: "garbage", run: func(r *faultRun) error { r.modem().SetGarbage(1 + r.rng.IntN(3)); return r.attempt() }},
	{name: "urc-storm", run: func(r *faultRun) error { r.modem().SetURCStorm(200); return r.attempt() }},
	{name: "split-writes", run: func(r *faultRun) error { r.modem().SplitWrites(1 + r.rng.IntN(16)); return r.attempt() }},
	{name: "cme-ignored", run: func(r *faultRun) error {
		r.modem().CMEErrorFor(r.job.atPref[len(r.job.atPref)-1-boolInt(r.job.cert)], simmodem.CMENotFound)
		return r.attempt()
	}},
	{name: "cme-error", run: func(r *faultRun) error {
		r.modem().CMEErrorFor(r.anyAT(), simmodem.CMENoAccess)
		return r.attempt()
	}},
	{name: "modem-stall", run: func(r *faultRun) error {
		// The modem stops answering for 0.5–3.5 s; commands time out after 2 s.
		r.modem().Stall()
		if err := r.trigger(); err != nil {
			r.modem().Resume()
			return err
		}
		err := r.sleep(time.Duration(500+r.rng.IntN(3000)) * time.Millisecond)
		r.modem().Resume()
		if err != nil {
			return err
		}
		_, _, err = r.l.waitStop(r.ctx, r.from, attemptWait)
		return err
	}},
	{name: "unplug-before", run: func(r *faultRun) error {
		if err := r.l.bed.PTY().Unplug(); err != nil {
			return err
		}
		if err := r.sleep(time.Duration(100+r.rng.IntN(500)) * time.Millisecond); err != nil {
			return err
		}
		_ = r.trigger() // may land while the daemon waits for the modem
		if err := r.sleep(time.Duration(100+r.rng.IntN(500)) * time.Millisecond); err != nil {
			return err
		}
		if err := r.l.bed.Replug(); err != nil {
			return err
		}
		from := len(r.l.proc.Entries())
		if err := r.trigger(); err != nil {
			return err
		}
		_, _, err := r.l.waitStop(r.ctx, min(r.from, from), attemptWait)
		return err
	}},
	{name: "unplug-during", run: func(r *faultRun) error {
		r.modem().UnplugDuring(r.anyAT())
		err := r.attempt()
		if !r.l.bed.PTY().Plugged() {
			if err := r.sleep(time.Duration(100+r.rng.IntN(500)) * time.Millisecond); err != nil {
				return err
			}
			if err := r.l.bed.Replug(); err != nil {
				return err
			}
		}
		return err
	}},
	{name: "unplug-after", run: func(r *faultRun) error {
		if err := r.attempt(); err != nil {
			return err
		}
		if err := r.l.bed.PTY().Unplug(); err != nil {
			return err
		}
		if err := r.sleep(time.Duration(100+r.rng.IntN(500)) * time.Millisecond); err != nil {
			return err
		}
		return r.l.bed.Replug()
	}},
	cloudFault("busy-500", func(r *faultRun) simcloud.Fault {
		return simcloud.Fault{Kind: simcloud.FaultBusy, Count: 1 + r.rng.IntN(2)}
	}),
	cloudFault("busy-503", func(r *faultRun) simcloud.Fault {
		return simcloud.Fault{Kind: simcloud.FaultBusy, Count: 1, HTTPStatus: 503}
	}),
	cloudFault("drop", func(r *faultRun) simcloud.Fault {
		return simcloud.Fault{Kind: simcloud.FaultDrop, Count: 1, Op: ops[r.rng.IntN(len(ops))]}
	}),
	cloudFault("fail-upload", func(r *faultRun) simcloud.Fault {
		return simcloud.Fault{Kind: simcloud.FaultFailUpload, Count: 1 + r.rng.IntN(3)}
	}),
	cloudFault("unauthorized", func(r *faultRun) simcloud.Fault {
		return simcloud.Fault{Kind: simcloud.FaultUnauthorized, Count: 1}
	}),
	cloudFault("malformed-cbor", func(r *faultRun) simcloud.Fault {
		return simcloud.Fault{Kind: simcloud.FaultMalformedCBOR, Count: 1}
	}),
	cloudFault("too-many", func(r *faultRun) simcloud.Fault {
		return simcloud.Fault{Kind: simcloud.FaultTooMany, Count: 1}
	}),
	cloudFault("slow", func(r *faultRun) simcloud.Fault {
		// Below the 2 s client timeout: a late answer, not a lost one.
		return simcloud.Fault{Kind: simcloud.FaultSlow, Count: 2, Delay: time.Duration(100+r.rng.IntN(600)) * time.Millisecond}
	}),
}

// killFault is opt-in (-faults kill,...): SIGKILL at a random moment of an attempt and a
// restart, as systemd would. Its rounds check recovery (journal, outbox, saved mode) under
// random timing; the flatness figures then span several processes.
var killFault = fault{name: "kill", run: func(r *faultRun) error {
	if err := r.trigger(); err != nil {
		return err
	}
	if err := r.sleep(time.Duration(r.rng.IntN(400)) * time.Millisecond); err != nil {
		return err
	}
	_ = r.l.proc.Kill()
	select {
	case <-r.l.proc.Done():
	case <-time.After(10 * time.Second):
		return errors.New("killed daemon did not exit")
	}
	r.l.restarts++
	return r.l.start(r.ctx)
}}

func faultByName(name string) (fault, bool) {
	if name == killFault.name {
		return killFault, true
	}
	for _, f := range allFaults {
		if f.name == name {
			return f, true
		}
	}
	return fault{}, false
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func countEvents(p *testbed.Process, ev string) int {
	n := 0
	for _, e := range p.Entries() {
		if e.Event() == ev {
			n++
		}
	}
	return n
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// report prints the result as Markdown.
func report(o options, lanes []*lane, res *result, done int, el time.Duration) {
	fmt.Printf("## result\n\n%d of %d rounds run in %s; invariant failures: **%d**", done, o.rounds, el.Round(time.Second), len(res.failures))
	var failedRounds int
	for _, n := range res.failedBy {
		failedRounds += n
	}
	fmt.Printf(" (in %d rounds)\n\n", failedRounds)
	fmt.Println("| fault | rounds | rounds with a failure |")
	fmt.Println("|---|---|---|")
	names := slices.Sorted(maps.Keys(res.faultCounts))
	for _, n := range names {
		fmt.Printf("| %s | %d | %d |\n", n, res.faultCounts[n], res.failedBy[n])
	}
	fmt.Println()
	total := 0
	for _, l := range lanes {
		total += res.attempts[l.name]
		fmt.Printf("- %s daemon (pid %d): %d rounds, %d attempts (START events of the last process), restarts after the kill fault: %d, alive at the end: %v\n",
			l.name, l.proc.Pid(), l.rounds, res.attempts[l.name], l.restarts, l.alive())
	}
	sort.Ints(res.settleUsed)
	if len(res.settleUsed) > 0 {
		fmt.Printf("- clean attempts needed to settle a round: median %d, max %d\n", res.settleUsed[len(res.settleUsed)/2], res.settleUsed[len(res.settleUsed)-1])
	}
	fmt.Printf("- rounds after which CMEE was not 0: %d; the faults of the rounds that left it at 1: %v\n\n", res.cmeeLeft, res.cmeeFlips)
	if len(res.failures) > 0 {
		fmt.Println("### failures (first 30)")
		fmt.Println()
		for _, f := range res.failures[:min(30, len(res.failures))] {
			fmt.Println("-", f)
		}
		fmt.Println()
	}
	fmt.Println("### flatness")
	fmt.Println()
	fmt.Println("| process | figure | after round 10 (mean of rounds 1–10) | at the end (mean of last 10) | min | max |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, l := range lanes {
		if len(l.samples) == 0 {
			continue
		}
		row := func(name string, f func(benchkit.Proc) float64, unit string) {
			vals := make([]float64, len(l.samples))
			for i, s := range l.samples {
				vals[i] = f(s)
			}
			fmt.Printf("| %s daemon | %s | %s | %s | %s | %s |\n", l.name, name, fmtv(mean(vals[:min(10, len(vals))]), unit),
				fmtv(mean(vals[max(0, len(vals)-10):]), unit), fmtv(slices.Min(vals), unit), fmtv(slices.Max(vals), unit))
		}
		row("open fds", func(p benchkit.Proc) float64 { return float64(p.FDs) }, "")
		row("threads", func(p benchkit.Proc) float64 { return float64(p.Threads) }, "")
		row("VmRSS", func(p benchkit.Proc) float64 { return float64(p.RSSKiB) / 1024 }, " MiB")
		row("VmHWM", func(p benchkit.Proc) float64 { return float64(p.HWMKiB) / 1024 }, " MiB")
		row("RssAnon", func(p benchkit.Proc) float64 { return float64(p.AnonKiB) / 1024 }, " MiB")
		row("RssFile", func(p benchkit.Proc) float64 { return float64(p.FileKiB) / 1024 }, " MiB")
		row("CPU (utime+stime, cumulative)", func(p benchkit.Proc) float64 { return p.CPU.Seconds() }, " s")
	}
	for _, l := range lanes[:1] {
		g := make([]float64, len(l.selfSamp))
		fd := make([]float64, len(l.selfSamp))
		for i, s := range l.selfSamp {
			g[i], fd[i] = float64(s.goroutines), float64(s.fds)
		}
		if len(g) == 0 {
			continue
		}
		fmt.Printf("| soak (simulators) | goroutines | %s | %s | %s | %s |\n", fmtv(mean(g[:min(10, len(g))]), ""), fmtv(mean(g[max(0, len(g)-10):]), ""), fmtv(slices.Min(g), ""), fmtv(slices.Max(g), ""))
		fmt.Printf("| soak (simulators) | open fds | %s | %s | %s | %s |\n", fmtv(mean(fd[:min(10, len(fd))]), ""), fmtv(mean(fd[max(0, len(fd)-10):]), ""), fmtv(slices.Min(fd), ""), fmtv(slices.Max(fd), ""))
	}
	fmt.Println()
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func fmtv(v float64, unit string) string {
	if unit == "" {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + unit
}
