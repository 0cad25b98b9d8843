package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/testbed"
)

// lookup is what the renderer asks the simulated service about: the full command behind a
// correlation id (the daemon logs only ids and command names), and the latest upload.
type lookup interface {
	command(id string) (proto.Command, bool)
	lastUpload() ([]proto.Response, bool)
	certificateIssued() bool
}

// renderer turns the daemon's JSON log into one readable line per interesting event. It is
// called from one goroutine (the log reader); tally is read after the process ended.
type renderer struct {
	out   io.Writer
	look  lookup
	start time.Time
	now   func() time.Time

	mu        sync.Mutex // guards tally against a concurrent summary on interrupt
	tally     tally
	certShown bool
}

// tally is what the log said happened.
type tally struct {
	executed, failed int
	uploads          int
	events           []string
	warnings         []string
}

func (r *renderer) line(symbol, format string, args ...any) {
	el := r.now().Sub(r.start).Seconds()
	fmt.Fprintf(r.out, "  %5.2fs %s %s\n", el, symbol, fmt.Sprintf(format, args...))
}

// handle renders one stderr line of the daemon.
func (r *renderer) handle(e testbed.LogEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !e.JSON() {
		if s := strings.TrimSpace(e.Raw); s != "" {
			r.line("!", "%s", s)
		}
		return
	}
	if ev := e.Event(); ev != "" {
		r.tally.events = append(r.tally.events, ev)
		r.event(ev, e)
		return
	}
	switch e.Msg {
	case "modem ready":
		if id := e.Str("device_uuid"); id != "" {
			r.line("·", "modem answered: firmware %s, device %s", e.Str("modem_version"), id)
		} else { // the UUID comes with the first JWT
			r.line("·", "modem answered: firmware %s", e.Str("modem_version"))
		}
	case "root CA written and verified":
		r.line("·", "root CA written to sec tag %s, modem lists SHA-256 %s (verified)", e.Str("sec_tag"), short(e.Str("sha256"), 16))
	case "root CA written; this modem firmware lists no hash to verify it":
		r.line("·", "root CA written to sec tag %s", e.Str("sec_tag"))
	case "modem had no valid time; set it from the host clock":
		r.line("·", "modem had no network time: clock set from the host (AT+CCLK) for its JWT")
	case "batch received":
		r.line("↓", "batch of %s command(s) from the service", e.Str("commands"))
	case "command done":
		r.tally.executed++
		r.line("→", "%s  ok", r.atString(e))
	case "command failed":
		r.tally.executed++
		r.tally.failed++
		detail := "failed"
		if c := e.Str("cme_error"); c != "" && c != "0" {
			detail = "+CME ERROR: " + c
		}
		r.line("✗", "%s  %s", r.atString(e), detail)
	case "config written":
		r.tally.executed++
		r.line("→", "config command: %s  stored", r.configPairs(e.Str("correlation_id")))
	case "config command failed":
		r.tally.executed++
		r.tally.failed++
		r.line("✗", "config command %s: %s", short(e.Str("correlation_id"), 12), e.Str("errno"))
	case "results uploaded":
		r.tally.uploads++
		r.line("↑", "results uploaded: %s", r.uploadSummary())
		if !r.certShown && r.look.certificateIssued() {
			r.certShown = true
			r.line("·", "service: CSR from %%KEYGEN verified and signed by its CA; certificate write queued")
		}
	default:
		if e.Level == "warn" || e.Level == "error" {
			msg := e.Msg
			if err := e.Str("error"); err != "" {
				msg += ": " + err
			}
			r.tally.warnings = append(r.tally.warnings, msg)
			r.line("!", "%s", msg)
		}
	}
}

