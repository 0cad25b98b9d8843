package simcloud

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/provisiond/provisiond/internal/proto"
)

// DefaultSecTag is the security tag nRF Cloud uses when a request names none (0x01010001).
const DefaultSecTag = 16842753

// cmeNotFound is the modem's "not found" CME error, ignored by the delete steps of a
// client-certificate job so that a first run on a fresh device succeeds.
const cmeNotFound = 513

// Request is one owner-side provisioning command, shaped like the "request" object of the
// nRF Cloud Provisioning Service REST API: exactly one field is set. The service expands it
// into one or more device commands (see Enqueue).
type Request struct {
	// ATRequest sends a raw AT command.
	ATRequest *ATRequest `json:"atRequest,omitempty"`
	// Config writes key/value pairs into the device's settings.
	Config *ConfigRequest `json:"config,omitempty"`
	// Finished ends the provisioning configuration; its ack makes the device report DONE.
	Finished *FinishedRequest `json:"finished,omitempty"`
	// ClientCertificate writes a client certificate. Without Content the simulator runs the
	// full flow: %KEYGEN a new client key in SecTag, sign the returned CSR with its CA, and
	// write the signed certificate with %CMNG.
	ClientCertificate *ClientCertificateRequest `json:"clientCertificate,omitempty"`
	// ServerCertificate writes a root CA certificate (%CMNG type 0).
	ServerCertificate *CredentialRequest `json:"serverCertificate,omitempty"`
	// CertificateSigningRequest generates a client key and records the CSR the device returns.
	CertificateSigningRequest *CSRRequest `json:"certificateSigningRequest,omitempty"`
	// ClientPrivateKeyGeneration generates a client key and records its public key.
	ClientPrivateKeyGeneration *KeyGenerationRequest `json:"clientPrivateKeyGeneration,omitempty"`
	// CloudAccessKeyGeneration generates a key pair whose public key the service registers
	// for the device's JWT access to the cloud, and records the CSR the device returns.
	CloudAccessKeyGeneration *KeyGenerationRequest `json:"cloudAccessKeyGeneration,omitempty"`
}

// ATRequest is a raw AT command. Command is the set command without the "AT" prefix, e.g.
// "%CMNG"; a leading "AT" is removed, and "AT%CMNG=1" with empty Parameters is split at '='.
type ATRequest struct {
	Command         string   `json:"command"`
	Parameters      string   `json:"parameters"`
	IgnoreCMEErrors []uint64 `json:"ignoreCmeErrors,omitempty"`
}

// ConfigRequest writes settings: keys are full settings paths ("provisioning/interval-sec").
type ConfigRequest struct {
	Properties Properties `json:"properties"`
}

// Properties is an ordered set of key/value pairs. In JSON it is an object whose member
// order is kept, because the device writes the pairs in wire order.
type Properties []proto.Property

// FinishedRequest is the empty body of a finished request.
type FinishedRequest struct{}

// ClientCertificateRequest writes a client certificate into SecTag (0 means DefaultSecTag).
// Content is a PEM certificate to write as is; when empty the simulator generates the key on
// the device and signs its CSR. Attributes (a %KEYGEN subject such as "O=ACME,CN=dev") and
// KeyUsage (nine 0/1 characters) are passed to %KEYGEN when set.
type ClientCertificateRequest struct {
	SecTag     uint32 `json:"secTag,omitempty"`
	Content    string `json:"content,omitempty"`
	Attributes string `json:"attributes,omitempty"`
	KeyUsage   string `json:"keyUsage,omitempty"`
}

// CredentialRequest writes a PEM credential into SecTag (0 means DefaultSecTag).
type CredentialRequest struct {
	SecTag  uint32 `json:"secTag,omitempty"`
	Content string `json:"content"`
}

// CSRRequest asks the device for a new client key and its CSR.
type CSRRequest struct {
	SecTag     uint32 `json:"secTag,omitempty"`
	Attributes string `json:"attributes,omitempty"`
	KeyUsage   string `json:"keyUsage,omitempty"`
}

// KeyGenerationRequest asks the device for a new client key and its public key.
type KeyGenerationRequest struct {
	SecTag uint32 `json:"secTag,omitempty"`
}

// Roles of the device commands a job expands into.
type role int

