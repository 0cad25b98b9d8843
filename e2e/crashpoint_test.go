package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/testbed"
)

// The crash-point test kills the daemon with SIGKILL at one step of an attempt, restarts it
// (`run --once` until an attempt ends cleanly) and checks the promises of docs/design.md: no
// executed command unreported, none executed twice, the store readable and consistent, the
// modem's mode restored on the next start at the latest.
//
// The steps are found by a reference run of the same job on the same kind of bench. The
// bench is then rebuilt for every step and the daemon stopped exactly there:
//   - before-N: the daemon wrote its N-th command line; the modem never gets it (everything
//     the daemon did before sending it, journal write included, has happened);
//   - after-N: the modem executed the N-th command line; the daemon never gets the answer;
//   - write-N: the N-th store write (rename of the settings file) just happened;
//   - temp-N: the N-th store write has begun (its temporary file was created): the old
//     file must survive intact and the temporary one be cleaned up;
//   - upload-N-held: the N-th upload reached the service, which has not recorded it yet;
//   - upload-N-acked: the service recorded the N-th upload; the daemon never hears so;
//   - fetch-0-held: the first fetch reached the service and waits there.
//
// Modem steps are exact: a proxy pty (cpModemProxy) between the daemon and the simulated
// modem holds the line. Store steps are as exact as inotify and SIGKILL allow (the daemon
// may get a little further, which the invariants must survive just the same).

// cpJob is the crash-point job: plain AT commands around the realistic job's client
// certificate (%KEYGEN, then the %CMNG write of the certificate the service signs), a config
// command and FINISHED.
func cpJob() []simcloud.Request {
	return []simcloud.Request{
		testbed.AT("+CGSN=1"),
		testbed.ClientCertificate(testbed.ClientCertSecTag),
		testbed.Interval(testbed.JobIntervalSeconds),
		testbed.AT("+CGSN=0"),
		testbed.Finished(),
	}
}

// cpInitialMode is the modem's mode before the first run: online, so that every batch must
// switch it offline and back, and a crash in between must be repaired.
const cpInitialMode = 1

// cpMaxRestarts bounds the `run --once` restarts after the kill; a clean end needs at most
// two (deliver the recovered results, then fetch what is left).
const cpMaxRestarts = 4

type cpKind int

const (
	cpBefore cpKind = iota
	cpAfter
	cpWrite
	cpTemp
	cpUploadHeld
	cpUploadAcked
	cpFetchHeld
)

// cpPoint is one kill point.
type cpPoint struct {
	name string
	kind cpKind
	n    int    // command line index, store write number (1-based) or upload index
	line string // the reference run's command line at n (modem points)
}

// cpReference is what a run without faults did.
type cpReference struct {
	lines   []cpLine
	job     []bool // lines[i] is one of the job's commands
	writes  int
	temps   int
	uploads int
	// quiet is the number of store writes begun when the daemon sent its last modem command
	// or network request before the service had every upload: the writes after it (the
	// cursor after the last upload, the checkpoint of the settings file) are followed by
	// nothing the proxies can hold (a TLS close alert at most, which the daemon does not
	// wait for), so the daemon may finish them and exit before the kill lands.
	quiet int
}

// TestCrashPoints: SIGKILL at every step of an attempt, restart, check the invariants. Every
// point runs for HTTP; for CoAP (the same engine, so the same modem and store steps) the
// network points and the job's own commands run. With -short, HTTP runs those and every
// cpShortStride-th store point, so that every kind of point still runs, and CoAP the
// network points only.
func TestCrashPoints(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			ref := cpRunReference(t, tr)
			stride, jobLines := 0, true // no store points
			switch {
			case tr == testbed.TransportHTTP && testing.Short():
				stride = cpShortStride
			case tr == testbed.TransportHTTP:
				stride = 1
			case testing.Short():
				jobLines = false
			}
			points := cpPoints(ref, stride, jobLines)
			t.Logf("%s: %d command lines, %d store writes (%d begun; %d before the last upload), %d uploads in the reference run: %d kill points",
				tr, len(ref.lines), ref.writes, ref.temps, ref.quiet, ref.uploads, len(points))
			for _, pt := range points {
				t.Run(pt.name, func(t *testing.T) {
					t.Parallel()
					cpRunPoint(t, tr, ref, pt)
				})
			}
		})
	}
}

// cpShortStride thins the store points with -short. It is odd, so that the kills still land
// on both of the writes each AT command makes (its journal entry, then its response).
const cpShortStride = 5

// cpPoints lists the kill points of a reference run: the network ones always; with stride 1
// every command line (held before and after) and every store write; otherwise the job's own
// commands if jobLines, and every stride-th store write (none with stride 0).
func cpPoints(ref cpReference, stride int, jobLines bool) []cpPoint {
	all := stride == 1
	var pts []cpPoint
	for i, l := range ref.lines {
		if !all && (!jobLines || !ref.job[i]) {
			continue
		}
		pts = append(pts,
			cpPoint{name: fmt.Sprintf("before-%02d-%s", i, cpShort(l.text)), kind: cpBefore, n: i, line: l.text},
			cpPoint{name: fmt.Sprintf("after-%02d-%s", i, cpShort(l.text)), kind: cpAfter, n: i, line: l.text})
	}
	for w := 1; stride > 0 && w <= ref.writes; w += stride {
		pts = append(pts, cpPoint{name: fmt.Sprintf("write-%02d", w), kind: cpWrite, n: w})
	}
	for w := 1; stride > 0 && w <= ref.temps; w += stride {
		pts = append(pts, cpPoint{name: fmt.Sprintf("temp-%02d", w), kind: cpTemp, n: w})
	}
	pts = append(pts, cpPoint{name: "fetch-0-held", kind: cpFetchHeld})
	for u := range ref.uploads {
		pts = append(pts,
			cpPoint{name: fmt.Sprintf("upload-%d-held", u), kind: cpUploadHeld, n: u},
			cpPoint{name: fmt.Sprintf("upload-%d-acked", u), kind: cpUploadAcked, n: u})
	}
	return pts
}

