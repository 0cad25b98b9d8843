package store

import (
	"fmt"
	"maps"
	"unicode"
	"unicode/utf8"
)

// Default limits, used for every zero field of Limits. The daemon's outbox (a batch of
// responses waiting for upload) is one value, so values are allowed to be large.
const (
	DefaultMaxKeyLen   = 255
	DefaultMaxValueLen = 64 << 10
	DefaultMaxKeys     = 256
	DefaultMaxFileSize = 1 << 20
)

// Limits bound what a store holds, so that a hostile service cannot fill the disk through
// config commands. Zero fields take the Default* values.
type Limits struct {
	MaxKeyLen   int // bytes per key
	MaxValueLen int // bytes per value
	MaxKeys     int // number of keys
	MaxFileSize int // bytes of the encoded file, header included
}

func (l Limits) withDefaults() Limits {
	if l.MaxKeyLen <= 0 {
		l.MaxKeyLen = DefaultMaxKeyLen
	}
	if l.MaxValueLen <= 0 {
		l.MaxValueLen = DefaultMaxValueLen
	}
	if l.MaxKeys <= 0 {
		l.MaxKeys = DefaultMaxKeys
	}
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = DefaultMaxFileSize
	}
	return l
}

// Change is one entry of an Apply: set Key to Value, or delete Key when Delete is true.
type Change struct {
	Key, Value string
	Delete     bool
}

func checkKey(k string) error {
	if k == "" {
		return fmt.Errorf("store: empty key: %w", ErrInvalid)
	}
	if !utf8.ValidString(k) {
		return fmt.Errorf("store: key %q is not valid UTF-8: %w", truncKey(k), ErrInvalid)
	}
	for _, r := range k {
		// Control characters would make `provisiond settings` output ambiguous and are never
		// part of a settings path.
		if unicode.IsControl(r) {
			return fmt.Errorf("store: key %q contains a control character: %w", truncKey(k), ErrInvalid)
		}
	}
	return nil
}

func checkValue(k, v string) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("store: value of %q is not valid UTF-8: %w", truncKey(k), ErrInvalid)
	}
	return nil
}

// apply computes the state after changes, checking every change and the result against lim.
// It returns the new map and its file encoding, or changed=false when the result equals old.
// old is never modified, so a failed write leaves the caller's state as it was.
func apply(old map[string]string, changes []Change, lim Limits) (next map[string]string, data []byte, changed bool, err error) {
	next = maps.Clone(old)
	if next == nil {
		next = map[string]string{}
	}
	for _, c := range changes {
		if err := checkKey(c.Key); err != nil {
			return nil, nil, false, err
		}
		if c.Delete {
			delete(next, c.Key)
			continue
		}
		if len(c.Key) > lim.MaxKeyLen {
			return nil, nil, false, &LimitError{Key: c.Key, What: "key length", Limit: lim.MaxKeyLen, Got: len(c.Key)}
		}
		if len(c.Value) > lim.MaxValueLen {
			return nil, nil, false, &LimitError{Key: c.Key, What: "value length", Limit: lim.MaxValueLen, Got: len(c.Value)}
		}
		if err := checkValue(c.Key, c.Value); err != nil {
			return nil, nil, false, err
		}
		next[c.Key] = c.Value
	}
	if maps.Equal(old, next) {
		return nil, nil, false, nil
	}
	// Whole-store limits only refuse growth: a store already over a lowered limit can still
	// shrink, so deleting keys always works.
	if len(next) > lim.MaxKeys && len(next) > len(old) {
		return nil, nil, false, &LimitError{What: "keys", Limit: lim.MaxKeys, Got: len(next)}
	}
	data = encode(next)
	if len(data) > lim.MaxFileSize && len(data) > len(encode(old)) {
		return nil, nil, false, &LimitError{What: "file size", Limit: lim.MaxFileSize, Got: len(data)}
	}
	return next, data, true, nil
}