const (
	roleMain     role = iota // the command that answers the request
	rolePre                  // a preparatory step (delete before keygen)
	roleCertCSR              // the %KEYGEN of a client-certificate job: its answer is signed
	roleCertSave             // the %CMNG write of the certificate signed for roleCertCSR
)

// planned is one device command a request expands into, before it gets its id.
type planned struct {
	suffix string
	role   role
	cmd    proto.Command
}

// Type returns the name of the set field ("atRequest", "config", ...), or "" when none is.
func (r Request) Type() string {
	switch {
	case r.ATRequest != nil:
		return "atRequest"
	case r.Config != nil:
		return "config"
	case r.Finished != nil:
		return "finished"
	case r.ClientCertificate != nil:
		return "clientCertificate"
	case r.ServerCertificate != nil:
		return "serverCertificate"
	case r.CertificateSigningRequest != nil:
		return "certificateSigningRequest"
	case r.ClientPrivateKeyGeneration != nil:
		return "clientPrivateKeyGeneration"
	case r.CloudAccessKeyGeneration != nil:
		return "cloudAccessKeyGeneration"
	}
	return ""
}

func (r Request) count() int {
	n := 0
	for _, set := range []bool{r.ATRequest != nil, r.Config != nil, r.Finished != nil, r.ClientCertificate != nil,
		r.ServerCertificate != nil, r.CertificateSigningRequest != nil, r.ClientPrivateKeyGeneration != nil,
		r.CloudAccessKeyGeneration != nil} {
		if set {
			n++
		}
	}
	return n
}

// plan validates r and expands it into device commands. The suffixes follow the shape of
// real correlation ids: "<job id>.e" for the command that answers the request and
// "<job id>.e.<x>" for its helper steps.
func (r Request) plan() ([]planned, error) {
	if n := r.count(); n != 1 {
		return nil, fmt.Errorf("simcloud: request sets %d types, want exactly one: %w", n, ErrInvalid)
	}
	at := func(suffix string, ro role, set, params string, ignore ...uint64) planned {
		return planned{suffix: suffix, role: ro, cmd: proto.Command{Kind: proto.KindAT, SetCommand: set, Parameters: params, IgnoreCMEErrors: ignore}}
	}
	switch {
	case r.ATRequest != nil:
		set, params := strings.TrimSpace(r.ATRequest.Command), r.ATRequest.Parameters
		if len(set) >= 2 && strings.EqualFold(set[:2], "AT") {
			set = set[2:]
		}
		if params == "" {
			if c, p, ok := strings.Cut(set, "="); ok {
				set, params = c, p
			}
		}
		if set == "" || strings.ContainsAny(set, "\r\n") {
			return nil, fmt.Errorf("simcloud: atRequest command %q: %w", r.ATRequest.Command, ErrInvalid)
		}
		if len(r.ATRequest.IgnoreCMEErrors) > proto.MaxIgnoreCodes {
			return nil, fmt.Errorf("simcloud: atRequest: %d ignoreCmeErrors, at most %d: %w",
				len(r.ATRequest.IgnoreCMEErrors), proto.MaxIgnoreCodes, ErrInvalid)
		}
		return []planned{at("e", roleMain, set, params, r.ATRequest.IgnoreCMEErrors...)}, nil
	case r.Config != nil:
		if len(r.Config.Properties) > proto.MaxProperties {
			return nil, fmt.Errorf("simcloud: config: %d properties, at most %d: %w",
				len(r.Config.Properties), proto.MaxProperties, ErrInvalid)
		}
		for _, p := range r.Config.Properties {
			if p.Key == "" {
				return nil, fmt.Errorf("simcloud: config: empty key: %w", ErrInvalid)
			}
		}
		props := append([]proto.Property(nil), r.Config.Properties...)
		return []planned{{suffix: "e", role: roleMain, cmd: proto.Command{Kind: proto.KindConfig, Properties: props}}}, nil
	case r.Finished != nil:
		return []planned{{suffix: "e", role: roleMain, cmd: proto.Command{Kind: proto.KindFinished}}}, nil
	case r.ClientCertificate != nil:
		c := r.ClientCertificate
		tag := secTag(c.SecTag)
		if c.Content != "" {
			return []planned{at("e", roleMain, "%CMNG", cmngWrite(tag, 1, c.Content))}, nil
		}
		kg, err := keygenParams(tag, 0, c.Attributes, c.KeyUsage)
		if err != nil {
			return nil, err
		}
		return []planned{
			at("e.r", rolePre, "%CMNG", fmt.Sprintf("3,%d,1", tag), cmeNotFound),
			at("e.s", rolePre, "%CMNG", fmt.Sprintf("3,%d,2", tag), cmeNotFound),
			at("e", roleCertCSR, "%KEYGEN", kg),
		}, nil
	case r.ServerCertificate != nil:
		c := r.ServerCertificate
		if c.Content == "" {
			return nil, fmt.Errorf("simcloud: serverCertificate: empty content: %w", ErrInvalid)
		}
		return []planned{at("e", roleMain, "%CMNG", cmngWrite(secTag(c.SecTag), 0, c.Content))}, nil
	case r.CertificateSigningRequest != nil:
		c := r.CertificateSigningRequest
		tag := secTag(c.SecTag)
		kg, err := keygenParams(tag, 0, c.Attributes, c.KeyUsage)
		if err != nil {
			return nil, err
		}
		return []planned{
			at("e.s", rolePre, "%CMNG", fmt.Sprintf("3,%d,2", tag), cmeNotFound),
			at("e", roleMain, "%KEYGEN", kg),
		}, nil
	case r.CloudAccessKeyGeneration != nil:
		// A CSR rather than a bare public key: the service registers the key from it and the
		// owner can have a device certificate issued for the same key.
		tag := secTag(r.CloudAccessKeyGeneration.SecTag)
		return []planned{
			at("e.s", rolePre, "%CMNG", fmt.Sprintf("3,%d,2", tag), cmeNotFound),
			at("e", roleMain, "%KEYGEN", fmt.Sprintf("%d,2,0", tag)),
		}, nil
	default:
		tag := secTag(r.ClientPrivateKeyGeneration.SecTag)
		return []planned{
			at("e.s", rolePre, "%CMNG", fmt.Sprintf("3,%d,2", tag), cmeNotFound),
			at("e", roleMain, "%KEYGEN", fmt.Sprintf("%d,2,1", tag)),
		}, nil
	}
}

