package simmodem

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/provisiond/provisiond/internal/attest"
)

// CME error codes the simulator answers (docs/modem.md §1.1–1.3).
const (
	CMEIncorrectParams = 50
	CMENotFound        = 513
	CMENoAccess        = 514
	CMEMemoryFull      = 515
	CMENotAllowedOn    = 518
	CMEJWTFailed       = 525
	CMEInvalidContent  = 527
)

// Credential types (%CMNG <type>).
const (
	TypeRootCA      = 0
	TypeClientCert  = 1
	TypePrivateKey  = 2
	TypePSK         = 3
	TypePSKIdentity = 4
	TypePublicKey   = 5
	TypeDevicePub   = 6
	TypeEndorsement = 8
)

const maxUserTag = 2147483647

type cmdKind int

const (
	kindExec cmdKind = iota // AT+X
	kindRead                // AT+X?
	kindTest                // AT+X=?
	kindSet                 // AT+X=…
)

type arg struct {
	s      string
	quoted bool
}

type atCmd struct {
	name string // "+CFUN", "%CMNG", "E1", "" for a bare AT
	kind cmdKind
	args []arg
}

// parseCommand splits "AT<name>[?|=?|=<args>]". ok is false for anything that is not an
// AT command or has an unbalanced quote.
func parseCommand(raw string) (atCmd, bool) {
	if len(raw) < 2 || !strings.EqualFold(raw[:2], "AT") {
		return atCmd{}, false
	}
	rest := raw[2:]
	if rest == "" {
		return atCmd{}, true
	}
	if c := rest[0]; c != '+' && c != '%' && c != '#' {
		return atCmd{name: strings.ToUpper(rest)}, true // basic command such as E1
	}
	var c atCmd
	i := strings.IndexAny(rest, "=?")
	if i < 0 {
		c.name = strings.ToUpper(rest)
		return c, true
	}
	c.name, rest = strings.ToUpper(rest[:i]), rest[i:]
	switch {
	case rest == "?":
		c.kind = kindRead
	case rest == "=?":
		c.kind = kindTest
	case rest[0] == '=':
		c.kind = kindSet
		args, ok := splitArgs(rest[1:])
		if !ok {
			return atCmd{}, false
		}
		c.args = args
	default:
		return atCmd{}, false
	}
	return c, true
}

// splitArgs splits on commas outside double quotes; a quoted argument must be quoted whole.
func splitArgs(s string) ([]arg, bool) {
	var out []arg
	var cur strings.Builder
	inQ := false
	flush := func() bool {
		t := strings.TrimSpace(cur.String())
		cur.Reset()
		a := arg{s: t}
		if strings.HasPrefix(t, `"`) {
			if len(t) < 2 || !strings.HasSuffix(t, `"`) || strings.Count(t, `"`) != 2 {
				return false
			}
			a = arg{s: t[1 : len(t)-1], quoted: true}
		} else if strings.Contains(t, `"`) {
			return false
		}
		out = append(out, a)
		return true
	}
	for i := 0; i < len(s); i++ {
		switch b := s[i]; {
		case b == '"':
			inQ = !inQ
			cur.WriteByte(b)
		case b == ',' && !inQ:
			if !flush() {
				return nil, false
			}
		default:
			cur.WriteByte(b)
		}
	}
	if inQ || !flush() {
		return nil, false
	}
	return out, true
}

func (a arg) int(lo, hi int64) (int64, bool) {
	if a.quoted || a.s == "" {
		return 0, false
	}
	v, err := strconv.ParseInt(a.s, 10, 64)
	if err != nil || v < lo || v > hi {
		return 0, false
	}
	return v, true
}

