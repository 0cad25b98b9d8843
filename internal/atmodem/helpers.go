package atmodem

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/provisiond/provisiond/internal/attest"
)

// Functional modes of +CFUN used by provisiond (docs/modem.md §1.5).
const (
	ModePowerOff = 0
	ModeNormal   = 1
	ModeOffline  = 4
)

// Credential types of %CMNG (docs/modem.md §1.1).
const (
	CredRootCA      = 0
	CredClientCert  = 1
	CredPrivateKey  = 2
	CredPSK         = 3
	CredPSKIdentity = 4
	CredPublicKey   = 5
)

// Credential is one line of a %CMNG list.
type Credential struct {
	// SecTag is int64 because the modem lists tags up to 2^32-1 (its reserved ones), which do
	// not fit an int on 32-bit gateway CPUs.
	SecTag int64
	Type   int
	// SHA256 is the 64 upper-case hex digits the modem lists (firmware 1.3.2 and later),
	// empty if the modem does not list it.
	SHA256 string
}

// info runs cmd and returns the text after prefix of the first line that starts with it.
func (c *Client) info(ctx context.Context, cmd, prefix string) (string, error) {
	resp, err := c.Command(ctx, cmd)
	if err != nil {
		return "", err
	}
	for _, l := range resp.Lines {
		if rest, ok := strings.CutPrefix(l, prefix); ok {
			return trimSpace(rest), nil
		}
	}
	return "", fmt.Errorf("atmodem: %s: no %q line in %q: %w", commandName(cmd), prefix, resp.Raw, ErrUnexpectedResponse)
}

// intInfo runs cmd and parses the first integer after prefix ("+CFUN: 4" → 4).
func (c *Client) intInfo(ctx context.Context, cmd, prefix string) (int, error) {
	s, err := c.info(ctx, cmd, prefix)
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(s, ",")
	n, err := strconv.Atoi(trimSpace(first))
	if err != nil {
		return 0, fmt.Errorf("atmodem: %s: %q: %w", commandName(cmd), s, ErrUnexpectedResponse)
	}
	return n, nil
}

// quoted returns the text between the first pair of double quotes in s.
func quoted(s string) (string, bool) {
	_, rest, ok := strings.Cut(s, `"`)
	if !ok {
		return "", false
	}
	v, _, ok := strings.Cut(rest, `"`)
	return v, ok
}

// FunctionalMode reads the functional mode (AT+CFUN?).
func (c *Client) FunctionalMode(ctx context.Context) (int, error) {
	return c.intInfo(ctx, "AT+CFUN?", "+CFUN:")
}

// SetFunctionalMode sets the functional mode (AT+CFUN=<mode>), e.g. ModeOffline.
func (c *Client) SetFunctionalMode(ctx context.Context, mode int) error {
	if mode < 0 {
		return fmt.Errorf("atmodem: AT+CFUN: mode %d: %w", mode, ErrInvalidArgument)
	}
	_, err := c.Command(ctx, "AT+CFUN="+strconv.Itoa(mode))
	return err
}

// CMEE reads the error reporting mode (AT+CMEE?): 0 plain ERROR, 1 numeric +CME ERROR.
func (c *Client) CMEE(ctx context.Context) (int, error) {
	return c.intInfo(ctx, "AT+CMEE?", "+CMEE:")
}

// SetCMEE sets the error reporting mode (AT+CMEE=<n>).
func (c *Client) SetCMEE(ctx context.Context, n int) error {
	if n < 0 || n > 2 {
		return fmt.Errorf("atmodem: AT+CMEE: mode %d: %w", n, ErrInvalidArgument)
	}
	_, err := c.Command(ctx, "AT+CMEE="+strconv.Itoa(n))
	return err
}

// ShortSWVersion returns the modem firmware's short version (AT%SHORTSWVER), e.g.
// "nrf9160_1.3.5": the device library's mver.
func (c *Client) ShortSWVersion(ctx context.Context) (string, error) {
	v, err := c.info(ctx, "AT%SHORTSWVER", "%SHORTSWVER:")
	if err == nil && v == "" {
		err = fmt.Errorf("atmodem: AT%%SHORTSWVER: empty version: %w", ErrUnexpectedResponse)
	}
	return v, err
}

// minValidYear is the earliest modem clock treated as real: a modem that never had network
// time counts from a default date in the past.
const minValidYear = 2020

