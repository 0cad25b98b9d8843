package fleet

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/provisiond/provisiond/internal/status"
)

//go:embed page/index.html
var pageHTML []byte

// Dashboard serves the station's page, its live updates and its data:
//
//	GET /             the page (embedded; no other asset)
//	GET /events       Server-Sent Events: a "snapshot" event with the page's data at once and
//	                  after every change
//	GET /api/instances the JSON of `provisiond list --json`
//	GET /metrics      Prometheus text exposition
//
// The page never polls: the server asks the sockets every Interval (every BusyInterval while
// an attempt runs somewhere) and pushes what changed.
type Dashboard struct {
	Collector *Collector
	Interval  time.Duration // how often the sockets are asked; 1s when 0
	// BusyInterval is the period while some instance is provisioning. The end of an attempt
	// is what the person at the station waits to see, and the daemons push nothing, so they
	// are asked more often then; idle, the station costs only the slower Interval
	// (BENCHMARKS.md §11). Interval/5, but at least 100 ms and at most Interval, when 0.
	BusyInterval time.Duration
	Logf         func(format string, args ...any)

	mu     sync.Mutex
	latest []byte                   // the last page data sent, nil before the first
	subs   map[chan []byte]struct{} // one per open event stream
}

// PageData is what the page draws: the snapshot with what the page shows worked out.
type PageData struct {
	Time      time.Time `json:"time"`
	Counts    Counts    `json:"counts"`
	Progress  float64   `json:"progress"` // the station's share done, 0…1
	Instances []Tile    `json:"instances"`
}

// Tile is one instance's tile.
type Tile struct {
	Row
	Class    Class   `json:"class"`
	Step     string  `json:"step"`     // Progress() of the running attempt
	Fraction float64 `json:"fraction"` // through the current batch, 0…1
	Last     string  `json:"last,omitempty"`
	Reason   string  `json:"reason,omitempty"`
	Timeline []Mark  `json:"timeline"` // the last attempts' endings, oldest first
}

// Mark is one attempt's ending on a tile's timeline.
type Mark struct {
	Time   time.Time `json:"time"`
	Event  string    `json:"event"`
	Reason string    `json:"reason,omitempty"`
	OK     bool      `json:"ok"`
}

// ending reports whether e ends an attempt (rather than starting, stopping or scheduling one).
func ending(e status.EventName) bool {
	return e == "DONE" || e == "NO_COMMANDS" || e == "FATAL_ERROR" || strings.HasPrefix(string(e), "FAILED")
}

// timelineLen is how many past attempts a tile shows.
const timelineLen = 10

// Page works out the page's data from s.
func Page(s Snapshot) PageData {
	p := PageData{Time: s.Time, Counts: Count(s), Instances: make([]Tile, 0, len(s.Instances))}
	var sum float64
	for _, r := range s.Instances {
		t := Tile{Row: r, Class: Classify(r), Step: "-", Timeline: []Mark{}}
		if st := r.Status; st != nil {
			t.Step = Progress(st.Progress)
			if pr := st.Progress; pr != nil && pr.Commands > 0 {
				t.Fraction = float64(pr.Command) / float64(pr.Commands)
			}
			if la := st.LastAttempt; la != nil {
				t.Last, t.Reason = string(la.Event), Reason(la)
			}
			for _, e := range st.Events {
				if ending(e.Event) {
					// A NO_COMMANDS with a reason followed a failed command.
					ok := e.Event == "DONE" || (e.Event == "NO_COMMANDS" && e.Reason == "")
					t.Timeline = append(t.Timeline, Mark{Time: e.Time, Event: string(e.Event), Reason: e.Reason, OK: ok})
				}
			}
			if n := len(t.Timeline); n > timelineLen {
				t.Timeline = t.Timeline[n-timelineLen:]
			}
		}
		switch t.Class {
		case ClassDone:
			sum++
		case ClassRunning:
			sum += t.Fraction * 0.9
		}
		p.Instances = append(p.Instances, t)
	}
	if len(s.Instances) > 0 {
		p.Progress = sum / float64(len(s.Instances))
	}
	return p
}