// cpShort names a command line in a subtest name: the command up to its first parameter.
func cpShort(line string) string {
	s := strings.TrimPrefix(line, "AT")
	if i := strings.IndexAny(s, ",\""); i >= 0 {
		s = s[:i]
	}
	if len(s) > 16 {
		s = s[:16]
	}
	return s
}

// cpEnv is one bench with the proxies and the store watch in place.
type cpEnv struct {
	b     *testbed.Bed
	modem *cpModemProxy
	net   *cpNetProxy
	store *cpStoreWatch
}

// cpStartEnv builds a bench whose daemon talks to the modem and the service through the
// proxies, which sync with the store watch. prepare, if not nil, runs on the bench before the
// store's folder is watched (to put the folder on a file system of its own).
func cpStartEnv(t *testing.T, ctx context.Context, opts testbed.Options, prepare func(b *testbed.Bed)) *cpEnv {
	t.Helper()
	b := newBed(t, ctx, opts)
	if err := os.MkdirAll(filepath.Dir(b.StorePath()), 0o700); err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(b)
	}
	e := &cpEnv{b: b, store: cpStartStoreWatch(t, b.StorePath())}
	e.store.allUploaded = func() bool { return cpUploadCount(b) >= 2 }
	e.modem = cpStartModemProxy(t, b, e.store.proxySync)
	tr := b.Transport()
	e.net = cpStartNetProxy(t, b, tr, e.store.proxySync)
	port := "http.port"
	if tr == testbed.TransportCoAP {
		port = "coap.port"
	}
	if err := b.WriteConfig(map[string]any{"modem.port": e.modem.path(), port: e.net.port()}); err != nil {
		t.Fatal(err)
	}
	return e
}

// cpOptions is the crash-point bench: the modem starts online.
func cpOptions(tr string) testbed.Options {
	return testbed.Options{Transport: tr, InitialMode: cpInitialMode}
}

// cpRunReference runs the job once without faults and records its steps.
func cpRunReference(t *testing.T, tr string) cpReference {
	t.Helper()
	ctx := testCtx(t)
	e := cpStartEnv(t, ctx, cpOptions(tr), nil)
	queue(t, e.b, cpJob()...)
	code, p := runOnce(t, ctx, e.b)
	if code != 0 {
		t.Fatalf("reference run: exit %d, want 0:\n%s", code, p.Stderr())
	}
	ref := cpReference{lines: e.modem.seen(), writes: e.store.count(cpRenamed), temps: e.store.count(cpTempCreated),
		uploads: len(uploads(t, e.b)), quiet: e.store.beforeLastProxySync()}
	jobLines := map[string]bool{}
	for _, c := range mustCommands(t, e.b) {
		if c.Kind == proto.KindAT {
			jobLines[c.ATString()] = true
		}
	}
	for _, l := range ref.lines {
		ref.job = append(ref.job, jobLines[l.text])
	}
	// The reference itself must be a clean provisioning: everything once, the job complete.
	cpCheckInvariants(t, ctx, e.b, cpInv{})
	for _, c := range mustCommands(t, e.b) {
		if c.Status != simcloud.StatusSucceeded {
			t.Errorf("reference run: command %s %s: %s", c.ID, short(c.ATString()), c.Status)
		}
	}
	if len(ref.lines) == 0 || ref.writes == 0 || ref.temps != ref.writes || ref.uploads != 2 {
		t.Fatalf("reference run: %d command lines, %d store writes (%d begun), %d uploads; want some, some (as many) and 2",
			len(ref.lines), ref.writes, ref.temps, ref.uploads)
	}
	return ref
}