func secTag(t uint32) uint32 {
	if t == 0 {
		return DefaultSecTag
	}
	return t
}

// cmngWrite builds the parameters of a %CMNG write: the PEM goes inside double quotes.
func cmngWrite(tag uint32, typ int, content string) string {
	return fmt.Sprintf("0,%d,%d,\"%s\"", tag, typ, content)
}

// keygenParams builds "%KEYGEN=<tag>,2,<format>[,\"<attributes>\"[,\"<key usage>\"]]".
func keygenParams(tag uint32, format int, attributes, keyUsage string) (string, error) {
	if strings.Contains(attributes, `"`) {
		return "", fmt.Errorf("simcloud: keygen attributes contain a quote: %w", ErrInvalid)
	}
	if keyUsage != "" && (len(keyUsage) != 9 || strings.Trim(keyUsage, "01") != "") {
		return "", fmt.Errorf("simcloud: keyUsage %q: want nine 0/1 characters: %w", keyUsage, ErrInvalid)
	}
	p := fmt.Sprintf("%d,2,%d", tag, format)
	if attributes != "" || keyUsage != "" {
		p += `,"` + attributes + `"`
	}
	if keyUsage != "" {
		p += `,"` + keyUsage + `"`
	}
	return p, nil
}

// MarshalJSON writes the pairs as a JSON object in their order.
func (p Properties) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, kv := range p {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(kv.Key)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(kv.Value)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads a JSON object of string (or number/bool, kept as their JSON text)
// values, keeping member order. Duplicate keys are refused.
func (p *Properties) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("properties: want a JSON object: %w", ErrInvalid)
	}
	out := Properties{}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string) // object keys are always strings
		if seen[key] {
			return fmt.Errorf("properties: duplicate key %q: %w", key, ErrInvalid)
		}
		seen[key] = true
		tok, err = dec.Token()
		if err != nil {
			return err
		}
		var val string
		switch v := tok.(type) {
		case string:
			val = v
		case json.Number:
			val = v.String()
		case bool:
			val = strconv.FormatBool(v)
		default:
			return fmt.Errorf("properties: value of %q must be a string: %w", key, ErrInvalid)
		}
		out = append(out, proto.Property{Key: key, Value: val})
	}
	if _, err := dec.Token(); err != nil {
		return err
	}
	*p = out
	return nil
}
