package notifytest

import (
	"net"
	"os"
	"testing"
	"time"
)

func TestListenReceivesDatagrams(t *testing.T) {
	msgs := Listen(t)
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		t.Fatal("NOTIFY_SOCKET is not set")
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, want := range []string{"READY=1", "STATUS=idle\nWATCHDOG=1"} {
		if _, err := conn.Write([]byte(want)); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-msgs:
			if got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%q not received", want)
		}
	}
}