// cpRunPoint kills the daemon at pt on a fresh bench, restarts it until an attempt ends
// cleanly, and checks the invariants.
func cpRunPoint(t *testing.T, tr string, ref cpReference, pt cpPoint) {
	ctx := testCtx(t)
	e := cpStartEnv(t, ctx, cpOptions(tr), nil)
	b := e.b
	queue(t, b, cpJob()...)

	reached := make(chan string, 1) // what the kill point saw
	reach := func(s string) {
		select {
		case reached <- s:
		default:
		}
	}
	waitSpent := false
	switch pt.kind {
	case cpBefore, cpAfter:
		e.modem.setRule(func(i int, line string) cpAction {
			if i != pt.n {
				return cpForward
			}
			if cpShort(line) != cpShort(pt.line) {
				t.Logf("command line %d is %s, the reference had %s", i, short(line), short(pt.line))
			}
			if pt.kind == cpBefore {
				return cpHoldBefore
			}
			return cpHoldAfter
		})
		// Killed only once the proxy holds the line: a reset before that would be undone.
		go func() {
			ch, what := e.modem.holding(), "held "
			if pt.kind == cpAfter {
				ch, what = e.modem.final(), "answered "
			}
			select {
			case <-ch:
				reach(what + short(pt.line))
			case <-ctx.Done():
			}
		}()
	case cpWrite, cpTemp:
		want := map[cpKind]cpStoreEvent{cpWrite: cpRenamed, cpTemp: cpTempCreated}[pt.kind]
		e.store.setOn(func(ev cpStoreEvent, n int) {
			if ev == want && n == pt.n {
				e.modem.freeze() // nothing more reaches the modem or the service
				e.net.freeze(true)
				reach(fmt.Sprintf("store write %d %s", n, ev))
			}
		})
	case cpFetchHeld:
		cpSetFault(t, b, simcloud.Fault{Kind: simcloud.FaultSlow, Count: 1, Op: simcloud.OpFetch, Delay: 10 * time.Minute})
		waitSpent = true
	case cpUploadHeld:
		slow := simcloud.Fault{Kind: simcloud.FaultSlow, Count: 1, Op: simcloud.OpUpload, Delay: 10 * time.Minute}
		if pt.n == 0 {
			cpSetFault(t, b, slow)
			waitSpent = true
			break
		}
		// Armed once the earlier uploads are recorded, at the first command line the daemon
		// sends after them (the next batch's), so that it catches upload n and no earlier one.
		armed := make(chan struct{})
		var once sync.Once
		e.modem.setRule(func(i int, line string) cpAction {
			if cpUploadCount(b) == pt.n {
				once.Do(func() {
					if err := b.Cloud().SetFault(slow); err != nil {
						t.Errorf("set fault: %v", err)
					}
					close(armed)
				})
			}
			return cpForward
		})
		go func() {
			select {
			case <-armed:
				cpWaitFaultsSpent(ctx, b)
				reach(fmt.Sprintf("upload %d held at the service", pt.n))
			case <-ctx.Done():
			}
		}()
	case cpUploadAcked:
		e.net.holdWhen(pt.n + 1)
		go func() {
			select {
			case <-e.net.held():
				reach(fmt.Sprintf("upload %d recorded, answer held", pt.n))
			case <-ctx.Done():
			}
		}()
	}

	p := start(t, ctx, b, "run", "--once")
	if waitSpent {
		go func() {
			cpWaitFaultsSpent(ctx, b)
			reach("request held at the service")
		}()
	}
	// The store writes after the daemon's last modem command or network request are its
	// last acts: it may finish them and exit by itself before the kill, which is the same
	// state as a kill right after the last of them.
	last := (pt.kind == cpWrite || pt.kind == cpTemp) && pt.n > ref.quiet
	select {
	case what := <-reached:
		if err := p.Kill(); err != nil && !last {
			t.Fatal(err)
		}
		t.Logf("killed: %s", what)
	case <-p.Done():
		if !last {
			t.Fatalf("provisiond ended before the kill point:\n%s", p.Stderr())
		}
		t.Logf("the last store write ended the run before the kill")
	case <-ctx.Done():
		t.Fatalf("kill point never reached: %v", ctx.Err())
	}
	if code, err := p.Wait(ctx); err != nil || (code != -1 && !(last && code == 0)) {
		t.Fatalf("killed daemon: exit %d, %v; want killed by a signal", code, err)
	}
	e.modem.reset()
	e.net.holdWhen(0)
	e.net.freeze(false)
	e.store.setOn(nil)
	b.Cloud().SetFault() // whatever is left of a fault must not hit the restarts
	if tmps, _ := filepath.Glob(filepath.Join(filepath.Dir(b.StorePath()), cpTempPrefix(b.StorePath())+"*")); len(tmps) > 0 {
		t.Logf("the kill left a half-written store file: %s", filepath.Base(tmps[0]))
	}
	// The store is readable right after the kill; what the daemon left there decides what
	// the next start must say it repaired.
	left := settings(t, ctx, b)
	_, hadJournal := left[cpJournalKey]
	_, hadMode := left[cpSavedModeKey]

	clean := false
	for run := 1; run <= cpMaxRestarts && !clean; run++ {
		code, p := runOnce(t, ctx, b)
		if run == 1 {
			if got := b.Modem().FunctionalMode(); got != cpInitialMode {
				t.Errorf("modem mode %d after the first restart, want %d restored", got, cpInitialMode)
			}
			cpCheckRepairLogged(t, p, hadJournal, "batch-recovered")
			cpCheckRepairLogged(t, p, hadMode, "saved-mode-restore")
		}
		switch code {
		case 0:
			clean = true
		case 2:
			// A run that delivers recovered results with an interrupted command in them says
			// so; the next one finds the rest.
			if !strings.Contains(p.Stderr(), "provisiond: ") {
				t.Errorf("restart %d: exit 2 without naming the outcome:\n%s", run, p.Stderr())
			}
		default:
			t.Fatalf("restart %d: exit %d:\n%s", run, code, p.Stderr())
		}
	}
	if !clean {
		t.Errorf("no clean run --once after %d restarts", cpMaxRestarts)
	}
	seen := e.modem.seen()
	cpCheckInvariants(t, ctx, b, cpInv{lines: seen})
	if pt.kind == cpBefore || pt.kind == cpAfter {
		cpCheckAnswered(t, b, seen[:pt.n])
	}
}

