package store

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/testexec"
)

const crashEnv = "PROVISIOND_STORE_CRASH_WRITER"

// crashPayload is the value written with counter n: large enough that a write takes a while,
// and derived from n so a torn mix of two writes would show.
func crashPayload(n int) string {
	return strings.Repeat(strconv.Itoa(n%10), 48<<10)
}

// TestHelperWriter is the child of TestCrashDuringWrite: it writes to the store in a loop
// and prints each counter value once Apply has returned, until it is killed.
func TestHelperWriter(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("only runs as the child of TestCrashDuringWrite")
	}
	f, err := Open(path, Limits{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	n := 0
	if v, err := f.Get("n"); err == nil {
		n, _ = strconv.Atoi(v)
	}
	for {
		n++
		err := f.Apply([]Change{{Key: "n", Value: strconv.Itoa(n)}, {Key: "payload", Value: crashPayload(n)}})
		if err != nil {
			fmt.Fprintln(os.Stderr, "child write:", err)
			os.Exit(4)
		}
		// A direct write to the fd, unbuffered: once the parent reads n, Apply had returned.
		fmt.Fprintf(os.Stdout, "%d\n", n)
		// Kills land in checkpoints too; they must not matter to what Load finds.
		if n%3 == 0 {
			if err := f.Checkpoint(); err != nil {
				fmt.Fprintln(os.Stderr, "child checkpoint:", err)
				os.Exit(5)
			}
		}
	}
}

// TestCrashDuringWrite SIGKILLs a writing child at random moments and checks that the file is
// always complete: the last acknowledged write or the one after it, never an error. There are
// no timing assertions; the random delay only spreads the kills over the write's phases.
func TestCrashDuringWrite(t *testing.T) {
	iterations := 200
	if testing.Short() {
		iterations = 30
	}
	path := filepath.Join(t.TempDir(), "settings")
	acked := 0    // highest n known durable
	midWrite := 0 // kills that left a temp file, i.e. landed inside a checkpoint or a new slot file
	for i := range iterations {
		cmd := testexec.Command(context.Background(), os.Args[0], "-test.run=^TestHelperWriter$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+path)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan int, 1024)
		done := make(chan struct{})
		go func() {
			defer close(done)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if n, err := strconv.Atoi(sc.Text()); err == nil {
					lines <- n
				}
			}
		}()
		// Wait for the first acknowledged write so the child is in its loop, then kill it a
		// little later.
		select {
		case n := <-lines:
			acked = max(acked, n)
		case <-done:
			t.Fatalf("iteration %d: child ended before writing: %s", i, stderr.String())
		}
		time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-done
		_ = cmd.Wait()
		close(lines)
		for n := range lines {
			acked = max(acked, n)
		}

		entries, _ := os.ReadDir(filepath.Dir(path))
		if len(entries) > 2 {
			midWrite++
		}
		m, err := Load(path, Limits{})
		if err != nil {
			t.Fatalf("iteration %d: after SIGKILL: %v (child stderr: %s)", i, err, stderr.String())
		}
		n, err := strconv.Atoi(m["n"])
		if err != nil {
			t.Fatalf("iteration %d: n = %q", i, m["n"])
		}
		if n != acked && n != acked+1 {
			t.Fatalf("iteration %d: file has write %d, last acknowledged %d: want it or the next", i, n, acked)
		}
		if m["payload"] != crashPayload(n) {
			t.Fatalf("iteration %d: payload does not belong to write %d", i, n)
		}
		acked = n
	}
	t.Logf("%d kills, %d of them left a temp file (killed inside a write), last write %d", iterations, midWrite, acked)
}