func (r *renderer) event(ev string, e testbed.LogEntry) {
	reason := e.Str("reason")
	switch ev {
	case "START":
		r.line("▸", "START attempt %s", e.Str("attempt"))
	case "NEED_LTE_DEACTIVATED":
		why := "before the batch's first AT command"
		if reason != "" {
			why = reason
		}
		r.line("·", "NEED_LTE_DEACTIVATED: modem set offline (+CFUN=4), %s", why)
	case "NEED_LTE_ACTIVATED":
		r.line("·", "NEED_LTE_ACTIVATED: modem's mode restored")
	case "DONE":
		r.line("✓", "DONE: FINISHED acknowledged, cursor %s", short(e.Str("correlation_id"), 20))
	case "NO_COMMANDS":
		r.line("·", "NO_COMMANDS: nothing (more) queued")
	case "STOP":
		r.line("▸", "STOP")
	default:
		if reason != "" {
			r.line("✗", "%s: %s", ev, reason)
		} else {
			r.line("✗", "%s", ev)
		}
	}
}

// atString is the AT command behind a log entry, with certificate bodies abbreviated.
func (r *renderer) atString(e testbed.LogEntry) string {
	if c, ok := r.look.command(e.Str("correlation_id")); ok && c.Kind == proto.KindAT {
		return abbreviateAT(c.ATString())
	}
	return "AT" + e.Str("command")
}

func (r *renderer) configPairs(id string) string {
	c, ok := r.look.command(id)
	if !ok || len(c.Properties) == 0 {
		return short(id, 12)
	}
	pairs := make([]string, 0, len(c.Properties))
	for _, p := range c.Properties {
		pairs = append(pairs, p.Key+"="+p.Value)
	}
	return strings.Join(pairs, ", ")
}

// uploadSummary describes the latest recorded upload: each response in a few words.
func (r *renderer) uploadSummary() string {
	rs, ok := r.look.lastUpload()
	if !ok {
		return "(not recorded by the service)"
	}
	parts := make([]string, 0, len(rs))
	for _, x := range rs {
		parts = append(parts, describeResponse(x))
	}
	return fmt.Sprintf("%d response(s): %s", len(rs), strings.Join(parts, "; "))
}

func describeResponse(x proto.Response) string {
	msg := strings.TrimSpace(strings.ReplaceAll(x.Message, "\r\n", " "))
	switch x.Kind {
	case proto.KindConfigAck:
		return "config ack"
	case proto.KindFinishedAck:
		return "FINISHED ack"
	case proto.KindError:
		return fmt.Sprintf("error (cme %d) %q", x.CMEError, short(msg, 40))
	}
	if rest, ok := strings.CutPrefix(msg, `%KEYGEN: "`); ok {
		// "<base64url DER CSR>.<base64url COSE>" OK: the sizes say more than the base64.
		body, final, _ := strings.Cut(rest, `"`)
		csr, cose, _ := strings.Cut(body, ".")
		return fmt.Sprintf("%%KEYGEN: \"<CSR, %d chars>.<COSE, %d chars>\" %s", len(csr), len(cose), strings.TrimSpace(final))
	}
	if strings.HasPrefix(msg, "+CME ERROR:") {
		return strings.TrimSpace(msg) + " (in the ignore list)"
	}
	return short(msg, 40)
}

// abbreviateAT shortens a quoted PEM body in an AT command to its kind and size.
func abbreviateAT(s string) string {
	i := strings.Index(s, `"-----BEGIN `)
	if i < 0 {
		return short(s, 60)
	}
	j := strings.LastIndex(s, `"`)
	if j <= i {
		return short(s, 60)
	}
	body := s[i+1 : j]
	kind := strings.TrimSuffix(strings.TrimPrefix(strings.SplitN(body, "\n", 2)[0], "-----BEGIN "), "-----")
	return fmt.Sprintf("%s\"<%s, %d bytes>\"%s", s[:i], strings.ToLower(kind), len(body), s[j+1:])
}

// short keeps the first n runes of s, marking a cut with "…".
func short(s string, n int) string {
	rs := []rune(s)
	if len(rs) <= n {
		return s
	}
	return string(rs[:n]) + "…"
}

func (r *renderer) snapshot() tally {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.tally
	t.events = append([]string(nil), t.events...)
	t.warnings = append([]string(nil), t.warnings...)
	return t
}