// cpCheckAnswered checks that the job commands among lines, which the modem answered to the
// daemon before it was killed (and the daemon then went on to its next command), are
// reported with their real result: the daemon records each result before it moves on, so
// only the command it was waiting for when killed may be reported as interrupted.
func cpCheckAnswered(t *testing.T, b *testbed.Bed, lines []cpLine) {
	t.Helper()
	answered := map[string]bool{}
	for _, l := range lines {
		answered[l.text] = true
	}
	first := map[string]proto.Response{}
	for _, u := range uploads(t, b) {
		for _, r := range u.Responses {
			if _, ok := first[r.ID]; !ok {
				first[r.ID] = r
			}
		}
	}
	for _, c := range mustCommands(t, b) {
		if c.Kind != proto.KindAT || !answered[c.ATString()] {
			continue
		}
		if r, ok := first[c.ID]; ok && r.Kind == proto.KindError && r.Message == cpInterrupted {
			t.Errorf("%s (%s) was answered before the kill, but its result was reported as interrupted",
				c.ID, short(c.ATString()))
		}
	}
}

// cpCheckInvariants checks, after the last run: every job command the modem executed has
// exactly one response at the service (its own, or reported as interrupted), none ran twice,
// no success was reported for a command that never ran, the store is readable and holds no
// daemon state and the cursor of the last acknowledged command, and the modem is back in its
// mode.
// cpInv says what cpCheckInvariants expects besides the defaults.
type cpInv struct {
	// mode is the modem's functional mode before the first run; nil means cpInitialMode.
	mode *int
	// lines are the command lines the proxy saw, for messages.
	lines []cpLine
	// staleInterrupted tolerates (and logs as a known issue) one kind of second, different
	// response: "interrupted" for a command whose real result the service had already
	// taken. internal/daemon sends it when a store write failed after the command and the
	// result was uploaded from memory: the journal left on disk still says it was running.
	staleInterrupted bool
}

func cpCheckInvariants(t *testing.T, ctx context.Context, b *testbed.Bed, inv cpInv) {
	t.Helper()
	lines, staleInterrupted := inv.lines, inv.staleInterrupted
	mode := cpInitialMode
	if inv.mode != nil {
		mode = *inv.mode
	}
	cmds := mustCommands(t, b)
	log := b.Modem().CommandLog()
	ups := uploads(t, b)

	// Every response the service received, per command; repeats of the same response are
	// allowed (a kill between the service's answer and the daemon's cursor write uploads the
	// same results once more, which the service ignores), different ones are not.
	got := map[string][]proto.Response{}
	repeats := 0
	for i, u := range ups {
		seen := map[string]bool{}
		for _, r := range u.Responses {
			if seen[r.ID] {
				t.Errorf("upload %d answers %s twice", i, r.ID)
			}
			seen[r.ID] = true
			if prev := got[r.ID]; len(prev) > 0 {
				repeats++
				switch {
				case prev[0] == r:
				case staleInterrupted && prev[0].Kind != proto.KindError && r.Kind == proto.KindError && r.Message == cpInterrupted:
					t.Logf("KNOWN ISSUE: %s reported again as interrupted after its real result was delivered", r.ID)
					continue
				default:
					t.Errorf("%s answered differently in two uploads: %s, then %s", r.ID, respString(prev[0]), respString(r))
				}
			}
			got[r.ID] = append(got[r.ID], r)
		}
	}
	if repeats > 0 {
		t.Logf("%d response(s) uploaded again after the restart (at-least-once delivery)", repeats)
	}

	failed := false
	byID := map[string]simcloud.Command{}
	for _, c := range cmds {
		byID[c.ID] = c
		rs := got[c.ID]
		if len(rs) > 0 && rs[0].Kind == proto.KindError {
			failed = true
			if rs[0].Message != cpInterrupted {
				// Nothing in this job fails unless the kill made it.
				t.Errorf("%s (%s) failed: %s", c.ID, short(c.ATString()), respString(rs[0]))
			}
		}
		switch c.Kind {
		case proto.KindAT:
			n := count(log, c.ATString())
			switch {
			case n > 1:
				t.Errorf("%s (%s) executed %d times", c.ID, short(c.ATString()), n)
			case n == 1 && len(rs) == 0:
				t.Errorf("%s (%s) executed but never reported to the service", c.ID, short(c.ATString()))
			case n == 0 && len(rs) > 0 && rs[0].Kind != proto.KindError:
				t.Errorf("%s (%s) reported as %s but never executed", c.ID, short(c.ATString()), respString(rs[0]))
			}
		case proto.KindConfig:
			if len(rs) > 0 && rs[0].Kind == proto.KindConfigAck {
				if v := settings(t, ctx, b)[testbed.IntervalKey]; v != strconv.Itoa(testbed.JobIntervalSeconds) {
					t.Errorf("config %s acknowledged but the interval is %q", c.ID, v)
				}
			}
		}
		// The service's verdict is the first response it got.
		if len(rs) > 0 && (c.Response == nil || *c.Response != rs[0]) {
			t.Errorf("%s: the service resolved it as %v, the first upload said %s", c.ID, c.Response, respString(rs[0]))
		}
	}
	for id := range got {
		if _, ok := byID[id]; !ok {
			t.Errorf("response for %s, which the service never sent", id)
		}
	}
	if !failed {
		// Nothing was interrupted: the whole job is done, the certificate in place.
		for _, c := range cmds {
			if c.Status != simcloud.StatusSucceeded {
				t.Errorf("command %s (%s): %s, want SUCCEEDED", c.ID, short(c.ATString()), c.Status)
			}
		}
		checkClientCert(t, b, testbed.ClientCertSecTag)
	}
	checkRootCA(t, b)

	// The store: readable, nothing of the daemon's own left, cursor = last acknowledged id,
	// no half-written temporary file left beside it.
	if tmps, _ := filepath.Glob(filepath.Join(filepath.Dir(b.StorePath()), cpTempPrefix(b.StorePath())+"*")); len(tmps) > 0 {
		t.Errorf("temporary store files left behind: %v", tmps)
	}
	st := settings(t, ctx, b)
	for k, v := range st {
		if strings.HasPrefix(k, ownPrefix) {
			t.Errorf("settings: daemon state left behind: %s=%s", k, short(v))
		}
	}
	wantCursor := ""
	if len(ups) > 0 {
		last := ups[len(ups)-1].Responses
		wantCursor = last[len(last)-1].ID
	}
	if got := st[testbed.CursorKey]; got != wantCursor {
		t.Errorf("settings: cursor %q, want %q (the last acknowledged command)", got, wantCursor)
	}

	if got := b.Modem().FunctionalMode(); got != mode {
		t.Errorf("modem mode %d after the last run, want %d", got, mode)
	}
	if got := b.Modem().CMEE(); got != 0 {
		// Known gap, not failed on: the daemon restores CMEE
		// after a batch but does not persist the value it replaced, so a kill between
		// AT+CMEE=1 and its restore leaves numeric CME errors on for the modem's other users.
		t.Logf("KNOWN ISSUE: modem CMEE %d after the last run, was 0 before the kill", got)
	}
	if t.Failed() {
		for i, l := range lines {
			t.Logf("line %2d (uploads %d): %s", i, l.uploads, short(l.text))
		}
		t.Logf("uploads:\n%s", describeUploads(ups))
	}
}

