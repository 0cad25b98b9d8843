// Package notifytest stands in for the service manager's end of the notification socket
// (sd_notify), for tests of code that tells systemd it is ready, reloading or alive.
package notifytest

import (
	"net"
	"path/filepath"
	"sync"
	"testing"
)

// Listen listens on a datagram socket of its own, points NOTIFY_SOCKET at it for the rest of
// the test, as systemd does for a Type=notify service, and hands out every datagram received.
// The channel is closed once the test has ended and the socket is gone.
func Listen(t testing.TB) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	// Buffered so that a sender is never held up by a test that reads late.
	msgs := make(chan string, 64)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(msgs)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	})
	t.Cleanup(func() { conn.Close(); wg.Wait() })
	return msgs
}