// handle executes one command against the modem state.
func (m *Modem) handle(raw string) reply {
	c, ok := parseCommand(raw)
	if !ok {
		return errReply()
	}
	switch c.name {
	case "":
		return okReply()
	case "E0", "E1":
		m.mu.Lock()
		m.echo = c.name == "E1"
		m.mu.Unlock()
		return okReply()
	case "+CFUN":
		return m.cmdCFUN(c)
	case "+CMEE":
		return m.cmdCMEE(c)
	case "+CEREG":
		return m.cmdCEREG(c)
	case "%SHORTSWVER":
		return execOnly(c, "%SHORTSWVER: "+m.cfg.FirmwareVersion)
	case "+CGMR":
		return execOnly(c, "mfw_"+m.cfg.FirmwareVersion)
	case "%XMODEMUUID":
		return execOnly(c, "%XMODEMUUID: "+m.FirmwareUUID())
	case "%DEVICEUUID":
		if m.cfg.Chip == ChipNRF9160 {
			return errReply() // nRF91x1 only
		}
		return execOnly(c, "%DEVICEUUID: "+m.UUID())
	case "+CGSN":
		return m.cmdCGSN(c)
	case "+CGMI":
		return identification(c, "Nordic Semiconductor ASA")
	case "+CGMM":
		return identification(c, modelID(m.cfg.Chip))
	case "%CCLK":
		return m.cmdCCLK(c, true)
	case "+CCLK":
		return m.cmdCCLK(c, false)
	case "%JWT":
		return m.cmdJWT(c)
	case "%ATTESTTOKEN":
		return m.cmdAttest(c)
	case "%KEYGEN":
		return m.cmdKeygen(c)
	case "%CMNG":
		return m.cmdCMNG(c)
	case "%KEYINJECT":
		return m.cmdKeyInject(c)
	}
	return errReply()
}

// identification answers the 3GPP TS 27.007 identification commands (+CGMI, +CGMM): the
// text alone on its line, and a bare OK to the test form, as the modem does. Nordic's host
// tools ask +CGMM before anything else and stop when it fails (docs/simulators.md §6).
func identification(c atCmd, text string) reply {
	switch c.kind {
	case kindExec:
		return okReply(text)
	case kindTest:
		return okReply()
	}
	return errReply()
}

// modelID is the +CGMM answer of each chip: the SiP's name and package variant.
func modelID(chip string) string {
	switch chip {
	case ChipNRF9160:
		return "nRF9160-SICA"
	case ChipNRF9151:
		return "nRF9151-LACA"
	}
	return "nRF9161-LACA"
}

func execOnly(c atCmd, line string) reply {
	if c.kind != kindExec {
		return errReply()
	}
	return okReply(line)
}

// active reports +CFUN modes in which credential writes are refused (docs/modem.md §1.1).
func active(cfun int) bool { return cfun == 1 || cfun == 2 || cfun == 21 }

func (m *Modem) cmdCFUN(c atCmd) reply {
	switch c.kind {
	case kindRead:
		return okReply(fmt.Sprintf("+CFUN: %d", m.FunctionalMode()))
	case kindTest:
		return okReply("+CFUN: (0,1,2,4,20,21,30,31,40,41,44)")
	case kindSet:
	default:
		return errReply()
	}
	if len(c.args) != 1 {
		return errReply()
	}
	mode, ok := c.args[0].int(0, 44)
	if !ok || !slices.Contains([]int64{0, 1, 2, 4, 20, 21, 30, 31, 40, 41, 44}, mode) {
		return errReply()
	}
	r := okReply()
	m.mu.Lock()
	defer m.mu.Unlock()
	switch mode {
	case 30, 31, 40, 41: // GNSS and UICC switches leave the LTE mode as it is
		return r
	}
	was := m.cfun
	m.cfun = int(mode)
	switch {
	case active(m.cfun) && !active(was) && m.cfun != 2:
		m.scheduleRegistrationLocked()
	case !active(m.cfun) || m.cfun == 2:
		if m.regTimer != nil {
			m.regTimer.Stop()
			m.regTimer = nil
		}
		if m.registered {
			m.registered = false
			if m.cereg > 0 {
				r.after = append(r.after, "+CEREG: 0")
			}
		}
	}
	return r
}