// The daemon's own keys that a kill can leave behind (internal/daemon).
const (
	cpJournalKey   = ownPrefix + "journal"
	cpSavedModeKey = ownPrefix + "saved-cfun"
)

// cpCheckRepairLogged checks that a restart which found state left by the kill said, in a
// warning with msg_id id, what it repaired.
func cpCheckRepairLogged(t *testing.T, p *testbed.Process, found bool, id string) {
	t.Helper()
	if !found {
		return
	}
	for _, e := range p.Entries() {
		if e.Level == "warn" && e.MsgID() == id {
			return
		}
	}
	t.Errorf("the restart found the kill's leftovers but logged no warning with msg_id %s", id)
}

// cpInterrupted is the daemon's text for a command started before a crash whose result was
// never recorded (internal/daemon).
const cpInterrupted = "interrupted: provisiond stopped during execution, result unknown"

func cpSetFault(t *testing.T, b *testbed.Bed, f simcloud.Fault) {
	t.Helper()
	if err := b.Cloud().SetFault(f); err != nil {
		t.Fatal(err)
	}
}

// cpWaitFaultsSpent waits until the service has used up every counted fault.
func cpWaitFaultsSpent(ctx context.Context, b *testbed.Bed) {
	for len(b.Cloud().Faults()) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func cpUploadCount(b *testbed.Bed) int {
	ups, err := b.Uploads()
	if err != nil {
		return -1
	}
	return len(ups)
}

// cpLine is one command line the daemon wrote, and how many uploads the service had
// recorded when it arrived.
type cpLine struct {
	text    string
	uploads int
}

type cpAction int

const (
	cpForward    cpAction = iota
	cpHoldBefore          // drop this line and everything after it
	cpHoldAfter           // forward this line; hold the modem's answer and everything after
)

// cpModemProxy serves a pty to the daemon and forwards to the simulated modem's pty,
// command line by command line, so that a test can stop the exchange at an exact command.
// It keeps its own descriptor of its pty's slave open so that the line survives the
// daemon's death and the next daemon finds it as the first did.
type cpModemProxy struct {
	b      *testbed.Bed
	master *os.File
	slave  *os.File
	up     *os.File
	wg     sync.WaitGroup

	mu        sync.Mutex
	lines     []cpLine
	rule      func(i int, line string) cpAction
	partial   []byte
	inQuote   bool
	holdIn    bool // daemon → modem stopped
	holdOut   bool // modem → daemon stopped
	heldOut   []byte
	finalCh   chan struct{} // closed when held output holds a final result line
	finalDone bool
	holdCh    chan struct{} // closed when a rule's hold took effect
	gen       int           // bumped by reset: bytes read before it belong to a dead daemon
	quiet     bool          // no daemon line since reset: modem output is a dead daemon's

	gate func() // runs before a daemon line is looked at (the store watch's sync); set at start

	// Byte counters and the latest events, for messages when a test fails.
	fromD, toM, fromM, toD atomic.Int64
	trace                  []string
}

func (p *cpModemProxy) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("proxy: %d bytes from the daemon, %d to the modem, %d from the modem, %d to the daemon; latest:\n  %s",
		p.fromD.Load(), p.toM.Load(), p.fromM.Load(), p.toD.Load(), strings.Join(p.trace, "\n  "))
}

// traceLocked records an event; p.mu is held.
func (p *cpModemProxy) traceLocked(format string, args ...any) {
	const keep = 40
	if len(p.trace) == keep {
		p.trace = append(p.trace[:0], p.trace[1:]...)
	}
	p.trace = append(p.trace, time.Now().Format("15:04:05.000000 ")+fmt.Sprintf(format, args...))
}