// Clock reads the modem clock (AT%CCLK?). valid is false when the modem has no valid time:
// it answers ERROR or +CME ERROR (which is how it says so; docs/protocol.md §5.1), or a date before
// 2020. The time is returned in UTC. Only transport failures and unparsable OK answers are
// errors.
func (c *Client) Clock(ctx context.Context) (t time.Time, valid bool, err error) {
	s, err := c.info(ctx, "AT%CCLK?", "%CCLK:")
	var cme *CMEError
	if errors.Is(err, ErrError) || errors.As(err, &cme) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, err
	}
	ts, ok := quoted(s)
	if !ok {
		return time.Time{}, false, fmt.Errorf("atmodem: AT%%CCLK: %q: %w", s, ErrUnexpectedResponse)
	}
	t, err = parseCCLK(ts)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("atmodem: AT%%CCLK: %q: %w", s, err)
	}
	return t, t.Year() >= minValidYear, nil
}

// parseCCLK parses the 3GPP clock "yy/MM/dd,hh:mm:ss±zz", zz in quarter hours.
func parseCCLK(s string) (time.Time, error) {
	if len(s) != 20 || (s[17] != '+' && s[17] != '-') {
		return time.Time{}, ErrUnexpectedResponse
	}
	base, err := time.Parse("06/01/02,15:04:05", s[:17])
	if err != nil {
		return time.Time{}, ErrUnexpectedResponse
	}
	q, err := strconv.Atoi(s[18:])
	if err != nil || q > 96 {
		return time.Time{}, ErrUnexpectedResponse
	}
	offset := q * 15 * 60
	if s[17] == '-' {
		offset = -offset
	}
	// time.Parse maps yy 69–99 to 19xx; the modem's years are 20yy.
	year := 2000 + base.Year()%100
	local := time.Date(year, base.Month(), base.Day(), base.Hour(), base.Minute(), base.Second(), 0,
		time.FixedZone("", offset))
	return local.UTC(), nil
}

// SetClock sets the modem clock from t (AT+CCLK="yy/MM/dd,hh:mm:ss+00", in UTC).
func (c *Client) SetClock(ctx context.Context, t time.Time) error {
	u := t.UTC()
	if u.Year() < 2000 || u.Year() > 2099 {
		return fmt.Errorf("atmodem: AT+CCLK: year %d: %w", u.Year(), ErrInvalidArgument)
	}
	_, err := c.Command(ctx, `AT+CCLK="`+u.Format("06/01/02,15:04:05")+`+00"`)
	return err
}

// JWT asks the modem for an ES256 JWT valid for validFor (whole seconds; 0 leaves out exp
// and iat). secTag 0 signs with the device identity key (AT%JWT=0,<exp>,"",""), otherwise
// with the client key in secTag (AT%JWT=0,<exp>,"","",<secTag>,2). The token is made
// base64url-clean as the device library does (docs/protocol.md §5.1).
func (c *Client) JWT(ctx context.Context, secTag int, validFor time.Duration) (string, error) {
	if secTag < 0 || validFor < 0 {
		return "", fmt.Errorf("atmodem: AT%%JWT: sec tag %d, validity %s: %w", secTag, validFor, ErrInvalidArgument)
	}
	cmd := fmt.Sprintf(`AT%%JWT=0,%d,"",""`, int64(validFor/time.Second))
	if secTag != 0 {
		cmd += fmt.Sprintf(",%d,2", secTag)
	}
	s, err := c.info(ctx, cmd, "%JWT:")
	if err != nil {
		return "", err
	}
	tok, ok := quoted(s)
	if tok = cleanJWT(tok); !ok || strings.Count(tok, ".") != 2 {
		return "", fmt.Errorf("atmodem: AT%%JWT: no quoted token: %w", ErrUnexpectedResponse)
	}
	return tok, nil
}

// cleanJWT turns a possibly plain-base64 token into base64url: + → -, / → _, and the text
// is cut at the first '=' (padding), as the device library does.
func cleanJWT(tok string) string {
	tok, _, _ = strings.Cut(tok, "=")
	return strings.NewReplacer("+", "-", "/", "_").Replace(tok)
}

// AttestationToken returns the modem's attestation token "<attest>.<cose>"
// (AT%ATTESTTOKEN), the text used to claim the device.
func (c *Client) AttestationToken(ctx context.Context) (string, error) {
	s, err := c.info(ctx, "AT%ATTESTTOKEN", "%ATTESTTOKEN:")
	if err != nil {
		return "", err
	}
	tok, ok := quoted(s)
	if !ok || !strings.Contains(tok, ".") {
		return "", fmt.Errorf("atmodem: AT%%ATTESTTOKEN: no quoted token: %w", ErrUnexpectedResponse)
	}
	return tok, nil
}

