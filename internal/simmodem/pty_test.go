//go:build linux

package simmodem

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/atmodem"
	"github.com/provisiond/provisiond/internal/attest"
	"golang.org/x/sys/unix"
)

// startPTY serves a new modem on a pty for the test's lifetime.
func startPTY(t testing.TB, cfg Config) (*Modem, *PTY) {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := m.ServePTY(context.Background())
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("PTY.Close() = %v", err)
		}
	})
	return m, p
}

// dial opens path with the real serial opener and starts an AT client on it.
func dial(t testing.TB, path string, cfg atmodem.Config) *atmodem.Client {
	t.Helper()
	port, err := atmodem.OpenPort(path, 115200, "none")
	if err != nil {
		t.Fatalf("OpenPort(%s): %v", path, err)
	}
	c := atmodem.New(port, cfg)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// certPEM returns a self-signed certificate PEM padded with an opaque extension to about
// size bytes (with CR LF line breaks when crlf), for realistic %CMNG writes.
func certPEM(t testing.TB, size int) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	make1 := func(pad int) string {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sim root"},
			NotBefore: time.Unix(1700000000, 0), NotAfter: time.Unix(2000000000, 0),
			ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: make([]byte, pad)}},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	lo, hi := 0, size
	for lo < hi { // largest pad whose PEM fits in size
		mid := (lo + hi + 1) / 2
		if len(make1(mid)) <= size {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	// The ECDSA signature's DER length varies by a byte or two between signings.
	for {
		if s := make1(lo); len(s) <= size {
			return s
		}
	}
}

func TestPTYRawMode(t *testing.T) {
	_, p := startPTY(t, Config{})
	f, err := os.OpenFile(p.SlavePath(), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if tio.Lflag&(unix.ECHO|unix.ICANON|unix.ISIG) != 0 || tio.Oflag&unix.OPOST != 0 || tio.Iflag&(unix.ICRNL|unix.IXON) != 0 {
		t.Fatalf("slave not raw: lflag %#x oflag %#x iflag %#x", tio.Lflag, tio.Oflag, tio.Iflag)
	}
	// Bytes pass untranslated: the answer keeps its CR LF exactly.
	if _, err := f.Write([]byte("AT\r")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	var got []byte
	for len(got) < 4 {
		n, err := f.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "OK\r\n" {
		t.Fatalf("raw answer %q, want \"OK\\r\\n\"", got)
	}
}

// TestPTYClientHelpers runs every atmodem helper the daemon uses against the simulator
// through a real pty.
func TestPTYClientHelpers(t *testing.T) {
	m, p := startPTY(t, Config{HideReserved: true, Clock: func() time.Time { return time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC) }})
	c := dial(t, p.SlavePath(), atmodem.Config{})
	ctx := ctxT(t)

	if mode, err := c.FunctionalMode(ctx); err != nil || mode != 0 {
		t.Fatalf("FunctionalMode = %d, %v", mode, err)
	}
	if err := c.SetFunctionalMode(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if mode, err := c.FunctionalMode(ctx); err != nil || mode != 4 || m.FunctionalMode() != 4 {
		t.Fatalf("after SetFunctionalMode(4): %d (modem %d), %v", mode, m.FunctionalMode(), err)
	}
	if err := c.SetCMEE(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if n, err := c.CMEE(ctx); err != nil || n != 1 || m.CMEE() != 1 {
		t.Fatalf("CMEE = %d, %v", n, err)
	}
	if v, err := c.ShortSWVersion(ctx); err != nil || v != "nrf91x1_2.0.2" {
		t.Fatalf("ShortSWVersion = %q, %v", v, err)
	}

	// Clock: none until set, then what was set.
	if _, valid, err := c.Clock(ctx); err != nil || valid {
		t.Fatalf("Clock before set: valid %v, %v", valid, err)
	}
	set := time.Date(2026, 11, 23, 9, 30, 15, 0, time.UTC)
	if err := c.SetClock(ctx, set); err != nil {
		t.Fatal(err)
	}
	if got, valid, err := c.Clock(ctx); err != nil || !valid || !got.Equal(set) {
		t.Fatalf("Clock after set = %v, %v, %v; want %v", got, valid, err, set)
	}

	// JWT: verifies with the identity public key, iss names this device.
	tok, err := c.JWT(ctx, 0, 300*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	info, err := attest.VerifyJWT(tok, m.IdentityPublicKey(), set.Add(time.Minute))
	if err != nil {
		t.Fatalf("JWT does not verify with the identity key: %v", err)
	}
	if info.DeviceUUID != m.UUID() || info.Claims.ExpiresAt == nil || !info.Claims.ExpiresAt.Equal(set.Add(300*time.Second)) {
		t.Fatalf("JWT claims %+v", info.Claims)
	}

	// Attestation token and device UUID.
	att, err := c.AttestationToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.VerifyToken(att, m.IdentityPublicKey()); err != nil {
		t.Fatalf("attestation COSE does not verify: %v", err)
	}
	if u, err := c.DeviceUUID(ctx); err != nil || u != m.UUID() {
		t.Fatalf("DeviceUUID = %q, %v; want %s", u, err, m.UUID())
	}

	// KEYGEN through Command: the raw answer is what the service receives.
	resp, err := c.Command(ctx, "AT%KEYGEN=16842753,2,0")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp.Raw, `%KEYGEN: "`) || !strings.HasSuffix(resp.Raw, "\"\r\nOK\r\n") {
		t.Fatalf("KEYGEN raw %q", resp.Raw)
	}
	kg, err := attest.VerifyKeygen(resp.Raw, m.IdentityPublicKey())
	if err != nil {
		t.Fatalf("VerifyKeygen: %v", err)
	}
	opensslVerifyCSR(t, kg.DER, m.UUID())

	// Credentials: write a ~4 KB certificate, list it with its SHA-256, delete it.
	pemText := certPEM(t, 4000)
	if err := c.WriteCredential(ctx, 42, atmodem.CredRootCA, pemText); err != nil {
		t.Fatalf("WriteCredential (%d bytes): %v", len(pemText), err)
	}
	if got, _ := m.Credential(42, 0); got.Content != pemText {
		t.Fatal("stored PEM differs from the written one")
	}
	list, err := c.Credentials(ctx, -1)
	if err != nil {
		t.Fatal(err)
	}
	want := []atmodem.Credential{
		{SecTag: 42, Type: 0, SHA256: fmt.Sprintf("%X", sha256.Sum256([]byte(pemText)))},
		{SecTag: 16842753, Type: 2, SHA256: m.Credentials()[CredKey{16842753, 2}].SHA256},
	}
	if fmt.Sprint(list) != fmt.Sprint(want) {
		t.Fatalf("Credentials = %v, want %v", list, want)
	}
	if ok, err := c.CredentialExists(ctx, 42, 0); err != nil || !ok {
		t.Fatalf("CredentialExists(42,0) = %v, %v", ok, err)
	}
	if ok, err := c.CredentialExists(ctx, 42, 1); err != nil || ok {
		t.Fatalf("CredentialExists(42,1) = %v, %v", ok, err)
	}

	// Online: writes and deletes are refused with 518.
	if err := c.SetFunctionalMode(ctx, 1); err != nil {
		t.Fatal(err)
	}
	var cme *atmodem.CMEError
	if err := c.WriteCredential(ctx, 43, 0, pemText); !errors.As(err, &cme) || cme.Code != 518 {
		t.Fatalf("WriteCredential online = %v, want +CME ERROR: 518", err)
	}
	if err := c.DeleteCredential(ctx, 42, 0); !errors.As(err, &cme) || cme.Code != 518 {
		t.Fatalf("DeleteCredential online = %v, want +CME ERROR: 518", err)
	}
	if err := c.SetFunctionalMode(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteCredential(ctx, 42, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteCredential(ctx, 42, 0); !errors.As(err, &cme) || cme.Code != 513 {
		t.Fatalf("DeleteCredential missing = %v, want +CME ERROR: 513", err)
	}
	// Plain ERROR for an unknown command, with the raw text kept.
	if resp, err := c.Command(ctx, "AT+NOPE"); !errors.Is(err, atmodem.ErrError) || resp.Raw != "ERROR\r\n" {
		t.Fatalf("unknown command: %q, %v", resp.Raw, err)
	}
}

// opensslVerifyCSR shows the CSR is a real PKCS#10 request: `openssl req -verify` accepts it.
func opensslVerifyCSR(t *testing.T, der []byte, wantCN string) {
	t.Helper()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Log("openssl not installed; CSR not checked with openssl")
		return
	}
	path := filepath.Join(t.TempDir(), "csr.der")
	if err := os.WriteFile(path, der, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(openssl, "req", "-verify", "-inform", "DER", "-in", path, "-noout", "-subject").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl req -verify: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), wantCN) {
		t.Fatalf("openssl subject %q lacks CN %s", out, wantCN)
	}
}

// TestPTYNoise runs commands while the modem writes five bytes at a time, storms URCs (also
// inside answers), wraps answers in garbage lines and echoes: answers stay exact and the
// URCs reach a subscriber.
func TestPTYNoise(t *testing.T) {
	m, p := startPTY(t, Config{Echo: true, HideReserved: true})
	c := dial(t, p.SlavePath(), atmodem.Config{})
	ctx := ctxT(t)
	urcs, cancel := c.Subscribe("+CSCON:", "%CESQ:", "%XTIME:", "%MDMEV:", "+CEREG:")
	defer cancel()
	m.SplitWrites(5)
	m.SetURCStorm(200)
	m.SetGarbage(2)
	m.SetCredential(7, 0, testPEM)
	for i := range 3 {
		resp, err := c.Command(ctx, "AT%CMNG=1")
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		want := fmt.Sprintf("%%CMNG: 7,0,\"%X\"\r\nOK\r\n", sha256.Sum256([]byte(testPEM)))
		if resp.Raw != want {
			t.Fatalf("round %d: raw %q, want %q", i, resp.Raw, want)
		}
		if v, err := c.ShortSWVersion(ctx); err != nil || v != "nrf91x1_2.0.2" {
			t.Fatalf("round %d: ShortSWVersion = %q, %v", i, v, err)
		}
	}
	select {
	case u := <-urcs:
		if !strings.ContainsAny(u[:1], "+%") {
			t.Fatalf("URC %q", u)
		}
	case <-ctx.Done():
		t.Fatal("no URC delivered during the storm")
	}
	m.ClearFaults()
	if st := c.Stats(); st.GarbageLines == 0 {
		t.Errorf("client saw no garbage lines: %+v", st)
	}
}

// TestPTYRegistrationURC: going online produces +CEREG for subscribers.
func TestPTYRegistrationURC(t *testing.T) {
	_, p := startPTY(t, Config{RegStatus: 5})
	c := dial(t, p.SlavePath(), atmodem.Config{})
	ctx := ctxT(t)
	urcs, cancel := c.Subscribe("+CEREG:")
	defer cancel()
	if err := c.SetFunctionalMode(ctx, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case u := <-urcs:
		if u != "+CEREG: 5" {
			t.Fatalf("URC %q, want +CEREG: 5", u)
		}
	case <-ctx.Done():
		t.Fatal("no +CEREG URC")
	}
	if _, valid, err := c.Clock(ctx); err != nil || !valid {
		t.Fatalf("no network time after registration: %v, %v", valid, err)
	}
}

// TestPTYUnplugMidResponse: the line is cut in the middle of the KEYGEN answer; the command
// fails with ErrPortLost at once, later calls too, and after Replug a new client finds the
// modem with its state.
func TestPTYUnplugMidResponse(t *testing.T) {
	link := filepath.Join(t.TempDir(), "modem")
	m, p := startPTY(t, Config{Link: link, HideReserved: true})
	c := dial(t, link, atmodem.Config{})
	ctx := ctxT(t)
	if err := c.WriteCredential(ctx, 5, 0, testPEM); err != nil {
		t.Fatal(err)
	}
	first := p.SlavePath()
	m.UnplugDuring("AT%KEYGEN")
	if _, err := c.Command(ctx, "AT%KEYGEN=9,2,0"); !errors.Is(err, atmodem.ErrPortLost) {
		t.Fatalf("Command during unplug = %v, want ErrPortLost", err)
	}
	<-c.Done()
	if _, err := c.FunctionalMode(ctx); !errors.Is(err, atmodem.ErrPortLost) {
		t.Fatalf("later call = %v, want ErrPortLost", err)
	}
	if p.Plugged() {
		t.Fatal("PTY still plugged after the fault")
	}
	<-p.Done()
	if err := p.Err(); !errors.Is(err, ErrUnplugged) {
		t.Fatalf("PTY.Err() = %v, want ErrUnplugged", err)
	}
	if err := p.Replug(); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(link); err != nil || target != p.SlavePath() {
		t.Fatalf("link -> %q (%v), want %s", target, err, p.SlavePath())
	}
	t.Logf("replugged: %s -> %s", first, p.SlavePath())
	c2 := dial(t, link, atmodem.Config{})
	if ok, err := c2.CredentialExists(ctx, 5, 0); err != nil || !ok {
		t.Fatalf("credential lost across replug: %v, %v", ok, err)
	}
	if m.Stats().Unplugged != 1 {
		t.Errorf("Stats().Unplugged = %d, want 1", m.Stats().Unplugged)
	}
}

// TestPTYUnplugIdle: pulling the cable while nothing runs closes the client's Done.
func TestPTYUnplugIdle(t *testing.T) {
	_, p := startPTY(t, Config{})
	c := dial(t, p.SlavePath(), atmodem.Config{})
	ctx := ctxT(t)
	if _, err := c.Command(ctx, "AT"); err != nil {
		t.Fatal(err)
	}
	if err := p.Unplug(); err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	if err := c.Err(); !errors.Is(err, atmodem.ErrPortLost) {
		t.Fatalf("client Err() = %v, want ErrPortLost", err)
	}
	if err := p.Replug(); err != nil {
		t.Fatal(err)
	}
	c2 := dial(t, p.SlavePath(), atmodem.Config{})
	if _, err := c2.Command(ctx, "AT"); err != nil {
		t.Fatalf("after Replug: %v", err)
	}
}

// TestPTYStallThenLateAnswer: a stalled modem makes a command time out; after Resume the
// late answer is not taken for the next command's.
func TestPTYStallThenLateAnswer(t *testing.T) {
	m, p := startPTY(t, Config{})
	c := dial(t, p.SlavePath(), atmodem.Config{})
	ctx := ctxT(t)
	m.Stall()
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err := c.Command(short, "AT+CGMR")
	cancel()
	if !errors.Is(err, atmodem.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stalled command = %v, want a timeout", err)
	}
	m.Resume()
	for range 3 {
		v, err := c.ShortSWVersion(ctx)
		if err != nil || v != "nrf91x1_2.0.2" {
			t.Fatalf("after Resume: ShortSWVersion = %q, %v", v, err)
		}
	}
}

// TestPTYCMEErrorFault: an injected CME error comes back typed with its raw text.
func TestPTYCMEErrorFault(t *testing.T) {
	m, p := startPTY(t, Config{})
	c := dial(t, p.SlavePath(), atmodem.Config{})
	ctx := ctxT(t)
	if err := c.SetCMEE(ctx, 1); err != nil {
		t.Fatal(err)
	}
	m.CMEErrorFor("AT%KEYGEN", 523)
	resp, err := c.Command(ctx, "AT%KEYGEN=3,2,0")
	var cme *atmodem.CMEError
	if !errors.As(err, &cme) || cme.Code != 523 || resp.Raw != "+CME ERROR: 523\r\n" {
		t.Fatalf("Command = %q, %v; want +CME ERROR: 523", resp.Raw, err)
	}
}

// TestPTYCloseOnCancel: cancelling the serve context closes the pty and removes the link.
func TestPTYCloseOnCancel(t *testing.T) {
	m, err := New(Config{Link: filepath.Join(t.TempDir(), "ttyNRF")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p, err := m.ServePTY(ctx)
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	c := dial(t, p.Path(), atmodem.Config{})
	if _, err := c.Command(ctxT(t), "AT"); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-c.Done()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(p.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("link still there: %v", err)
	}
	if err := p.Replug(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Replug after Close = %v, want ErrClosed", err)
	}
}

// TestPTYModemUnplug: Modem.Unplug cuts the pty like PTY.Unplug, and Replug still works.
func TestPTYModemUnplug(t *testing.T) {
	m, p := startPTY(t, Config{})
	c := dial(t, p.SlavePath(), atmodem.Config{})
	if _, err := c.Command(ctxT(t), "AT"); err != nil {
		t.Fatal(err)
	}
	m.Unplug()
	<-c.Done()
	<-p.Done()
	if !errors.Is(c.Err(), atmodem.ErrPortLost) || !errors.Is(p.Err(), ErrUnplugged) {
		t.Fatalf("client %v, pty %v", c.Err(), p.Err())
	}
	if err := p.Replug(); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, p.SlavePath(), atmodem.Config{}).Command(ctxT(t), "AT"); err != nil {
		t.Fatal(err)
	}
}

// startChild starts a process that outlives the calls under test and inherits every fd
// of ours that is not close-on-exec, as a provisiond started by a test would.
func startChild(t *testing.T) *exec.Cmd {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skipf("no sleep binary: %v", err)
	}
	cmd := exec.Command(sleep, "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// inheritedPTYMasters lists the fds of process pid that are pty masters.
func inheritedPTYMasters(t *testing.T, pid int) []string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Skipf("no procfs: %v", err)
	}
	var masters []string
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if target == "/dev/ptmx" || target == "/dev/pts/ptmx" {
			masters = append(masters, e.Name()+" -> "+target)
		}
	}
	return masters
}

// TestPTYMasterNotInherited: a child process started while the modem is plugged holds no
// copy of the pty master, so Unplug still hangs up the slave: a reader there gets EIO (or
// EOF) instead of blocking as if the cable were still in.
func TestPTYMasterNotInherited(t *testing.T) {
	_, p := startPTY(t, Config{})
	slave, err := os.OpenFile(p.SlavePath(), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	child := startChild(t)
	if got := inheritedPTYMasters(t, child.Process.Pid); len(got) > 0 {
		t.Errorf("child inherited pty master fds: %v", got)
	}
	if err := p.Unplug(); err != nil {
		t.Fatal(err)
	}
	// The deadline only keeps a regression from hanging the run; a correct unplug answers
	// at once.
	if dl, ok := ctxT(t).Deadline(); ok {
		if err := slave.SetReadDeadline(dl); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 64)
	for {
		n, err := slave.Read(buf)
		if err == nil {
			continue // data written before the cut
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("slave read still blocked after Unplug: a copy of the master is open elsewhere")
		}
		if !errors.Is(err, unix.EIO) && !errors.Is(err, io.EOF) {
			t.Fatalf("slave read after Unplug = %d, %v; want EIO or EOF", n, err)
		}
		break
	}
}

// TestPTYLinkFollowsPlug: the Link exists only while the modem is plugged in, like a udev
// by-id name, whichever way the line is cut; Replug makes it again for the new pty. A
// link left at the dead /dev/pts/N would lead a client that reopens it to whatever pty
// the kernel gives that number next.
func TestPTYLinkFollowsPlug(t *testing.T) {
	tests := []struct {
		name string
		cut  func(t *testing.T, m *Modem, p *PTY, c *atmodem.Client)
	}{
		{"PTY.Unplug", func(t *testing.T, _ *Modem, p *PTY, _ *atmodem.Client) {
			if err := p.Unplug(); err != nil {
				t.Fatalf("Unplug() = %v", err)
			}
		}},
		{"Modem.Unplug", func(_ *testing.T, m *Modem, _ *PTY, _ *atmodem.Client) {
			m.Unplug()
		}},
		{"UnplugDuring", func(t *testing.T, m *Modem, _ *PTY, c *atmodem.Client) {
			m.UnplugDuring("AT%KEYGEN")
			if _, err := c.Command(ctxT(t), "AT%KEYGEN=9,2,0"); !errors.Is(err, atmodem.ErrPortLost) {
				t.Fatalf("Command during unplug = %v, want ErrPortLost", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			link := filepath.Join(dir, "ttyNRF")
			m, p := startPTY(t, Config{Link: link})
			if target, err := os.Readlink(link); err != nil || target != p.SlavePath() {
				t.Fatalf("plugged: link -> %q (%v), want %s", target, err, p.SlavePath())
			}
			c := dial(t, link, atmodem.Config{})
			if _, err := c.Command(ctxT(t), "AT"); err != nil {
				t.Fatal(err)
			}

			tt.cut(t, m, p, c)
			<-p.Done()
			if _, err := os.Lstat(link); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("unplugged: Lstat(link) = %v, want not exist", err)
			}
			<-c.Done()
			_ = c.Close() // lets go of the slave, so its number is free for reuse
			// Another modem plugged now may get the old number; the old name must not
			// lead to it.
			_, other := startPTY(t, Config{})
			if _, err := os.Stat(link); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("with %s plugged: Stat(link) = %v, want not exist", other.SlavePath(), err)
			}

			if err := p.Replug(); err != nil {
				t.Fatalf("Replug() = %v", err)
			}
			if target, err := os.Readlink(link); err != nil || target != p.SlavePath() {
				t.Fatalf("replugged: link -> %q (%v), want %s", target, err, p.SlavePath())
			}
			ents, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(ents) != 1 {
				t.Errorf("link dir holds %d entries, want only the link (no temporaries)", len(ents))
			}
			if _, err := dial(t, link, atmodem.Config{}).Command(ctxT(t), "AT"); err != nil {
				t.Fatalf("AT over the replugged link: %v", err)
			}
		})
	}
}