func cpStartModemProxy(t *testing.T, b *testbed.Bed, gate func()) *cpModemProxy {
	t.Helper()
	master, slave, err := cpOpenRawPTY()
	if err != nil {
		t.Fatalf("proxy pty: %v", err)
	}
	up, err := os.OpenFile(b.PTY().SlavePath(), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		slave.Close()
		t.Fatalf("open the modem's pty: %v", err)
	}
	p := &cpModemProxy{b: b, master: master, slave: slave, up: up, gate: gate,
		finalCh: make(chan struct{}), holdCh: make(chan struct{})}
	p.wg.Add(2)
	go p.fromDaemon()
	go p.fromModem()
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(p)
			t.Logf("modem stats %+v, %d commands logged", b.Modem().Stats(), len(b.Modem().CommandLog()))
		}
		master.Close()
		up.Close()
		p.wg.Wait()
		slave.Close()
	})
	return p
}

// cpOpenRawPTY opens a pty pair: a non-blocking master (so Close ends a pending Read) and the
// slave in raw mode (no echo: the proxy must not read back what it writes).
func cpOpenRawPTY() (master, slave *os.File, err error) {
	m, s, err := pty.Open()
	if err != nil {
		return nil, nil, err
	}
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	m.Close()
	if err == nil {
		err = syscall.SetNonblock(fd, true)
	}
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	master = os.NewFile(uintptr(fd), "/dev/ptmx")
	tio, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if err == nil {
		tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		tio.Oflag &^= unix.OPOST
		tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		tio.Cflag &^= unix.CSIZE | unix.PARENB
		tio.Cflag |= unix.CS8
		tio.Cc[unix.VMIN], tio.Cc[unix.VTIME] = 1, 0
		err = unix.IoctlSetTermios(int(s.Fd()), unix.TCSETS, tio)
	}
	if err != nil {
		master.Close()
		s.Close()
		return nil, nil, err
	}
	return master, s, nil
}

func (p *cpModemProxy) path() string { return p.slave.Name() }

func (p *cpModemProxy) setRule(r func(i int, line string) cpAction) {
	p.mu.Lock()
	p.rule = r
	p.mu.Unlock()
}

// seen returns the command lines the daemon wrote so far.
func (p *cpModemProxy) seen() []cpLine {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]cpLine(nil), p.lines...)
}

// final is closed once the modem answered the line held by cpHoldAfter.
func (p *cpModemProxy) final() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.finalCh
}

// holding is closed once a rule's hold (before or after a line) took effect.
func (p *cpModemProxy) holding() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.holdCh
}

// release delivers the held modem output to the daemon and forwards everything again: the
// daemon goes on as if nothing had happened (used to change the world while it waits).
func (p *cpModemProxy) release() {
	p.mu.Lock()
	held := p.heldOut
	p.heldOut = nil
	p.rule = nil
	p.holdIn, p.holdOut = false, false
	p.traceLocked("release %q", short(string(held)))
	p.mu.Unlock()
	n, _ := p.master.Write(held)
	p.toD.Add(int64(n))
}

// freeze stops all traffic from now on.
func (p *cpModemProxy) freeze() {
	p.mu.Lock()
	p.holdIn, p.holdOut = true, true
	p.mu.Unlock()
}

// reset goes back to forwarding everything, after the daemon was killed: held bytes and a
// half line are dropped, and the exclusive flag the dead daemon set on the tty is cleared so
// that a daemon not running as root can open it again.
func (p *cpModemProxy) reset() {
	p.mu.Lock()
	p.rule = nil
	p.partial, p.inQuote = nil, false
	p.holdIn, p.holdOut = false, false
	p.heldOut = nil
	p.finalCh, p.finalDone = make(chan struct{}), false
	p.holdCh = make(chan struct{})
	p.gen++
	p.quiet = true
	p.traceLocked("reset")
	p.mu.Unlock()
	_ = unix.IoctlSetInt(int(p.slave.Fd()), unix.TIOCNXCL, 0)
}

// fromDaemon splits the daemon's output into command lines (CR LF outside double quotes:
// a %CMNG certificate has line breaks inside its quotes) and applies the rule to each.
func (p *cpModemProxy) fromDaemon() {
	defer p.wg.Done()
	buf := make([]byte, 8192)
	for {
		n, err := p.master.Read(buf)
		if err != nil {
			return
		}
		p.fromD.Add(int64(n))
		p.mu.Lock()
		gen := p.gen
		var done [][]byte
		for _, c := range buf[:n] {
			if p.holdIn {
				break
			}
			p.partial = append(p.partial, c)
			switch {
			case c == '"':
				p.inQuote = !p.inQuote
			case c == '\n' && !p.inQuote:
				done = append(done, p.partial)
				p.partial = nil
			}
		}
		p.mu.Unlock()
		for _, line := range done {
			if !p.onLine(gen, line) {
				break
			}
		}
	}
}

// onLine applies the rule to one complete line read in generation gen; false means the
// line was held or dropped.
func (p *cpModemProxy) onLine(gen int, line []byte) bool {
	if p.gate != nil {
		p.gate()
	}
	text := strings.TrimRight(string(line), "\r\n")
	uploads := 0
	if text != "" {
		uploads = cpUploadCount(p.b)
	}
	p.mu.Lock()
	if p.holdIn || gen != p.gen {
		p.traceLocked("daemon line dropped (gen %d/%d): %q", gen, p.gen, short(text))
		p.mu.Unlock()
		return false
	}
	p.quiet = false
	act := cpForward
	if text != "" {
		i := len(p.lines)
		p.lines = append(p.lines, cpLine{text: text, uploads: uploads})
		if p.rule != nil {
			rule := p.rule
			p.mu.Unlock()
			act = rule(i, text)
			p.mu.Lock()
		}
	}
	p.traceLocked("daemon line %d, action %d: %q", len(p.lines)-1, act, short(text))
	switch act {
	case cpHoldBefore:
		p.holdIn, p.holdOut = true, true
		close(p.holdCh)
		p.mu.Unlock()
		return false
	case cpHoldAfter:
		p.holdIn, p.holdOut = true, true
		close(p.holdCh)
	}
	p.mu.Unlock()
	n, _ := p.up.Write(line)
	p.toM.Add(int64(n))
	return act == cpForward
}

