package simcloud

import (
	"bytes"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/provisiond/provisiond/internal/proto"
)

// maxOwnerBody bounds owner API request bodies.
const maxOwnerBody = 1 << 20

// ownerRoutes registers the owner-side REST API. Paths and shapes follow the nRF Cloud
// Provisioning Service (docs/modem.md §3) under /v1/; simulator-only controls live under /v1/sim/.
// Every route needs "Authorization: Bearer <Config.APIKey>".
func (s *Server) ownerRoutes(m *http.ServeMux) {
	h := func(pattern string, f http.HandlerFunc) { m.Handle(pattern, s.requireAPIKey(f)) }
	h("POST /v1/claimed-devices", s.ownerClaim)
	h("GET /v1/claimed-devices", s.ownerListClaimed)
	h("GET /v1/claimed-devices/{id}", s.ownerGetClaimed)
	h("DELETE /v1/claimed-devices/{id}", s.ownerUnclaim)
	h("POST /v1/claimed-devices/{id}/provisioning", s.ownerCreateJob)
	h("GET /v1/claimed-devices/{id}/provisioning", s.ownerListJobs)
	h("GET /v1/claimed-devices/{id}/provisioning/{job}", s.ownerGetJob)
	h("DELETE /v1/claimed-devices/{id}/provisioning/{job}", s.ownerDiscardJob)
	h("GET /v1/provisioning/tags", s.ownerListTags)
	h("POST /v1/provisioning/tags", s.ownerCreateTag)
	h("GET /v1/provisioning-rules", s.ownerListRules)
	h("POST /v1/provisioning-rules", s.ownerCreateRule)
	h("GET /v1/provisioning-rules/{id}", s.ownerGetRule)
	h("DELETE /v1/provisioning-rules/{id}", s.ownerDeleteRule)

	h("GET /v1/sim/devices", s.simListDevices)
	h("PUT /v1/sim/devices/{id}", s.simRegister)
	h("GET /v1/sim/devices/{id}/commands", s.simCommands)
	h("GET /v1/sim/devices/{id}/responses", s.simResponses)
	h("GET /v1/sim/faults", s.simGetFaults)
	h("PUT /v1/sim/faults", s.simSetFaults)
	h("DELETE /v1/sim/faults", s.simClearFaults)
	h("GET /v1/sim/ca", s.simCA)
}

func (s *Server) requireAPIKey(next http.HandlerFunc) http.Handler {
	want := []byte(s.cfg.APIKey)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(bearer(r)), want) != 1 {
			writeError(w, http.StatusUnauthorized, errors.New("missing or wrong API key"))
			return
		}
		next(w, r)
	})
}

// statusOf maps the package's sentinel errors onto HTTP statuses.
func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrUnknownDevice), errors.Is(err, ErrNotClaimed), errors.Is(err, ErrUnknownJob),
		errors.Is(err, ErrUnknownRule):
		return http.StatusNotFound
	case errors.Is(err, ErrAlreadyClaimed), errors.Is(err, ErrQueueFull), errors.Is(err, ErrJobStarted),
		errors.Is(err, ErrAlreadyExists):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

func decodeJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxOwnerBody+1))
	if err != nil {
		return fmt.Errorf("request body: %w: %w", ErrInvalid, err)
	}
	return decodeJSONBytes(body, v)
}

// decodeJSONBytes decodes one JSON value, refusing unknown fields (so a misspelt or
// unsupported request type is an error, not an empty request) and anything after the value.
func decodeJSONBytes(body []byte, v any) error {
	if len(body) > maxOwnerBody {
		return fmt.Errorf("request body: over %d bytes: %w", maxOwnerBody, ErrInvalid)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %w: %w", ErrInvalid, err)
	}
	if dec.More() {
		return fmt.Errorf("request body: data after the JSON value: %w", ErrInvalid)
	}
	return nil
}

type claimBody struct {
	ClaimToken string   `json:"claimToken"`
	Tags       []string `json:"tags,omitempty"`
}

// ownerClaim: POST /v1/claimed-devices {"claimToken": "<attest>.<cose>", "tags": [...]}
// → 201 device; with ?dryrun=true → 202 and no change. A CSV body is a bulk claim.
func (s *Server) ownerClaim(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxOwnerBody+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("request body: %w", err))
		return
	}
	dry := false
	if q := r.URL.Query().Get("dryrun"); q != "" {
		if dry, err = strconv.ParseBool(q); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("dryrun=%q: want true or false: %w", q, ErrInvalid))
			return
		}
	}
	if isCSV(r, body) {
		if dry {
			writeError(w, http.StatusBadRequest, fmt.Errorf("dryrun applies to a single JSON claim, not a CSV bulk claim: %w", ErrInvalid))
			return
		}
		s.ownerBulkClaim(w, body)
		return
	}
	var b claimBody
	if err := decodeJSONBytes(body, &b); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	d, err := s.claim(b.ClaimToken, b.Tags, dry)
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	status := http.StatusCreated
	if dry {
		status = http.StatusAccepted
	}
	writeJSON(w, status, d)
}

