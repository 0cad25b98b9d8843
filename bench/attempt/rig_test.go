package attempt

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/atmodem"
	"github.com/provisiond/provisiond/internal/coaptransport"
	"github.com/provisiond/provisiond/internal/config"
	"github.com/provisiond/provisiond/internal/daemon"
	"github.com/provisiond/provisiond/internal/httptransport"
	"github.com/provisiond/provisiond/internal/simcloud"
	"github.com/provisiond/provisiond/internal/store"
	"github.com/provisiond/provisiond/internal/testbed"
	"github.com/provisiond/provisiond/internal/transport"
)

// Connection patterns a rig can dial with.
const (
	// patternProvisiond is provisiond's own: one connection (one handshake) per attempt.
	patternProvisiond = "provisiond"
	// patternDevice replays the device library's pattern with the same client: over HTTPS a
	// new connection for every GET and POST (docs/protocol.md §1.1); over CoAP on an nRF9160 the
	// socket closed after each fetch and a new handshake plus auth before each upload (§2.4).
	patternDevice = "device"
)

// rig is one long-running daemon (daemon.Run) on a testbed: the simulated modem on a pty,
// the simulated service on loopback, the real AT client, transport and file store.
type rig struct {
	bed    *testbed.Bed
	d      *daemon.Daemon
	notify chan struct{}
	cancel context.CancelFunc
	done   chan error

	mu       sync.Mutex
	sessions []daemon.Session // dialled during the current attempt
}

// cost is what one attempt cost.
type cost struct {
	Commands  []string // AT command lines the modem received
	SerialIn  int64    // bytes host → modem
	SerialOut int64    // bytes modem → host
	Wire      transport.Stats
	Last      daemon.AttemptStatus
}

func newRig(tb testing.TB, transportName, pattern string) *rig {
	tb.Helper()
	ctx := context.Background()
	// The modem starts online (+CFUN=1), as on a gateway that uses it, so every batch has to
	// take it offline and put it back.
	bed, err := testbed.Start(ctx, testbed.Options{Transport: transportName, InitialMode: 1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = bed.Close() })
	cloud := bed.Cloud()
	st, err := store.Open(bed.StorePath(), store.Limits{})
	if err != nil {
		tb.Fatal(err)
	}
	open, err := opener(transportName, cloud)
	if err != nil {
		tb.Fatal(err)
	}
	r := &rig{bed: bed, notify: make(chan struct{}, 1), done: make(chan error, 1)}
	dial := func(ctx context.Context) (daemon.Session, error) {
		var s daemon.Session
		switch {
		case pattern == patternProvisiond:
			s, err = open(ctx)
		case transportName == testbed.TransportHTTP:
			s, err = &perRequest{open: open}, nil
		default:
			s, err = newReconnectPerUpload(ctx, open)
		}
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		r.sessions = append(r.sessions, s)
		r.mu.Unlock()
		return s, nil
	}
	// The config package owns the defaults; the rig runs attempts only when told (no
	// auto start), with the root CA written as the shipped config does.
	cfg := daemon.FromFile(config.Default(), "provisiond/bench")
	cfg.Transport = transportName
	cfg.AutoStart = false
	cfg.HooksDir = ""
	d, err := daemon.New(cfg, daemon.Deps{
		OpenModem: func(ctx context.Context) (daemon.Modem, error) {
			port, err := atmodem.OpenPort(bed.ModemPath(), 115200, "none")
			if err != nil {
				return nil, err
			}
			return atmodem.New(port, atmodem.Config{}), nil
		},
		Dial:  dial,
		Store: st,
		Notify: func(string) {
			select {
			case r.notify <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	r.d = d
	runCtx, cancel := context.WithCancel(ctx)
	r.cancel = cancel
	go func() { r.done <- d.Run(runCtx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-r.done; err != nil {
			tb.Errorf("Run: %v", err)
		}
	})
	select {
	case <-d.Ready():
	case err := <-r.done:
		tb.Fatalf("Run ended before ready: %v", err)
	case <-time.After(30 * time.Second):
		tb.Fatal("daemon not ready after 30s")
	}
	return r
}

// opener returns a per-attempt Open of the transport, pointed at the simulator the way the
// config file points the binary at it (hostname, port, ca_file).
func opener(name string, cloud *simcloud.Server) (func(context.Context) (daemon.Session, error), error) {
	switch name {
	case testbed.TransportHTTP:
		host, port, err := hostPort(cloud.HTTPAddr())
		if err != nil {
			return nil, err
		}
		t, err := httptransport.New(httptransport.Config{Hostname: host, Port: port, CAFile: cloud.CAFile(),
			Timeout: 10 * time.Second, UserAgent: "provisiond/bench"})
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context) (daemon.Session, error) {
			s, err := t.Open(ctx)
			if err != nil {
				return nil, err
			}
			return s, nil
		}, nil
	default:
		host, port, err := hostPort(cloud.CoAPAddr())
		if err != nil {
			return nil, err
		}
		t, err := coaptransport.New(coaptransport.Config{Hostname: host, Port: port, CAFile: cloud.CAFile(),
			Timeout: 10 * time.Second})
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context) (daemon.Session, error) {
			s, err := t.Open(ctx)
			if err != nil {
				return nil, err
			}
			return s, nil
		}, nil
	}
}

func hostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	return host, port, err
}

// attempt queues reqs, triggers one attempt and returns what it cost.
func (r *rig) attempt(tb testing.TB, reqs []simcloud.Request) cost {
	tb.Helper()
	if _, err := r.bed.Queue(reqs...); err != nil {
		tb.Fatal(err)
	}
	before := r.d.Status().Attempts
	n0 := len(r.bed.ModemCommands())
	s0 := r.bed.Modem().Stats()
	r.mu.Lock()
	r.sessions = nil
	r.mu.Unlock()

	r.d.TriggerNow()
	deadline := time.After(60 * time.Second)
	for {
		st := r.d.Status()
		if st.LastAttempt != nil && st.LastAttempt.Number > before {
			break
		}
		select {
		case <-r.notify:
		case err := <-r.done:
			tb.Fatalf("Run ended: %v", err)
		case <-deadline:
			tb.Fatalf("attempt %d did not end within 60s", before+1)
		}
	}
	s1 := r.bed.Modem().Stats()
	c := cost{
		Commands:  r.bed.ModemCommands()[n0:],
		SerialIn:  s1.BytesIn - s0.BytesIn,
		SerialOut: s1.BytesOut - s0.BytesOut,
		Last:      *r.d.Status().LastAttempt,
	}
	r.mu.Lock()
	for _, s := range r.sessions {
		c.Wire = c.Wire.Add(s.Stats())
	}
	r.mu.Unlock()
	return c
}

// perRequest is the device library's HTTPS pattern: every request on a new connection.
type perRequest struct {
	open  func(context.Context) (daemon.Session, error)
	mu    sync.Mutex
	total transport.Stats
}

func (p *perRequest) each(ctx context.Context, do func(s daemon.Session) error) error {
	s, err := p.open(ctx)
	if err != nil {
		return err
	}
	err = do(s)
	_ = s.Close()
	p.mu.Lock()
	p.total = p.total.Add(s.Stats())
	p.mu.Unlock()
	return err
}

func (p *perRequest) Fetch(ctx context.Context, req transport.FetchRequest) (body []byte, err error) {
	err = p.each(ctx, func(s daemon.Session) error {
		body, err = s.Fetch(ctx, req)
		return err
	})
	return body, err
}

func (p *perRequest) Upload(ctx context.Context, req transport.UploadRequest) error {
	return p.each(ctx, func(s daemon.Session) error { return s.Upload(ctx, req) })
}

func (p *perRequest) Stats() transport.Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total
}