// scheduleRegistrationLocked reports registration after RegistrationDelay; registering
// also gives the modem network time when it has none.
func (m *Modem) scheduleRegistrationLocked() {
	if m.regTimer != nil {
		m.regTimer.Stop()
	}
	var t *time.Timer
	t = time.AfterFunc(m.cfg.RegistrationDelay, func() {
		m.mu.Lock()
		if m.regTimer != t || !active(m.cfun) {
			m.mu.Unlock()
			return
		}
		m.regTimer = nil
		m.registered = true
		if !m.clockValid {
			m.clockValid, m.clockOff, m.tzQuarters = true, 0, 0
		}
		var urc string
		switch {
		case m.cereg == 1:
			urc = fmt.Sprintf("+CEREG: %d", m.cfg.RegStatus)
		case m.cereg >= 2:
			urc = fmt.Sprintf(`+CEREG: %d,"76C1","0102DA04",7`, m.cfg.RegStatus)
		}
		m.mu.Unlock()
		if urc != "" {
			m.emitURC(urc)
		}
	})
	m.regTimer = t
}

func (m *Modem) cmdCMEE(c atCmd) reply {
	switch c.kind {
	case kindRead:
		return okReply(fmt.Sprintf("+CMEE: %d", m.CMEE()))
	case kindTest:
		return okReply("+CMEE: (0,1)")
	case kindSet:
		if len(c.args) != 1 {
			return errReply()
		}
		v, ok := c.args[0].int(0, 1)
		if !ok {
			return errReply()
		}
		m.mu.Lock()
		m.cmee = int(v)
		m.mu.Unlock()
		return okReply()
	}
	return errReply()
}

func (m *Modem) cmdCEREG(c atCmd) reply {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch c.kind {
	case kindRead:
		stat := 0
		if m.registered {
			stat = m.cfg.RegStatus
		} else if active(m.cfun) && m.cfun != 2 {
			stat = 2 // searching
		}
		return okReply(fmt.Sprintf("+CEREG: %d,%d", m.cereg, stat))
	case kindSet:
		if len(c.args) != 1 {
			return errReply()
		}
		v, ok := c.args[0].int(0, 5)
		if !ok {
			return errReply()
		}
		m.cereg = int(v)
		return okReply()
	}
	return errReply()
}

func (m *Modem) cmdCGSN(c atCmd) reply {
	switch c.kind {
	case kindExec:
		return okReply(m.imei)
	case kindSet:
		if len(c.args) != 1 {
			return errReply()
		}
		switch v, _ := c.args[0].int(0, 3); {
		case c.args[0].s == "0":
			return okReply(m.imei)
		case v == 1:
			return okReply(fmt.Sprintf(`+CGSN: "%s"`, m.imei))
		}
	}
	return errReply()
}

// cmdCCLK answers %CCLK? / +CCLK? (ERROR while the modem has no time) and sets the clock
// from +CCLK="yy/MM/dd,hh:mm:ss±zz" (local time and quarter-hour zone).
func (m *Modem) cmdCCLK(c atCmd, percent bool) reply {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch c.kind {
	case kindRead:
		if !m.clockValid {
			return errReply()
		}
		local := m.nowLocked().Add(time.Duration(m.tzQuarters) * 15 * time.Minute)
		s := fmt.Sprintf(`"%s%+03d"`, local.Format("06/01/02,15:04:05"), m.tzQuarters)
		if percent {
			return okReply("%CCLK: " + s + ",0")
		}
		return okReply("+CCLK: " + s)
	case kindSet:
		if percent || len(c.args) != 1 || !c.args[0].quoted {
			return errReply()
		}
		t, tz, ok := parseCCLK(c.args[0].s)
		if !ok {
			return errReply()
		}
		m.clockOff = t.Sub(m.cfg.Clock())
		m.tzQuarters = tz
		m.clockValid = true
		return okReply()
	}
	return errReply()
}

// parseCCLK parses "yy/MM/dd,hh:mm:ss±zz" into UTC and the zone in quarter hours.
func parseCCLK(s string) (time.Time, int, bool) {
	if len(s) != 20 || (s[17] != '+' && s[17] != '-') {
		return time.Time{}, 0, false
	}
	local, err := time.Parse("06/01/02,15:04:05", s[:17])
	if err != nil {
		return time.Time{}, 0, false
	}
	tz, err := strconv.Atoi(s[17:])
	if err != nil || tz < -96 || tz > 96 {
		return time.Time{}, 0, false
	}
	return local.Add(-time.Duration(tz) * 15 * time.Minute).UTC(), tz, true
}