// isCSV says whether a claim body is a bulk CSV. Nordic's client names the media type in a
// header called "contentType" rather than Content-Type, so a body that is not a JSON object
// counts as CSV too.
func isCSV(r *http.Request, body []byte) bool {
	for _, h := range []string{"Content-Type", "contentType"} {
		if mt, _, err := mime.ParseMediaType(r.Header.Get(h)); err == nil && mt == "text/csv" {
			return true
		}
	}
	t := bytes.TrimSpace(body)
	return len(t) > 0 && t[0] != '{'
}

// ownerBulkClaim answers a CSV bulk claim: 201 when every row was claimed, 200 when some
// were, 400 when none was or the CSV itself is malformed.
func (s *Server) ownerBulkClaim(w http.ResponseWriter, body []byte) {
	res, err := s.ClaimCSV(body)
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	status := http.StatusCreated
	switch {
	case len(res.ClaimedIDs) == 0:
		status = http.StatusBadRequest
		res.Code, res.Message = status, "no device claimed"
	case len(res.Failed) > 0:
		status = http.StatusOK
	}
	writeJSON(w, status, res)
}

type list[T any] struct {
	Items []T `json:"items"`
	Total int `json:"total"`
}

func newList[T any](items []T) list[T] {
	if items == nil {
		items = []T{}
	}
	return list[T]{Items: items, Total: len(items)}
}

func (s *Server) ownerListClaimed(w http.ResponseWriter, _ *http.Request) {
	var out []Device
	for _, d := range s.Devices() {
		if d.Claimed {
			out = append(out, d)
		}
	}
	writeJSON(w, http.StatusOK, newList(out))
}

func (s *Server) ownerGetClaimed(w http.ResponseWriter, r *http.Request) {
	d, err := s.Device(r.PathValue("id"))
	if err == nil && !d.Claimed {
		err = fmt.Errorf("simcloud: device %s: %w", d.ID, ErrNotClaimed)
	}
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) ownerUnclaim(w http.ResponseWriter, r *http.Request) {
	if err := s.Unclaim(r.PathValue("id")); err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type createJobBody struct {
	Description string  `json:"description,omitempty"`
	Request     Request `json:"request"`
}

// ownerCreateJob: POST /v1/claimed-devices/{id}/provisioning
// {"description": "...", "request": {"<type>": {...}}} → 201 {"id": "<job id>"}.
func (s *Server) ownerCreateJob(w http.ResponseWriter, r *http.Request) {
	var b createJobBody
	if err := decodeJSON(r, &b); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	jobs, err := s.enqueue(r.PathValue("id"), b.Description, []Request{b.Request})
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusCreated, struct {
		ID string `json:"id"`
	}{jobs[0].ID})
}

func (s *Server) ownerListJobs(w http.ResponseWriter, r *http.Request) {
	jobs, err := s.Jobs(r.PathValue("id"))
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, newList(jobs))
}

func (s *Server) ownerGetJob(w http.ResponseWriter, r *http.Request) {
	j, err := s.Job(r.PathValue("id"), r.PathValue("job"))
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, j)
}

func (s *Server) ownerDiscardJob(w http.ResponseWriter, r *http.Request) {
	if err := s.Discard(r.PathValue("id"), r.PathValue("job")); err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) simListDevices(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, newList(s.Devices()))
}

// simRegister: PUT /v1/sim/devices/{uuid} with the identity public key PEM as the body
// → 201 device.
func (s *Server) simRegister(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxOwnerBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	id := r.PathValue("id")
	if err := s.RegisterDevicePEM(id, body); err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	d, err := s.Device(id)
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusCreated, d)
}

// commandJSON is the owner API view of a device command.
type commandJSON struct {
	ID              string        `json:"id"`
	JobID           string        `json:"jobId"`
	Type            string        `json:"type"`
	Command         string        `json:"command,omitempty"`
	Parameters      *string       `json:"parameters,omitempty"`
	IgnoreCMEErrors []uint64      `json:"ignoreCmeErrors,omitempty"`
	Properties      Properties    `json:"properties,omitempty"`
	Status          Status        `json:"status"`
	Deliveries      int           `json:"deliveries"`
	Response        *responseJSON `json:"response,omitempty"`
	Reason          string        `json:"reason,omitempty"`
	UpdatedAt       time.Time     `json:"updatedAt"`
}

