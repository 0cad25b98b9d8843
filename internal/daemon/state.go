package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/store"
)

// The daemon's own keys. They live outside the protocol's subtree and config commands from the
// service may not write them.
const (
	keyJournal   = reservedPrefix + "journal"
	keyOutbox    = reservedPrefix + "outbox"
	keySavedCFUN = reservedPrefix + "saved-cfun"
	keySavedCMEE = reservedPrefix + "saved-cmee"
)

// Keys of the protocol's subtree (docs/protocol.md §6), relative to Config.StorePrefix.
const (
	subkeyCursor   = "after-correlation-id"
	subkeyInterval = "interval-sec"
)

// interruptedMessage is the text reported for a command that was started but whose result was
// never recorded because provisiond stopped (crash, kill, power loss) while it ran.
const interruptedMessage = "interrupted: provisiond stopped during execution, result unknown"

// record is one response as stored in the journal and the outbox.
type record struct {
	ID   string `json:"id"`
	Kind uint64 `json:"kind"`
	CME  uint64 `json:"cme,omitempty"`
	Msg  string `json:"msg,omitempty"`
}

func toRecord(r proto.Response) record {
	return record{ID: r.ID, Kind: uint64(r.Kind), CME: r.CMEError, Msg: r.Message}
}

func (r record) response() proto.Response {
	return proto.Response{ID: r.ID, Kind: proto.ResponseKind(r.Kind), CMEError: r.CME, Message: r.Msg}
}

func (r record) failed() bool { return r.Kind == uint64(proto.KindError) }

// journal is the state of the batch being executed. It is written once per AT command, just
// before the command is sent: that one write records the previous command's result and this
// command as executing. A batch's last AT command (last before a config command, FINISHED or
// the end) gets its result written by the config command's own write, or by one more write
// before the modem is touched again. The outbox write then replaces the journal.
//
// Why one write per command is enough (docs/design.md, "The journal"): whatever instant a
// SIGKILL or power loss hits, the journal on disk is the one of the last write, and
//   - a command sent to the modem is named in it as executing, or has its result in it: the
//     write naming it precedes the send, and the next write (which replaces the name by the
//     result) comes only after the answer. So an executed command is never unreported: at
//     worst it is reported as interrupted, with the result unknown;
//   - a command named as executing is never sent again: a start turns the journal into the
//     outbox (that command as interrupted, its id as the cursor), so the service does not
//     serve it again;
//   - the result of a command whose answer came before the daemon moved on to anything else
//     on the modem is its real one: the daemon does nothing on the modem between an answer
//     and the write that records it.
//
// A separate write after every command would add nothing to these: between an answer and the
// next write the daemon only logs and encodes (no modem, service or hook I/O), so a crash
// there is the same, to everyone outside, as a crash while waiting for the answer
// (interrupted, result unknown). The e2e crash-point test kills the daemon before every
// command line and checks that each earlier answered command keeps its real result.
type journal struct {
	Responses []record `json:"responses"`
	// Cursor is the id of the last command processed (docs/protocol.md §4.1 step 3).
	Cursor string `json:"cursor,omitempty"`
	// Executing is the id of the command running now: if the journal is found with it set,
	// the command was started and its result is unknown.
	Executing string `json:"executing,omitempty"`
	// Finished is the id of a FINISHED command already processed; its ack is deferred.
	Finished string `json:"finished,omitempty"`
}

func (j *journal) failed() bool {
	for _, r := range j.Responses {
		if r.failed() {
			return true
		}
	}
	return false
}

// toOutbox closes the batch: a command still marked as executing is reported as interrupted
// and becomes the failing last entry; the FINISHED ack is appended only when nothing failed.
func (j *journal) toOutbox() *outbox {
	ob := &outbox{Responses: append([]record(nil), j.Responses...), Cursor: j.Cursor}
	if j.Executing != "" {
		ob.Responses = append(ob.Responses, record{ID: j.Executing, Kind: uint64(proto.KindError), Msg: interruptedMessage})
		ob.Cursor = j.Executing
	}
	if j.Finished != "" && !ob.failed() {
		ob.Responses = append(ob.Responses, record{ID: j.Finished, Kind: uint64(proto.KindFinishedAck)})
	}
	return ob
}

// outbox is a batch's responses waiting for upload, with the cursor that goes with them.
type outbox struct {
	Responses []record `json:"responses"`
	Cursor    string   `json:"cursor"`
}

func (o *outbox) failed() bool {
	for _, r := range o.Responses {
		if r.failed() {
			return true
		}
	}
	return false
}

// finished reports whether the outbox carries a FINISHED ack (always its last entry).
func (o *outbox) finished() bool {
	n := len(o.Responses)
	return n > 0 && o.Responses[n-1].Kind == uint64(proto.KindFinishedAck)
}

func (o *outbox) responses() []proto.Response {
	rs := make([]proto.Response, len(o.Responses))
	for i, r := range o.Responses {
		rs[i] = r.response()
	}
	return rs
}

func setJSON(key string, v any) (store.Change, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return store.Change{}, fmt.Errorf("daemon: encode %s: %w", key, err)
	}
	return store.Change{Key: key, Value: string(b)}, nil
}

func del(key string) store.Change { return store.Change{Key: key, Delete: true} }

// getOptional reads key, "" with ok=false when it is absent.
func getOptional(kv KV, key string) (string, bool, error) {
	v, err := kv.Get(key)
	if errors.Is(err, store.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("daemon: read %s: %w", key, err)
	}
	return v, true, nil
}