// parseTag reads a security tag; reserved is true above 2147483647.
func parseTag(a arg) (tag uint32, reserved, ok bool) {
	v, ok := a.int(0, 1<<32-1)
	if !ok {
		return 0, false, false
	}
	return uint32(v), v > maxUserTag, true
}

func (m *Modem) cmdJWT(c atCmd) reply {
	if c.kind != kindSet && c.kind != kindExec {
		return errReply()
	}
	a := c.args
	get := func(i int) arg {
		if i < len(a) {
			return a[i]
		}
		return arg{}
	}
	if len(a) > 6 || len(a) == 5 {
		return cmeReply(CMEIncorrectParams)
	}
	if alg := get(0); alg.s != "" {
		if v, ok := alg.int(0, 0); !ok || v != 0 {
			return cmeReply(CMEIncorrectParams)
		}
	}
	var exp int64
	if e := get(1); e.s != "" {
		var ok bool
		if exp, ok = e.int(0, 1<<31-1); !ok {
			return cmeReply(CMEIncorrectParams)
		}
	}
	sub, aud := get(2), get(3)
	if (sub.s != "" && !sub.quoted) || (aud.s != "" && !aud.quoted) {
		return cmeReply(CMEIncorrectParams)
	}
	key := m.identity
	if len(a) == 6 {
		tag, _, ok := parseTag(a[4])
		typ, ok2 := a[5].int(0, 8)
		if !ok || !ok2 || (typ != TypePrivateKey && typ != TypeEndorsement) {
			return cmeReply(CMEIncorrectParams)
		}
		m.mu.Lock()
		cred, found := m.creds[CredKey{tag, int(typ)}]
		endorse := m.endorse
		m.mu.Unlock()
		if typ == TypeEndorsement {
			if endorse == nil {
				return cmeReply(CMENotFound)
			}
			key = endorse
		} else {
			if !found {
				return cmeReply(CMENotFound)
			}
			k, err := attest.ParsePrivateKeyPEM([]byte(cred.Content))
			if err != nil {
				return cmeReply(CMENoAccess)
			}
			key = k
		}
	}
	m.mu.Lock()
	now, valid := m.nowLocked(), m.clockValid
	m.mu.Unlock()
	p := attest.JWTParams{Key: key, Chip: m.cfg.Chip, DeviceUUID: m.UUID(), FWUUID: m.FirmwareUUID(),
		Subject: sub.s, Audience: aud.s}
	if exp > 0 {
		if !valid {
			return cmeReply(CMEJWTFailed) // iat/exp need a valid modem clock
		}
		p.IssuedAt, p.ValidFor = now, time.Duration(exp)*time.Second
	}
	tok, err := attest.SignJWT(p)
	if err != nil {
		return cmeReply(CMEJWTFailed)
	}
	return okReply(`%JWT: "` + tok + `"`)
}

func (m *Modem) cmdAttest(c atCmd) reply {
	var nonce [16]byte
	switch {
	case c.kind == kindExec:
	case c.kind == kindSet && len(c.args) == 1:
		ch := c.args[0].s
		b, err := hex.DecodeString(ch)
		if err != nil || len(b) != 16 {
			return cmeReply(CMEIncorrectParams)
		}
		copy(nonce[:], b)
	default:
		return errReply()
	}
	tok, err := m.attestToken(nonce, c.kind == kindExec)
	if err != nil {
		return errReply()
	}
	return okReply(`%ATTESTTOKEN: "` + tok + `"`)
}

func (m *Modem) attestToken(nonce [16]byte, random bool) (string, error) {
	if random {
		if _, err := rand.Read(nonce[:]); err != nil {
			return "", fmt.Errorf("simmodem: nonce: %w", err)
		}
	}
	devType := attest.DeviceTypeNRF9161
	switch m.cfg.Chip {
	case ChipNRF9160:
		devType = attest.DeviceTypeNRF9160
	case ChipNRF9151:
		devType = attest.DeviceTypeNRF9151
	}
	return attest.BuildToken(m.identity, attest.Identity{
		MsgType: attest.MsgTypeDeviceIdentity, DeviceUUID: m.uuid, DeviceType: devType, FWUUID: m.fwUUID, Nonce: nonce,
	})
}

