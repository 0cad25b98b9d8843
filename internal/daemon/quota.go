package daemon

import (
	"encoding/json"
	"fmt"

	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/store"
)

// The service's share of the store.
//
// The store's limits (number of keys, file size) hold for the whole store, and config
// commands write into the same store as the daemon's own state. A service that filled it
// would leave no room for the journal, the saved modem mode or the outbox: no AT command could
// then be recorded before it runs, so none would run, and every later attempt would fail the
// same way. So config commands get a share of the store, and a command that would take more
// fails like one that meets a full store: errno ENOSPC.
//
// The share is measured over every key outside provisiond/ (what config commands can write,
// and the cursor and interval the daemon keeps beside them):
//   - keys: the store's MaxKeys minus ownKeyReserve, 240 with the default limits. The daemon
//     adds at most three keys of its own (journal, saved mode, outbox) plus the cursor.
//   - bytes, as the settings file stores them: 1/serviceFileShare of MaxFileSize, 256 KiB
//     with the default limits. Counting stored bytes and not the bytes sent matters: the file
//     takes six bytes for a control character. The journal and the outbox are one value each,
//     at most MaxValueLen (64 KiB) and about twice that once stored, so three quarters of the
//     file leaves them room with a wide margin.
//
// Only growth is refused: a store already over the share (the limits were lowered) still
// takes commands that keep its size or shrink it.
const (
	ownKeyReserve    = 16
	serviceFileShare = 4
)

// limitedKV is the optional capability of a KV that reports its limits, as store.File and
// store.Memory do. For a KV without it the share is cut from the store's default limits.
type limitedKV interface {
	Limits() store.Limits
}

// quota is an amount of the store: keys, and bytes as stored.
type quota struct{ keys, bytes int }

func serviceQuota(kv KV) quota {
	lim := store.Limits{MaxKeys: store.DefaultMaxKeys, MaxFileSize: store.DefaultMaxFileSize}
	if l, ok := kv.(limitedKV); ok {
		lim = l.Limits()
	}
	return quota{keys: lim.MaxKeys - ownKeyReserve, bytes: lim.MaxFileSize / serviceFileShare}
}

// storedLen bounds the bytes the settings file takes for one entry: the key and value as JSON
// strings (encoding/json's escaping is never shorter than the store's) plus indentation,
// separator and line break.
func storedLen(key, value string) int {
	const frame = len(`  : ,`) + 1
	k, _ := json.Marshal(key)   // a string always encodes
	v, _ := json.Marshal(value) // a string always encodes
	return len(k) + len(v) + frame
}

// checkQuota refuses, before any write, a config command that would grow the keys outside
// provisiond/ beyond the service's share. It names the first pair that crosses it.
func checkQuota(kv KV, ps []proto.Property) (index int, err error) {
	q := serviceQuota(kv)
	m := kv.All()
	var before quota
	for k, v := range m {
		if !hasReservedPrefix(k) {
			before.keys++
			before.bytes += storedLen(k, v)
		}
	}
	now := before
	for i, p := range ps {
		if old, ok := m[p.Key]; ok {
			now.bytes -= storedLen(p.Key, old)
		} else {
			now.keys++
		}
		now.bytes += storedLen(p.Key, p.Value)
		m[p.Key] = p.Value
		if now.keys > q.keys && now.keys > before.keys || now.bytes > q.bytes && now.bytes > before.bytes {
			return i, fmt.Errorf("daemon: config: %d keys of %d bytes outside %s would exceed the service's share of %d keys, %d bytes",
				now.keys, now.bytes, reservedPrefix, q.keys, q.bytes)
		}
	}
	return 0, nil
}
