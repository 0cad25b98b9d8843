package store

import (
	"fmt"
	"maps"
	"sync"
)

// Memory is an in-memory store with the same semantics and limits as File, for tests and for
// running without persistence. It is safe for concurrent use.
type Memory struct {
	lim Limits

	mu sync.RWMutex
	m  map[string]string
}

// NewMemory returns an empty in-memory store.
func NewMemory(lim Limits) *Memory {
	return &Memory{lim: lim.withDefaults(), m: map[string]string{}}
}

// Limits returns the limits the store enforces, defaults filled in.
func (s *Memory) Limits() Limits { return s.lim }

// Get returns the value of key, or an error wrapping ErrNotFound.
func (s *Memory) Get(key string) (string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.m[key]
	if !ok {
		return "", fmt.Errorf("store: get %q: %w", truncKey(key), ErrNotFound)
	}
	return v, nil
}

// All returns a copy of every key and value.
func (s *Memory) All() map[string]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return maps.Clone(s.m)
}

// Set stores value under key.
func (s *Memory) Set(key, value string) error {
	return s.Apply([]Change{{Key: key, Value: value}})
}

// Delete removes key; deleting a missing key is not an error.
func (s *Memory) Delete(key string) error {
	return s.Apply([]Change{{Key: key, Delete: true}})
}

// Apply makes all changes, in order, or none of them.
func (s *Memory) Apply(changes []Change) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next, _, changed, err := apply(s.m, changes, s.lim)
	if err != nil || !changed {
		return err
	}
	s.m = next
	return nil
}