type responseJSON struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	CMEError uint64 `json:"cmeError,omitempty"`
	Message  string `json:"message,omitempty"`
}

func toResponseJSON(r proto.Response) responseJSON {
	return responseJSON{ID: r.ID, Type: r.Kind.String(), CMEError: r.CMEError, Message: r.Message}
}

// MarshalJSON writes the owner API view of the command.
func (c Command) MarshalJSON() ([]byte, error) {
	v := commandJSON{ID: c.ID, JobID: c.JobID, Type: c.Kind.String(), Status: c.Status,
		Deliveries: c.Deliveries, Reason: c.Reason, UpdatedAt: c.UpdatedAt}
	switch c.Kind {
	case proto.KindAT:
		p := c.Parameters
		v.Command, v.Parameters, v.IgnoreCMEErrors = c.SetCommand, &p, c.IgnoreCMEErrors
	case proto.KindConfig:
		v.Properties = Properties(c.Properties)
		if v.Properties == nil {
			v.Properties = Properties{}
		}
	}
	if c.Response != nil {
		r := toResponseJSON(*c.Response)
		v.Response = &r
	}
	return json.Marshal(v)
}

type uploadJSON struct {
	Time      time.Time      `json:"time"`
	Transport string         `json:"transport"`
	CBOR      string         `json:"cbor"` // hex
	Responses []responseJSON `json:"responses"`
	Error     string         `json:"error,omitempty"`
}

// MarshalJSON writes the upload with its raw CBOR in hex and its decoded responses.
func (u Upload) MarshalJSON() ([]byte, error) {
	v := uploadJSON{Time: u.Time, Transport: u.Transport, CBOR: hex.EncodeToString(u.Raw),
		Responses: []responseJSON{}, Error: u.Err}
	for _, r := range u.Responses {
		v.Responses = append(v.Responses, toResponseJSON(r))
	}
	return json.Marshal(v)
}

func (s *Server) simCommands(w http.ResponseWriter, r *http.Request) {
	cmds, err := s.Commands(r.PathValue("id"))
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, newList(cmds))
}

func (s *Server) simResponses(w http.ResponseWriter, r *http.Request) {
	ups, err := s.Responses(r.PathValue("id"))
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, newList(ups))
}

func (s *Server) simGetFaults(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, newList(s.Faults()))
}

// simSetFaults: PUT /v1/sim/faults {"items": [{"kind": "busy", "count": 2, ...}]} replaces
// the fault rules.
func (s *Server) simSetFaults(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Items []Fault `json:"items"`
	}
	if err := decodeJSON(r, &b); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if err := s.SetFault(b.Items...); err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, newList(s.Faults()))
}

func (s *Server) simClearFaults(w http.ResponseWriter, _ *http.Request) {
	_ = s.SetFault() // clearing cannot fail validation
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) simCA(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Write(s.CAPEM())
}

func (s *Server) ownerListTags(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, newList(s.Tags()))
}

// ownerCreateTag: POST /v1/provisioning/tags {"tag": "...", "description": "..."} → 201 tag.
func (s *Server) ownerCreateTag(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Tag         string `json:"tag"`
		Description string `json:"description"`
	}
	if err := decodeJSON(r, &b); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	t, err := s.CreateTag(b.Tag, b.Description)
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusCreated, t)
}

func (s *Server) ownerListRules(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, newList(s.Rules()))
}

// ownerCreateRule: POST /v1/provisioning-rules {"name", "description", "active",
// "commands": [{"request": {...}}], "tags": [...]} → 201 rule.
func (s *Server) ownerCreateRule(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Name        string        `json:"name"`
		Description string        `json:"description"`
		Active      *bool         `json:"active"`
		Commands    []RuleCommand `json:"commands"`
		Tags        []string      `json:"tags"`
	}
	if err := decodeJSON(r, &b); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if b.Active == nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("provisioning rule: \"active\" missing: %w", ErrInvalid))
		return
	}
	rule, err := s.CreateRule(Rule{Name: b.Name, Description: b.Description, Active: *b.Active, Commands: b.Commands, Tags: b.Tags})
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusCreated, rule)
}

func (s *Server) ownerGetRule(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	for _, rule := range s.Rules() {
		if rule.ID == id {
			writeJSON(w, http.StatusOK, rule)
			return
		}
	}
	writeError(w, http.StatusNotFound, fmt.Errorf("provisioning rule %s: %w", id, ErrUnknownRule))
}

func (s *Server) ownerDeleteRule(w http.ResponseWriter, r *http.Request) {
	if err := s.DeleteRule(r.PathValue("id")); err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