func (m *Modem) cmdKeygen(c atCmd) reply {
	if c.kind != kindSet || len(c.args) < 2 || len(c.args) > 5 {
		return errReply()
	}
	tag, reserved, ok := parseTag(c.args[0])
	typ, ok2 := c.args[1].int(0, 8)
	if !ok || !ok2 || (typ != TypePrivateKey && typ != TypeEndorsement) {
		return cmeReply(CMEIncorrectParams)
	}
	format := int64(attest.KeygenCSR)
	if len(c.args) > 2 && c.args[2].s != "" {
		if format, ok = c.args[2].int(0, 1); !ok {
			return cmeReply(CMEIncorrectParams)
		}
	}
	p := attest.KeygenParams{Identity: m.identity, DeviceUUID: m.uuid, SecTag: tag, Format: int(format)}
	if len(c.args) > 3 && c.args[3].s != "" {
		if !c.args[3].quoted {
			return cmeReply(CMEIncorrectParams)
		}
		subj, err := attest.ParseSubject(c.args[3].s)
		if err != nil {
			return cmeReply(CMEIncorrectParams)
		}
		if subj.CommonName == "" {
			subj.CommonName = m.UUID()
		}
		p.Subject = &subj
	}
	if len(c.args) > 4 {
		if u := c.args[4]; !u.quoted || len(u.s) != 9 || strings.Trim(u.s, "01") != "" {
			return cmeReply(CMEIncorrectParams)
		}
		p.KeyUsage = c.args[4].s
	}
	m.mu.Lock()
	on, endorse := active(m.cfun), m.endorse
	_, exists := m.creds[CredKey{tag, int(typ)}]
	full := !exists && m.userCredsLocked() >= m.cfg.MaxCredentials
	m.mu.Unlock()
	switch {
	case on:
		return cmeReply(CMENotAllowedOn)
	case reserved:
		return cmeReply(CMENoAccess)
	case full:
		return cmeReply(CMEMemoryFull)
	}
	key := endorse
	if typ == TypePrivateKey || key == nil {
		k, err := attest.GenerateKey()
		if err != nil {
			return cmeReply(523)
		}
		key = k
	}
	p.Key = key
	ans, err := attest.BuildKeygen(p)
	if err != nil {
		return cmeReply(523)
	}
	keyPEM, err := attest.MarshalPrivateKeyPEM(key)
	if err != nil {
		return cmeReply(523)
	}
	m.mu.Lock()
	if typ == TypeEndorsement {
		m.endorse = key
	}
	m.creds[CredKey{tag, int(typ)}] = Credential{Tag: tag, Type: int(typ), Content: string(keyPEM), SHA256: shaHex(string(keyPEM))}
	m.mu.Unlock()
	return okReply(`%KEYGEN: "` + ans + `"`)
}

func (m *Modem) userCredsLocked() int {
	n := 0
	for k := range m.creds {
		if k.Tag <= maxUserTag {
			n++
		}
	}
	return n
}

