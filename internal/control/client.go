package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"syscall"

	"github.com/provisiond/provisiond/internal/status"
)

// Client talks to a running daemon over its control socket. It is safe for concurrent use;
// each call dials the socket (a CLI makes one call, so there is nothing to keep alive).
type Client struct {
	path string
	hc   *http.Client
}

// Dial returns a client for the daemon listening on socketPath. It does not connect: a daemon
// that is not running shows up as a *DialError from the first call.
func Dial(socketPath string) *Client {
	var d net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socketPath)
		},
		DisableKeepAlives: true,
	}
	return &Client{path: socketPath, hc: &http.Client{Transport: tr}}
}

// Status returns the daemon's status snapshot.
func (c *Client) Status(ctx context.Context) (status.Daemon, error) {
	var st status.Daemon
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// StatusJSON returns the daemon's status snapshot as the JSON it sent, fields this client
// does not know included.
func (c *Client) StatusJSON(ctx context.Context) (json.RawMessage, error) {
	var raw json.RawMessage
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &raw)
	return raw, err
}

// Now asks the daemon to provision now.
func (c *Client) Now(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/now", nil, &nowBody{})
}

// Token returns the modem's attestation token.
func (c *Client) Token(ctx context.Context) (string, error) {
	var b tokenBody
	err := c.do(ctx, http.MethodGet, "/v1/token", nil, &b)
	return b.Token, err
}

// UUID returns the modem's device UUID.
func (c *Client) UUID(ctx context.Context) (string, error) {
	var b uuidBody
	err := c.do(ctx, http.MethodGet, "/v1/uuid", nil, &b)
	return b.UUID, err
}

// IMEI returns the modem's IMEI.
func (c *Client) IMEI(ctx context.Context) (string, error) {
	var b imeiBody
	err := c.do(ctx, http.MethodGet, "/v1/imei", nil, &b)
	return b.IMEI, err
}

// Interval returns the provisioning interval in seconds.
func (c *Client) Interval(ctx context.Context) (int, error) {
	var b intervalBody
	if err := c.do(ctx, http.MethodGet, "/v1/interval", nil, &b); err != nil {
		return 0, err
	}
	if b.Seconds == nil {
		return 0, fmt.Errorf("control: GET /v1/interval: answer without seconds")
	}
	return *b.Seconds, nil
}

// SetInterval sets and persists the provisioning interval in seconds.
func (c *Client) SetInterval(ctx context.Context, seconds int) error {
	return c.do(ctx, http.MethodPut, "/v1/interval", intervalBody{Seconds: &seconds}, &intervalBody{})
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	op := method + " " + path
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("control: %s: %w", op, err)
		}
		body = bytes.NewReader(b)
	}
	// The host part is ignored by the Unix dialer; "provisiond" reads well in errors.
	req, err := http.NewRequestWithContext(ctx, method, "http://provisiond"+path, body)
	if err != nil {
		return fmt.Errorf("control: %s: %w", op, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.dialError(op, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("control: %s: read answer: %w", op, err)
	}
	if resp.StatusCode/100 != 2 {
		var eb errorBody
		if json.Unmarshal(data, &eb) != nil || eb.Error == "" {
			eb.Error = http.StatusText(resp.StatusCode)
		}
		return &APIError{Op: op, Status: resp.StatusCode, Message: eb.Error}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("control: %s: decode answer: %w", op, err)
	}
	return nil
}

// dialError turns "no socket" and "nobody listening" into the one message a user needs.
func (c *Client) dialError(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("control: %s: %w", op, err)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return &DialError{Path: c.path, Err: ErrNotRunning}
		}
		return &DialError{Path: c.path, Err: opErr.Err}
	}
	return fmt.Errorf("control: %s: %w", op, err)
}