// fromModem forwards the modem's output unless it is held.
func (p *cpModemProxy) fromModem() {
	defer p.wg.Done()
	buf := make([]byte, 8192)
	for {
		n, err := p.up.Read(buf)
		if err != nil {
			return
		}
		p.fromM.Add(int64(n))
		p.mu.Lock()
		p.traceLocked("modem output %q (held %v, quiet %v)", short(string(buf[:n])), p.holdOut, p.quiet)
		if p.holdOut || p.quiet {
			p.heldOut = append(p.heldOut, buf[:n]...)
			if !p.finalDone && cpHasFinal(p.heldOut) {
				p.finalDone = true
				close(p.finalCh)
			}
			p.mu.Unlock()
			continue
		}
		p.mu.Unlock()
		n, _ = p.master.Write(buf[:n])
		p.toD.Add(int64(n))
	}
}

// cpHasFinal reports whether modem output holds a final result line.
func cpHasFinal(out []byte) bool {
	for _, l := range bytes.Split(out, []byte("\r\n")) {
		s := string(l)
		if s == "OK" || s == "ERROR" || strings.HasPrefix(s, "+CME ERROR:") || strings.HasPrefix(s, "+CMS ERROR:") {
			return true
		}
	}
	return false
}

// cpNetProxy forwards the daemon's HTTPS (TCP) or CoAP/DTLS (UDP) traffic to the service and
// can hold the service's answers once it has recorded a given number of uploads: the
// service has taken the results, the daemon does not know.
type cpNetProxy struct {
	b      *testbed.Bed
	addr   net.Addr
	closer func()
	wg     sync.WaitGroup

	target atomic.Int64 // hold answers once this many uploads are recorded; 0: never
	frozen atomic.Bool  // the daemon's requests are dropped
	gate   func()       // runs before a request is passed on (the store watch's sync); set at start
	mu     sync.Mutex
	heldCh chan struct{}
	isHeld bool
}

func cpStartNetProxy(t *testing.T, b *testbed.Bed, tr string, gate func()) *cpNetProxy {
	t.Helper()
	p := &cpNetProxy{b: b, heldCh: make(chan struct{}), gate: gate}
	if tr == testbed.TransportCoAP {
		p.startUDP(t, b.Cloud().CoAPAddr())
	} else {
		p.startTCP(t, b.Cloud().HTTPAddr())
	}
	t.Cleanup(func() {
		p.closer()
		p.wg.Wait()
	})
	return p
}

func (p *cpNetProxy) port() int {
	switch a := p.addr.(type) {
	case *net.TCPAddr:
		return a.Port
	case *net.UDPAddr:
		return a.Port
	}
	return 0
}

// freeze drops the daemon's requests (true) or passes them on again.
func (p *cpNetProxy) freeze(on bool) { p.frozen.Store(on) }

// pass reports whether a chunk from the daemon may go to the service.
func (p *cpNetProxy) pass() bool {
	if p.gate != nil {
		p.gate()
	}
	return !p.frozen.Load()
}

// holdWhen arms (n > 0) or disarms (0) the hold.
func (p *cpNetProxy) holdWhen(n int) {
	p.mu.Lock()
	p.target.Store(int64(n))
	p.heldCh, p.isHeld = make(chan struct{}), false
	p.mu.Unlock()
}

func (p *cpNetProxy) held() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.heldCh
}

// hold reports whether an answer from the service must be dropped now.
func (p *cpNetProxy) hold() bool {
	n := p.target.Load()
	if n == 0 || int64(cpUploadCount(p.b)) < n {
		return false
	}
	p.mu.Lock()
	if !p.isHeld {
		p.isHeld = true
		close(p.heldCh)
	}
	p.mu.Unlock()
	return true
}

func (p *cpNetProxy) startTCP(t *testing.T, upstream string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr()
	var mu sync.Mutex
	var conns []net.Conn
	p.closer = func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			p.wg.Add(2)
			go func() {
				defer p.wg.Done()
				buf := make([]byte, 32*1024)
				for {
					n, err := c.Read(buf)
					if err != nil {
						u.Close()
						return
					}
					if !p.pass() {
						continue
					}
					if _, err := u.Write(buf[:n]); err != nil {
						c.Close()
						return
					}
				}
			}()
			go func() {
				defer p.wg.Done()
				buf := make([]byte, 32*1024)
				for {
					n, err := u.Read(buf)
					if err != nil {
						c.Close()
						return
					}
					if p.hold() {
						continue
					}
					if _, err := c.Write(buf[:n]); err != nil {
						u.Close()
						return
					}
				}
			}()
		}
	}()
}