func (m *Modem) cmdCMNG(c atCmd) reply {
	if c.kind != kindSet || len(c.args) == 0 {
		return errReply()
	}
	op, ok := c.args[0].int(0, 3)
	if !ok {
		return cmeReply(CMEIncorrectParams)
	}
	if op == 1 {
		return m.cmngList(c.args[1:])
	}
	if len(c.args) < 3 {
		return cmeReply(CMEIncorrectParams)
	}
	tag, reserved, ok := parseTag(c.args[1])
	typ, ok2 := c.args[2].int(0, 11)
	if !ok || !ok2 {
		return cmeReply(CMEIncorrectParams)
	}
	key := CredKey{tag, int(typ)}
	m.mu.Lock()
	defer m.mu.Unlock()
	cred, exists := m.creds[key]
	switch op {
	case 0:
		if len(c.args) < 4 || len(c.args) > 5 || !c.args[3].quoted || c.args[3].s == "" {
			return cmeReply(CMEIncorrectParams)
		}
		if len(c.args) == 5 && (!c.args[4].quoted || len(c.args[4].s) > 32) {
			return cmeReply(CMEIncorrectParams)
		}
		switch {
		case active(m.cfun):
			return cmeReply(CMENotAllowedOn)
		case reserved || typ == 7 || typ >= 8:
			return cmeReply(CMENoAccess)
		case !validContent(int(typ), c.args[3].s):
			return cmeReply(CMEInvalidContent)
		case !exists && m.userCredsLocked() >= m.cfg.MaxCredentials:
			return cmeReply(CMEMemoryFull)
		}
		content := c.args[3].s
		m.creds[key] = Credential{Tag: tag, Type: int(typ), Content: content, SHA256: shaHex(content)}
		return okReply()
	case 2:
		if len(c.args) != 3 {
			return cmeReply(CMEIncorrectParams)
		}
		switch {
		case !exists:
			return cmeReply(CMENotFound)
		case reserved || typ == TypePrivateKey || typ == TypePSK || typ == TypeEndorsement:
			return cmeReply(CMENoAccess)
		}
		return okReply(fmt.Sprintf(`%%CMNG: %d,%d,"%s","%s"`, tag, typ, cred.SHA256, cred.Content))
	default: // 3: delete
		if len(c.args) != 3 {
			return cmeReply(CMEIncorrectParams)
		}
		switch {
		case active(m.cfun):
			return cmeReply(CMENotAllowedOn)
		case reserved:
			return cmeReply(CMENoAccess)
		case !exists:
			return cmeReply(CMENotFound)
		}
		delete(m.creds, key)
		if typ == TypeEndorsement {
			m.endorse = nil
		}
		return okReply()
	}
}

// validContent is the modem's sanity check of a written credential: PEM for certificates
// and keys, hex for a PSK.
func validContent(typ int, content string) bool {
	switch typ {
	case TypeRootCA, TypeClientCert, TypePrivateKey, TypePublicKey, TypeDevicePub:
		blk, _ := pem.Decode([]byte(content))
		return blk != nil
	case TypePSK:
		_, err := hex.DecodeString(content)
		return err == nil
	}
	return true
}

func (m *Modem) cmngList(a []arg) reply {
	var tag, typ int64 = -1, -1
	var ok bool
	if len(a) > 2 {
		return cmeReply(CMEIncorrectParams)
	}
	if len(a) >= 1 {
		if tag, ok = a[0].int(0, 1<<32-1); !ok {
			return cmeReply(CMEIncorrectParams)
		}
	}
	if len(a) == 2 {
		if typ, ok = a[1].int(0, 11); !ok {
			return cmeReply(CMEIncorrectParams)
		}
	}
	m.mu.Lock()
	keys := make([]CredKey, 0, len(m.creds))
	for k := range m.creds {
		if (tag < 0 || int64(k.Tag) == tag) && (typ < 0 || int64(k.Type) == typ) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(x, y CredKey) int {
		if x.Tag != y.Tag {
			if x.Tag < y.Tag {
				return -1
			}
			return 1
		}
		return x.Type - y.Type
	})
	lines := make([]string, 0, len(keys))
	for _, k := range keys {
		lines = append(lines, fmt.Sprintf(`%%CMNG: %d,%d,"%s"`, k.Tag, k.Type, m.creds[k].SHA256))
	}
	m.mu.Unlock()
	return okReply(lines...)
}

// cmdKeyInject accepts %KEYINJECT=<sec_tag>,<type>,"<content>" while offline and stores
// the content; the simulator does not decrypt anything.
func (m *Modem) cmdKeyInject(c atCmd) reply {
	if c.kind != kindSet || len(c.args) != 3 || !c.args[2].quoted || c.args[2].s == "" {
		return cmeReply(CMEIncorrectParams)
	}
	tag, reserved, ok := parseTag(c.args[0])
	typ, ok2 := c.args[1].int(0, 11)
	if !ok || !ok2 {
		return cmeReply(CMEIncorrectParams)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case active(m.cfun):
		return cmeReply(CMENotAllowedOn)
	case reserved:
		return cmeReply(CMENoAccess)
	}
	m.creds[CredKey{tag, int(typ)}] = Credential{Tag: tag, Type: int(typ), Content: c.args[2].s, SHA256: shaHex(c.args[2].s)}
	return okReply()
}