// Handler returns the dashboard's routes.
func (d *Dashboard) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		// The page comes with the data of the moment, so it is complete on its first paint
		// (and a browser that does not run the event stream still sees the station).
		data := d.current()
		if data == nil {
			if s, err := d.Collector.Collect(r.Context()); err == nil {
				data, _ = json.Marshal(Page(s))
			}
		}
		if data == nil {
			data = []byte("null")
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'")
		// json.Marshal escapes <, > and &, so the data cannot end the script element.
		w.Write(bytes.Replace(pageHTML, []byte(initialMark), data, 1))
	})
	mux.HandleFunc("GET /api/instances", d.snapshot("application/json", WriteJSON))
	mux.HandleFunc("GET /metrics", d.snapshot("text/plain; version=0.0.4; charset=utf-8", WriteMetrics))
	mux.HandleFunc("GET /events", d.events)
	return mux
}

// initialMark is the place in the page where the data of the moment goes.
const initialMark = "/*INITIAL*/null"

func (d *Dashboard) current() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.latest
}

func (d *Dashboard) fail(w http.ResponseWriter, err error) {
	http.Error(w, err.Error(), http.StatusServiceUnavailable)
}

// events streams the page data: the latest at once, then every change.
func (d *Dashboard) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ch := make(chan []byte, 1)
	d.mu.Lock()
	if d.subs == nil {
		d.subs = make(map[chan []byte]struct{})
	}
	d.subs[ch] = struct{}{}
	if d.latest != nil {
		ch <- d.latest
	}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.subs, ch)
		d.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n\n")
	fl.Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case data := <-ch:
			if _, err := fmt.Fprintf(w, "event: snapshot\ndata: %s\n\n", data); err != nil {
				return
			}
			fl.Flush()
		}
	}
}

// Poll asks the sockets every Interval, or every BusyInterval while an attempt runs, until
// ctx ends, and pushes each change to the open event streams. The periods run start to start:
// a slow collect is followed at once by the next. A slow reader misses intermediate
// snapshots, never the newest.
func (d *Dashboard) Poll(ctx context.Context) {
	idle, busy := d.periods()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var prev []byte // the data without its time, to see whether anything changed
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		started := time.Now()
		s, err := d.Collector.Collect(ctx)
		if err != nil && d.Logf != nil {
			d.Logf("dashboard: %v", err)
		}
		page := Page(s)
		page.Time = time.Time{}
		key, _ := json.Marshal(page)
		if !bytes.Equal(key, prev) {
			prev = key
			page.Time = s.Time
			data, _ := json.Marshal(page)
			d.publish(data)
		}
		period := idle
		if provisioning(s) {
			period = busy
		}
		timer.Reset(max(period-time.Since(started), 0))
	}
}

// periods gives Interval and BusyInterval with their defaults.
func (d *Dashboard) periods() (idle, busy time.Duration) {
	idle = d.Interval
	if idle <= 0 {
		idle = time.Second
	}
	busy = d.BusyInterval
	if busy <= 0 {
		busy = max(idle/5, 100*time.Millisecond)
	}
	return idle, min(busy, idle)
}

// provisioning reports whether an attempt runs on any instance of s.
func provisioning(s Snapshot) bool {
	for _, r := range s.Instances {
		if r.Status != nil && r.Status.State == status.StateProvisioning {
			return true
		}
	}
	return false
}

// snapshot serves a fresh Collect written by write as contentType.
func (d *Dashboard) snapshot(contentType string, write func(io.Writer, Snapshot) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := d.Collector.Collect(r.Context())
		if err != nil {
			d.fail(w, err)
			return
		}
		w.Header().Set("Content-Type", contentType)
		write(w, s)
	}
}

func (d *Dashboard) publish(data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.latest = data
	for ch := range d.subs {
		select {
		case <-ch: // drop the stale one the reader has not taken
		default:
		}
		ch <- data
	}
}

// Serve serves the dashboard on ln until ctx ends.
func (d *Dashboard) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	go d.Poll(ctx)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("dashboard: %w", err)
	}
	return nil
}

// Loopback reports whether addr (host:port) names only loopback addresses: the dashboard's
// default; anything else must be asked for.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
