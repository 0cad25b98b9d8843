package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"

	"golang.org/x/sys/unix"
)

// The slot file ("<settings>.slots") is where a File writes: two slots of the same size, each
// holding a whole store state in the settings file's own format behind a slot header:
//
//	provisiond-slot 1 <sequence> <length> <SHA-256 of "<sequence> <length>\n" and the content>\n
//	<length bytes: the settings file bytes of that state>
//
// State number s lives in slot s mod 2, so a write overwrites the older slot in place and
// syncs it with fdatasync; the newest valid slot is the store. A write that is cut short (power
// loss, a kernel crash) can only damage the slot it was writing, whose checksum then fails, and
// the other slot still holds the state before it, the last one acknowledged. Compared with
// replacing the settings file (a new file, fsync, rename, fsync of the folder) this costs one
// write and one data sync of a block that is already allocated: no new inode, no folder update
// (BENCHMARKS.md §12).
//
// The file is made, and remade larger when a state outgrows its slots, by the atomic
// replacement the settings file uses. The settings file itself is rewritten from the newest
// slot by File.Checkpoint, which the daemon calls when an attempt ends, so that it shows the
// current state whenever no attempt runs. Readers take the newest valid slot when the slot
// file exists and the settings file otherwise: a state is in the slot file before it can be
// in the settings file, so the slot file is never behind.
const (
	slotMagic   = "provisiond-slot"
	slotVersion = 1
	// slotBlock is the unit slot sizes are rounded to: a file system block on the file
	// systems a gateway uses, so that no two slots share a block.
	slotBlock = 4096
	// maxSlotHeaderLen bounds the header line: magic, version, two numbers, 64 hex digits.
	maxSlotHeaderLen = len(slotMagic) + 1 + 3 + 1 + 20 + 1 + 20 + 1 + 2*sha256.Size + 1
)

// slotPath is the slot file of the settings file at path.
func slotPath(path string) string { return path + ".slots" }

// slots is what a File knows of its slot file: the size of one slot (0 while there is no
// slot file) and the sequence number of the newest state in it.
type slots struct {
	size int
	seq  uint64
}

// slotSum is the checksum of a slot: it covers the sequence number and length as well as the
// content, so a header left half-updated cannot vouch for another write's content.
func slotSum(seq uint64, content []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%d %d\n", seq, len(content))
	h.Write(content)
	return hex.EncodeToString(h.Sum(nil))
}

// encodeSlot returns the bytes of slot state seq holding content.
func encodeSlot(seq uint64, content []byte) []byte {
	out := make([]byte, 0, maxSlotHeaderLen+len(content))
	out = fmt.Appendf(out, "%s %d %d %d %s\n", slotMagic, slotVersion, seq, len(content), slotSum(seq, content))
	return append(out, content...)
}

// slotSizeFor is the slot size for a state of n encoded bytes: half as much again, in whole
// blocks, so that a growing store does not remake the file at every write.
func slotSizeFor(n int) int {
	need := maxSlotHeaderLen + n + n/2
	return (need + slotBlock - 1) / slotBlock * slotBlock
}

// decodeSlot verifies one slot. ok is false for a slot that holds no valid state: never
// written (zeros), or damaged.
func decodeSlot(b []byte) (content []byte, seq uint64, ok bool) {
	nl := bytes.IndexByte(b[:min(len(b), maxSlotHeaderLen)], '\n')
	if nl < 0 {
		return nil, 0, false
	}
	f := bytes.Split(b[:nl], []byte(" "))
	if len(f) != 5 || string(f[0]) != slotMagic || string(f[1]) != strconv.Itoa(slotVersion) {
		return nil, 0, false
	}
	seq, err := strconv.ParseUint(string(f[2]), 10, 64)
	if err != nil || string(f[2]) != strconv.FormatUint(seq, 10) {
		return nil, 0, false
	}
	n, err := strconv.Atoi(string(f[3]))
	if err != nil || n < 0 || string(f[3]) != strconv.Itoa(n) || n > len(b)-nl-1 {
		return nil, 0, false
	}
	content = b[nl+1 : nl+1+n]
	if slotSum(seq, content) != string(f[4]) {
		return nil, 0, false
	}
	return content, seq, true
}