// DeviceUUID returns the device UUID (lower-case 8-4-4-4-12) from the attestation token.
func (c *Client) DeviceUUID(ctx context.Context) (string, error) {
	tok, err := c.AttestationToken(ctx)
	if err != nil {
		return "", err
	}
	id, err := attest.DeviceUUID(tok)
	if err != nil {
		return "", fmt.Errorf("atmodem: AT%%ATTESTTOKEN: %w: %w", ErrUnexpectedResponse, err)
	}
	return id, nil
}

// Credentials lists the stored credentials (AT%CMNG=1), only those of secTag unless it is -1.
// A modem that answers 513 (not found) for a tag without credentials gives an empty list.
func (c *Client) Credentials(ctx context.Context, secTag int) ([]Credential, error) {
	cmd := "AT%CMNG=1"
	if secTag >= 0 {
		cmd += "," + strconv.Itoa(secTag)
	} else if secTag != -1 {
		return nil, fmt.Errorf("atmodem: AT%%CMNG: sec tag %d: %w", secTag, ErrInvalidArgument)
	}
	resp, err := c.Command(ctx, cmd)
	var cme *CMEError
	if errors.As(err, &cme) && cme.Code == 513 {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Credential
	for _, l := range resp.Lines {
		rest, ok := strings.CutPrefix(l, "%CMNG:")
		if !ok {
			continue
		}
		cr, err := parseCMNG(rest)
		if err != nil {
			return nil, fmt.Errorf("atmodem: AT%%CMNG: %q: %w", l, err)
		}
		out = append(out, cr)
	}
	return out, nil
}

// parseCMNG parses " <sec_tag>,<type>[,\"<sha>\"[,...]]".
func parseCMNG(s string) (Credential, error) {
	f := strings.SplitN(s, ",", 4)
	if len(f) < 2 {
		return Credential{}, ErrUnexpectedResponse
	}
	tag, err1 := strconv.ParseInt(trimSpace(f[0]), 10, 64)
	typ, err2 := strconv.Atoi(trimSpace(f[1]))
	if err1 != nil || err2 != nil || tag < 0 || typ < 0 {
		return Credential{}, ErrUnexpectedResponse
	}
	cr := Credential{SecTag: tag, Type: typ}
	if len(f) > 2 {
		cr.SHA256 = strings.ToUpper(strings.Trim(trimSpace(f[2]), `"`))
	}
	return cr, nil
}

// CredentialExists reports whether a credential of type typ is stored in secTag.
func (c *Client) CredentialExists(ctx context.Context, secTag, typ int) (bool, error) {
	if secTag < 0 {
		return false, fmt.Errorf("atmodem: AT%%CMNG: sec tag %d: %w", secTag, ErrInvalidArgument)
	}
	list, err := c.Credentials(ctx, secTag)
	if err != nil {
		return false, err
	}
	for _, cr := range list {
		if cr.SecTag == int64(secTag) && cr.Type == typ {
			return true, nil
		}
	}
	return false, nil
}

// WriteCredential stores pem as type typ in secTag (AT%CMNG=0,<tag>,<type>,"<pem>"). The
// modem refuses while online (+CME ERROR: 518); the command must fit Config.MaxCommandLen.
func (c *Client) WriteCredential(ctx context.Context, secTag, typ int, pem string) error {
	if secTag < 0 || typ < 0 || pem == "" || strings.ContainsAny(pem, "\"\x00") {
		return fmt.Errorf("atmodem: AT%%CMNG: write tag %d type %d: %w", secTag, typ, ErrInvalidArgument)
	}
	_, err := c.Command(ctx, fmt.Sprintf(`AT%%CMNG=0,%d,%d,"%s"`, secTag, typ, pem))
	return err
}

// DeleteCredential deletes the credential of type typ in secTag (AT%CMNG=3,<tag>,<type>).
// A missing credential is +CME ERROR: 513.
func (c *Client) DeleteCredential(ctx context.Context, secTag, typ int) error {
	if secTag < 0 || typ < 0 {
		return fmt.Errorf("atmodem: AT%%CMNG: delete tag %d type %d: %w", secTag, typ, ErrInvalidArgument)
	}
	_, err := c.Command(ctx, fmt.Sprintf("AT%%CMNG=3,%d,%d", secTag, typ))
	return err
}