func (p *perRequest) Close() error { return nil }

// reconnectPerUpload is the device library's CoAP pattern on an nRF9160 (no keep-open): the
// socket opened for the attempt serves the first fetch and is closed while the batch runs;
// each upload opens a new one (handshake, auth), which the next fetch reuses.
type reconnectPerUpload struct {
	open  func(context.Context) (daemon.Session, error)
	mu    sync.Mutex
	cur   daemon.Session
	total transport.Stats
}

func newReconnectPerUpload(ctx context.Context, open func(context.Context) (daemon.Session, error)) (*reconnectPerUpload, error) {
	s, err := open(ctx)
	if err != nil {
		return nil, err
	}
	return &reconnectPerUpload{open: open, cur: s}, nil
}

func (p *reconnectPerUpload) closeCur() {
	if p.cur == nil {
		return
	}
	_ = p.cur.Close()
	p.total = p.total.Add(p.cur.Stats())
	p.cur = nil
}

func (p *reconnectPerUpload) Fetch(ctx context.Context, req transport.FetchRequest) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil {
		s, err := p.open(ctx)
		if err != nil {
			return nil, err
		}
		p.cur = s
	}
	body, err := p.cur.Fetch(ctx, req)
	p.closeCur()
	return body, err
}

func (p *reconnectPerUpload) Upload(ctx context.Context, req transport.UploadRequest) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeCur()
	s, err := p.open(ctx)
	if err != nil {
		return err
	}
	p.cur = s
	return s.Upload(ctx, req)
}

func (p *reconnectPerUpload) Stats() transport.Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.total
	if p.cur != nil {
		t = t.Add(p.cur.Stats())
	}
	return t
}

func (p *reconnectPerUpload) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeCur()
	return nil
}

func (c cost) String() string {
	return fmt.Sprintf("%d AT commands, serial %d B in / %d B out, %d handshakes, %d requests, wire %d B sent / %d B received, event %s",
		len(c.Commands), c.SerialIn, c.SerialOut, c.Wire.Handshakes, c.Wire.Requests, c.Wire.BytesSent,
		c.Wire.BytesReceived, c.Last.Event)
}