// errNoSlots means there is no slot file, or an empty one: the settings file is the store.
var errNoSlots = errors.New("no slot file")

// readSlots reads the slot file of path and returns the newest valid state's content (the
// settings file bytes of that state). A file whose two slots both fail their checks is a
// *CorruptError naming the slot file.
func readSlots(path string, lim Limits) ([]byte, slots, error) {
	sp := slotPath(path)
	// At most two slots of a state at the size limit.
	data, err := readCapped(sp, 2*slotSizeFor(lim.MaxFileSize))
	if err != nil {
		return nil, slots{}, err
	}
	if len(data) == 0 {
		return nil, slots{}, errNoSlots
	}
	if len(data)%2 != 0 {
		return nil, slots{}, &CorruptError{Path: sp, Reason: fmt.Sprintf("%d bytes, not two slots of one size", len(data))}
	}
	size := len(data) / 2
	var best []byte
	var st slots
	for i := range 2 {
		content, seq, ok := decodeSlot(data[i*size : (i+1)*size])
		if !ok || (best != nil && seq <= st.seq) {
			continue
		}
		best, st = content, slots{size: size, seq: seq}
	}
	if best == nil {
		return nil, slots{}, &CorruptError{Path: sp, Reason: "neither slot holds a valid state"}
	}
	return best, st, nil
}

// writeSlot writes data as state st.seq+1 into its slot and syncs it. The slot file is opened
// for each write, so the daemon holds no descriptor for writing between writes (a remount
// read-only of the state folder works while it idles). It uses the system calls directly:
// os.OpenFile would also try to register a regular file with the network poller, five more
// system calls per write for nothing.
func (f *File) writeSlot(st slots, data []byte) error {
	sp := slotPath(f.path)
	seq := st.seq + 1
	b := encodeSlot(seq, data)
	if err := f.step("slot-open"); err != nil {
		return fmt.Errorf("store: open %s: %w", sp, err)
	}
	fd, err := unix.Open(sp, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("store: %w", &fs.PathError{Op: "open", Path: sp, Err: err})
	}
	defer unix.Close(fd)
	// The slot file holds what the settings file holds: an operator's chmod does not widen it
	// for longer than until the next write, as the replacement of the settings file ensures.
	if err := unix.Fchmod(fd, 0o600); err != nil {
		return fmt.Errorf("store: %w", &fs.PathError{Op: "chmod", Path: sp, Err: err})
	}
	if err := f.step("slot-write"); err != nil {
		return fmt.Errorf("store: write %s: %w", sp, err)
	}
	off := int64(seq%2) * int64(st.size)
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return fmt.Errorf("store: %w", &fs.PathError{Op: "write", Path: sp, Err: err})
		}
		if n == 0 {
			return fmt.Errorf("store: write %s: %w", sp, io.ErrShortWrite)
		}
		b, off = b[n:], off+int64(n)
	}
	if err := f.step("slot-sync"); err != nil {
		return fmt.Errorf("store: sync %s: %w", sp, err)
	}
	for {
		err := unix.Fdatasync(fd)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("store: %w", &fs.PathError{Op: "fdatasync", Path: sp, Err: err})
		}
		return nil
	}
}

// createSlots makes a new slot file, large enough for data with room to grow, holding data as
// state st.seq+1, and puts it in place atomically. The old slot file, if any, stays whole
// until the rename.
func (f *File) createSlots(st slots, data []byte) (slots, error) {
	next := slots{size: slotSizeFor(len(data)), seq: st.seq + 1}
	buf := make([]byte, 2*next.size)
	copy(buf[int(next.seq%2)*next.size:], encodeSlot(next.seq, data))
	if err := f.replace(slotPath(f.path), buf); err != nil {
		return st, err
	}
	return next, nil
}
