// Package ownerapi is a client of the owner side of the nRF Cloud Provisioning Service REST
// API, limited to claiming devices (docs/simulators.md §5 shows the routes). The API key
// authenticates every request and never appears in an error this package returns.
package ownerapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// MaxBulkRows is the most rows one bulk claim may carry (as Nordic's claim_devices sends them).
const MaxBulkRows = 1000

const (
	requestTimeout = 60 * time.Second
	maxAnswer      = 4 << 20
	redacted       = "[api key]"
)

// Client calls the owner API at one base URL with one API key.
type Client struct {
	base      *url.URL
	key       string
	userAgent string
	hc        *http.Client
}

// New returns a client for the API at baseURL (without /v1). roots verifies the service; nil
// means the system roots.
func New(baseURL, apiKey, userAgent string, roots *x509.CertPool) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("ownerapi: base URL %q: want https://host[/path]", baseURL)
	}
	if strings.TrimSpace(apiKey) == "" {
		return nil, errors.New("ownerapi: empty API key")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return &Client{base: u, key: apiKey, userAgent: userAgent,
		hc: &http.Client{Transport: tr, Timeout: requestTimeout}}, nil
}

// APIError is an answer of the service other than the one asked for.
type APIError struct {
	Op      string // "POST /v1/claimed-devices"
	Status  int
	Message string // the service's own message, API key removed
}

func (e *APIError) Error() string {
	return fmt.Sprintf("owner API: %s: %d %s: %s", e.Op, e.Status, http.StatusText(e.Status), e.Message)
}

// ClaimRow is one device of a bulk claim.
type ClaimRow struct {
	Token string
	Tags  []string
}

// BulkResult is the service's answer to a bulk claim.
type BulkResult struct {
	ClaimedIDs []string      `json:"claimedIds"`
	Failed     []BulkFailure `json:"failed"`
}

// BulkFailure is a row the service did not claim; Row counts from 1 in the request.
type BulkFailure struct {
	Row    int    `json:"row"`
	Reason string `json:"reason"`
}

// BulkCSV is the body of a bulk claim: each row `"<token>"` or `"<token>","<tag,tag>"`,
// every field quoted, "\n" after each row.
func BulkCSV(rows []ClaimRow) []byte {
	var b bytes.Buffer
	quote := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
	for _, r := range rows {
		b.WriteString(quote(r.Token))
		if len(r.Tags) > 0 {
			b.WriteString("," + quote(strings.Join(r.Tags, ",")))
		}
		b.WriteString("\n")
	}
	return b.Bytes()
}

// BulkClaim claims rows in one request (POST /v1/claimed-devices with a CSV body). The
// service answers per row; an answer without its claimedIds and failed lists is an *APIError.
func (c *Client) BulkClaim(ctx context.Context, rows []ClaimRow) (BulkResult, error) {
	if len(rows) == 0 || len(rows) > MaxBulkRows {
		return BulkResult{}, fmt.Errorf("ownerapi: bulk claim of %d rows: want 1 to %d", len(rows), MaxBulkRows)
	}
	const op = "POST /v1/claimed-devices"
	status, body, err := c.do(ctx, http.MethodPost, "/v1/claimed-devices", nil, "text/csv", BulkCSV(rows))
	if err != nil {
		return BulkResult{}, err
	}
	// The service answers 201 when it claimed every row, 200 when some, and an error status
	// (the simulator 400) when none; the lists say which rows in every case.
	var res struct {
		ClaimedIDs *[]string     `json:"claimedIds"`
		Failed     []BulkFailure `json:"failed"`
	}
	if json.Unmarshal(body, &res) != nil || (res.ClaimedIDs == nil && res.Failed == nil) {
		return BulkResult{}, c.apiError(op, status, body)
	}
	out := BulkResult{Failed: res.Failed}
	if res.ClaimedIDs != nil {
		out.ClaimedIDs = *res.ClaimedIDs
	}
	for i := range out.Failed {
		out.Failed[i].Reason = c.redact(out.Failed[i].Reason)
	}
	return out, nil
}

// DryRun asks whether token could be claimed (POST /v1/claimed-devices?dryrun=true): nil when
// it could (202), an *APIError with the service's reason when not.
func (c *Client) DryRun(ctx context.Context, token string) error {
	const op = "POST /v1/claimed-devices?dryrun=true"
	body, err := json.Marshal(struct {
		ClaimToken string `json:"claimToken"`
	}{token})
	if err != nil {
		return fmt.Errorf("ownerapi: %w", err)
	}
	status, answer, err := c.do(ctx, http.MethodPost, "/v1/claimed-devices", url.Values{"dryrun": {"true"}}, "application/json", body)
	if err != nil {
		return err
	}
	if status == http.StatusAccepted {
		return nil
	}
	return c.apiError(op, status, answer)
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values, contentType string, body []byte) (int, []byte, error) {
	u := c.base.JoinPath(path)
	u.RawQuery = query.Encode()
	op := method + " " + path
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("ownerapi: %s: %w", op, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// net/http's errors name the URL, never the headers; redact anyway in case the key
		// was pasted into the URL.
		return 0, nil, fmt.Errorf("ownerapi: %s: %s", op, c.redact(err.Error()))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return 0, nil, fmt.Errorf("ownerapi: %s: read answer: %s", op, c.redact(err.Error()))
	}
	return resp.StatusCode, data, nil
}

// apiError builds the error of an unexpected answer from its JSON message (the service's
// errors are {"code", "message"}) or, failing that, its first bytes.
func (c *Client) apiError(op string, status int, body []byte) error {
	var eb struct {
		Message string `json:"message"`
	}
	msg := ""
	if json.Unmarshal(body, &eb) == nil {
		msg = eb.Message
	}
	if msg == "" {
		msg = strings.TrimSpace(string(body[:min(len(body), 200)]))
	}
	if msg == "" {
		msg = "(no message)"
	}
	return &APIError{Op: op, Status: status, Message: c.redact(msg)}
}

// redact removes the API key from text that came from elsewhere (the service's messages),
// so that it cannot reach a terminal or a log through an error.
func (c *Client) redact(s string) string {
	return strings.ReplaceAll(s, c.key, redacted)
}