// loadState reads the cursor and the pending outbox, turning a leftover journal (from a crash
// during a batch) into the outbox first. It runs before anything is fetched.
func (d *Daemon) loadState(cfg Config) error {
	kv := d.deps.Store
	cursor, _, err := getOptional(kv, cfg.StorePrefix+"/"+subkeyCursor)
	if err != nil {
		return err
	}
	d.cursor = cursor

	var pending *outbox
	if v, ok, err := getOptional(kv, keyOutbox); err != nil {
		return err
	} else if ok {
		pending = &outbox{}
		if err := json.Unmarshal([]byte(v), pending); err != nil {
			// Only a bug or a hand edit gets here: the store checks its file's integrity.
			d.log.Error("pending outbox unreadable; dropped", zap.String("value", truncate(v, 200)), zap.Error(err))
			pending = nil
		}
	}
	v, ok, err := getOptional(kv, keyJournal)
	if err != nil {
		return err
	}
	changes := []store.Change{}
	if ok {
		var j journal
		if err := json.Unmarshal([]byte(v), &j); err != nil {
			d.log.Error("batch journal unreadable; dropped", zap.String("value", truncate(v, 200)), zap.Error(err))
		} else {
			recovered := j.toOutbox()
			d.log.Warn("recovered the results of a batch interrupted by a stop or crash", MsgID(msgBatchRecovered),
				zap.Int("responses", len(recovered.Responses)), zap.String("interrupted_id", j.Executing),
				zap.String("correlation_id", recovered.Cursor))
			if pending != nil {
				// Both at once cannot come from our own writes (each step is one Apply);
				// keep every response rather than choose.
				pending.Responses = append(pending.Responses, recovered.Responses...)
				pending.Cursor = recovered.Cursor
			} else {
				pending = recovered
			}
		}
		changes = append(changes, del(keyJournal))
	}
	if pending != nil && len(pending.Responses) == 0 {
		pending = nil
		changes = append(changes, del(keyOutbox))
	}
	if pending != nil && ok {
		c, err := setJSON(keyOutbox, pending)
		if err != nil {
			return err
		}
		changes = append(changes, c)
	}
	d.outbox = pending
	d.setCursorStatus(d.cursor, d.outbox)
	if len(changes) > 0 {
		if err := kv.Apply(changes); err != nil {
			// The journal stays; the next start converts it again. The outbox in memory is
			// uploaded all the same.
			d.log.Error("could not persist the recovered outbox", zap.Error(err))
		}
	}
	return nil
}

// persistOutbox writes ob as the pending outbox and deletes the journal (and the saved modem
// mode, when it was restored) in one Apply. On failure the outbox stays in memory only.
func (d *Daemon) persistOutbox(ob *outbox, extra ...store.Change) error {
	changes := append([]store.Change{del(keyJournal)}, extra...)
	if len(ob.Responses) > 0 {
		c, err := setJSON(keyOutbox, ob)
		if err != nil {
			return err
		}
		changes = append(changes, c)
	}
	if err := d.deps.Store.Apply(changes); err != nil {
		return fmt.Errorf("daemon: write outbox: %w: %w", ErrStore, err)
	}
	return nil
}

// persistOutboxRetry is persistOutbox tried a few times: it is the write that makes a batch's
// results reportable, and a store full for a moment (another writer, a log rotation) should
// not cost a batch. It pauses between tries even when the attempt is cancelled.
func (d *Daemon) persistOutboxRetry(ob *outbox, extra ...store.Change) error {
	const tries = 3
	var err error
	for i := range tries {
		if i > 0 {
			time.Sleep(d.storeWait)
		}
		if err = d.persistOutbox(ob, extra...); err == nil {
			return nil
		}
		d.log.Warn("could not store the batch's results", zap.Int("try", i+1), zap.Int("tries", tries), zap.Error(err))
	}
	return err
}

// recoverUnstored reads a batch that could not be stored back from the store's journal, as a
// start would, before an attempt does anything else. It fails while the store cannot turn the
// journal into the outbox: uploading what only memory holds is what it avoids.
func (d *Daemon) recoverUnstored(cfg Config) error {
	if !d.unstored {
		return nil
	}
	if err := d.loadState(cfg); err != nil {
		return err
	}
	if _, ok, err := getOptional(d.deps.Store, keyJournal); err != nil || ok {
		d.outbox = nil
		d.setCursorStatus(d.cursor, nil)
		return fmt.Errorf("daemon: recover unstored results: journal still in the store: %w", ErrStore)
	}
	d.unstored = false
	return nil
}

// parseInterval parses <prefix>/interval-sec like the device library's strtoll(…, base 0):
// decimal, 0x… hex or leading-0 octal, an optional sign; only a value above zero (and small
// enough to be a time.Duration) is valid. Unlike strconv's base 0 it takes no 0b/0o prefix
// and no underscores, which strtoll would not either.
func parseInterval(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "+")
	base := 10
	switch {
	case len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X"):
		base, s = 16, s[2:]
	case len(s) > 1 && s[0] == '0':
		base, s = 8, s[1:]
	}
	if s == "" || s[0] == '+' || s[0] == '-' {
		return 0, false
	}
	n, err := strconv.ParseInt(s, base, 64)
	if err != nil || n <= 0 || n > int64(math.MaxInt64/time.Second) {
		return 0, false
	}
	return n, true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