func (p *cpNetProxy) startUDP(t *testing.T, upstream string) {
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	raddr, err := net.ResolveUDPAddr("udp", upstream)
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.LocalAddr()
	var mu sync.Mutex
	ups := map[string]*net.UDPConn{} // one upstream socket per daemon socket
	p.closer = func() {
		ln.Close()
		mu.Lock()
		for _, u := range ups {
			u.Close()
		}
		mu.Unlock()
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 64*1024)
		for {
			n, caddr, err := ln.ReadFromUDP(buf)
			if err != nil {
				return
			}
			mu.Lock()
			u := ups[caddr.String()]
			if u == nil {
				u, err = net.DialUDP("udp", nil, raddr)
				if err != nil {
					mu.Unlock()
					continue
				}
				ups[caddr.String()] = u
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					b := make([]byte, 64*1024)
					for {
						n, err := u.Read(b)
						if err != nil {
							if errors.Is(err, net.ErrClosed) {
								return
							}
							continue // ICMP port unreachable after the daemon died
						}
						if p.hold() {
							continue
						}
						_, _ = ln.WriteToUDP(b[:n], caddr)
					}
				}()
			}
			mu.Unlock()
			if p.pass() {
				_, _ = u.Write(buf[:n])
			}
		}
	}()
}

// cpStoreWatch counts the store's writes through inotify. A write into the slot file in place
// begins with its data (IN_MODIFY) and is done when the file is closed after the sync
// (IN_CLOSE_WRITE); a new slot file, and a checkpoint of the settings file, begin with a
// temporary file beside it (IN_CREATE) and are done when it is renamed onto it (IN_MOVED_TO)
// (internal/store).
//
// The proxies call sync before they pass on anything the daemon sends: the daemon's store
// writes that came before it are then counted (and their callbacks run) first, since the
// kernel queues an inotify event before the rename returns. So a kill point on a write
// stops the daemon no later than at its next modem command or network request.
type cpStoreWatch struct {
	fd     int
	base   string // the settings file's name
	slots  string // the slot file's name
	prefix string // of the store's temporary files
	stop   atomic.Bool
	done   chan struct{}

	mu          sync.Mutex // held while events are read and handled, so they are handled in order
	n           [2]int     // per cpStoreEvent
	on          func(ev cpStoreEvent, n int)
	atSyncOf    int         // writes begun when a proxy last synced before allUploaded
	allUploaded func() bool // the service has every upload of the job
}

type cpStoreEvent int

const (
	cpRenamed     cpStoreEvent = iota // a write completed
	cpTempCreated                     // a write began
)

func (e cpStoreEvent) String() string {
	if e == cpRenamed {
		return "done"
	}
	return "begun"
}

func cpStartStoreWatch(t *testing.T, path string) *cpStoreWatch {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(path), unix.IN_MOVED_TO|unix.IN_CREATE|unix.IN_MODIFY|unix.IN_CLOSE_WRITE); err != nil {
		unix.Close(fd)
		t.Fatalf("inotify watch %s: %v", filepath.Dir(path), err)
	}
	w := &cpStoreWatch{fd: fd, base: filepath.Base(path), slots: filepath.Base(path) + ".slots", prefix: cpTempPrefix(path), done: make(chan struct{})}
	go w.loop()
	t.Cleanup(func() {
		w.stop.Store(true)
		<-w.done
		unix.Close(fd)
	})
	return w
}

// cpTempPrefix is how the store's temporary files begin (internal/store): ".settings.tmp-"
// for the settings file, ".settings.slots.tmp-" for the slot file.
func cpTempPrefix(path string) string { return "." + filepath.Base(path) + "." }

func (w *cpStoreWatch) setOn(on func(ev cpStoreEvent, n int)) {
	w.mu.Lock()
	w.on = on
	w.mu.Unlock()
}

func (w *cpStoreWatch) count(ev cpStoreEvent) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n[ev]
}

// loop handles events as they come, between the proxies' syncs.
func (w *cpStoreWatch) loop() {
	defer close(w.done)
	for !w.stop.Load() {
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, 50); err == nil && n > 0 {
			w.sync()
		}
	}
}

// proxySync is sync for the proxies: it also notes how many writes had begun, until the
// service has every upload.
func (w *cpStoreWatch) proxySync() {
	w.sync()
	if w.allUploaded != nil && w.allUploaded() {
		return
	}
	w.mu.Lock()
	w.atSyncOf = w.n[cpTempCreated]
	w.mu.Unlock()
}

// beforeLastProxySync is the number of writes begun when a proxy last synced before the
// service had every upload.
func (w *cpStoreWatch) beforeLastProxySync() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.atSyncOf
}

// sync handles every event queued so far.
func (w *cpStoreWatch) sync() {
	w.mu.Lock()
	defer w.mu.Unlock()
	buf := make([]byte, 64*1024)
	for {
		n, err := unix.Read(w.fd, buf)
		if err != nil || n <= 0 {
			return // EAGAIN: nothing more queued
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			// struct inotify_event: wd int32, mask, cookie, len uint32, name[len].
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			end := min(off+unix.SizeofInotifyEvent+nameLen, n)
			name := string(bytes.TrimRight(buf[off+unix.SizeofInotifyEvent:end], "\x00"))
			off = end
			var ev cpStoreEvent
			switch {
			case mask&unix.IN_MOVED_TO != 0 && (name == w.base || name == w.slots),
				mask&unix.IN_CLOSE_WRITE != 0 && name == w.slots:
				ev = cpRenamed
			case mask&unix.IN_CREATE != 0 && strings.HasPrefix(name, w.prefix) && strings.Contains(name, ".tmp-"),
				mask&unix.IN_MODIFY != 0 && name == w.slots:
				ev = cpTempCreated
			default:
				continue
			}
			w.n[ev]++
			if w.on != nil {
				w.on(ev, w.n[ev])
			}
		}
	}
}
