package simcloud

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/provisiond/provisiond/internal/attest"
	"github.com/provisiond/provisiond/internal/proto"
)

// Status is the state of a device command or of an owner job.
type Status string

// Statuses. A command is PENDING until it is first delivered in a batch, IN_PROGRESS until a
// response resolves it, then SUCCEEDED or FAILED. A job's status summarises its commands.
const (
	StatusPending    Status = "PENDING"
	StatusInProgress Status = "IN_PROGRESS"
	StatusSucceeded  Status = "SUCCEEDED"
	StatusFailed     Status = "FAILED"
)

// maxUploadResponses bounds the responses decoded from one upload. The device sends at most
// its `limit` (≤ 20); the bound only guards the decoder.
const maxUploadResponses = 64

// Device is the simulator's record of one device.
type Device struct {
	ID              string     `json:"id"`
	DeviceType      string     `json:"deviceType,omitempty"` // from the claim token, e.g. "nrf9161"
	Claimed         bool       `json:"claimed"`
	OwnershipStatus string     `json:"ownershipStatus"` // "IDENTIFIED" once claimed, else "UNCLAIMED"
	Status          string     `json:"status"`          // "READY", or "PROVISIONED" after a FINISHED ack
	Tags            []string   `json:"tags"`
	ClaimedAt       *time.Time `json:"claimedAt,omitempty"`
	ProvisionedAt   *time.Time `json:"provisionedAt,omitempty"` // last FINISHED ack
	LastSeenAt      *time.Time `json:"lastSeenAt,omitempty"`    // last authenticated device request
	ModemVersion    string     `json:"mver,omitempty"`          // as sent on the last fetch / auth
	ClientVersion   string     `json:"cver,omitempty"`
	// CloudAccessKey is the PEM public key a cloudAccessKeyGeneration job registered for the
	// device's JWT access to the cloud.
	CloudAccessKey string `json:"cloudAccessKey,omitempty"`
}

// Job is one owner-side provisioning command and what became of it. In JSON its response
// sits under the request type, {"response": {"<type>": {...}}}, as the real service answers.
type Job struct {
	ID          string       `json:"id"`
	DeviceID    string       `json:"deviceId"`
	Description string       `json:"description,omitempty"`
	Request     Request      `json:"request"`
	Status      Status       `json:"status"`
	CreatedAt   time.Time    `json:"createdAt"`
	UpdatedAt   time.Time    `json:"updatedAt"`
	Response    *JobResponse `json:"response,omitempty"`
	// CommandIDs are the correlation ids of the device commands the job expanded into.
	CommandIDs []string `json:"commandIds"`
}

// JobResponse is what the device answered for a job.
type JobResponse struct {
	// Message is the modem's response text for a job that is not a key generation, or why a
	// job failed (with the CME code when there is one).
	Message string `json:"message,omitempty"`
	// CMEError is the error response's cme_error (0 when not a CME error).
	CMEError uint64 `json:"cmeError,omitempty"`
	// CSR is the %KEYGEN answer of a key-generating job exactly as the modem gave it,
	// "<base64url DER>.<base64url COSE_Sign1>", whether the DER is a CSR or a public key:
	// owner tools split it at '.' and decode both parts themselves.
	CSR string `json:"csr,omitempty"`
	// PublicKey is the PEM public key returned by %KEYGEN in public-key format.
	PublicKey string `json:"publicKey,omitempty"`
	// Certificate is the PEM client certificate the simulator's CA issued.
	Certificate string `json:"certificate,omitempty"`
}

// Command is one device-level command in a device's queue.
type Command struct {
	proto.Command
	JobID      string
	Status     Status
	Deliveries int             // batches it was served in
	Response   *proto.Response // the response that resolved it, if any
	Reason     string          // why it failed when no response of its own says so
	UpdatedAt  time.Time
}

// Upload is one recorded response batch as the device sent it.
type Upload struct {
	Time      time.Time
	Transport string // TransportHTTP or TransportCoAP
	Raw       []byte
	Responses []proto.Response // nil when the batch did not decode
	Err       string           // the decode error, if any
}

type device struct {
	id         string
	pub        *ecdsa.PublicKey
	cloudKey   *ecdsa.PublicKey // registered by a cloudAccessKeyGeneration job
	devType    string
	claimed    bool
	tags       []string
	claimedAt  time.Time
	finishedAt time.Time
	lastSeen   time.Time
	mver, cver string
	jobs       []*job
	queue      []*command // every device command in delivery order, resolved ones included
	uploads    []Upload
}

type job struct {
	id, desc string
	req      Request
	created  time.Time
	updated  time.Time
	cmds     []*command
	resp     *JobResponse
}

type command struct {
	wire       proto.Command
	job        *job
	role       role
	status     Status
	deliveries int
	resp       *proto.Response
	reason     string
	updated    time.Time
}

func (c *command) open() bool { return c.status == StatusPending || c.status == StatusInProgress }

func (j *job) status() Status {
	sent, done := false, true
	for _, c := range j.cmds {
		switch c.status {
		case StatusFailed:
			return StatusFailed
		case StatusSucceeded:
			sent = true
		case StatusInProgress:
			sent, done = true, false
		default:
			done = false
		}
	}
	switch {
	case done:
		return StatusSucceeded
	case sent:
		return StatusInProgress
	}
	return StatusPending
}

// jobAlias has Job's fields without its JSON methods.
type jobAlias Job

// MarshalJSON writes the job with its response keyed by the request type.
func (j Job) MarshalJSON() ([]byte, error) {
	v := struct {
		jobAlias
		Response map[string]*JobResponse `json:"response,omitempty"`
	}{jobAlias: jobAlias(j)}
	if j.Response != nil {
		v.Response = map[string]*JobResponse{j.Request.Type(): j.Response}
	}
	return json.Marshal(v)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (j *Job) UnmarshalJSON(data []byte) error {
	var v struct {
		jobAlias
		Response map[string]*JobResponse `json:"response,omitempty"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	*j = Job(v.jobAlias)
	j.Response = nil
	for _, r := range v.Response {
		j.Response = r
	}
	return nil
}

func (j *job) view(devID string) Job {
	v := Job{ID: j.id, DeviceID: devID, Description: j.desc, Request: j.req, Status: j.status(),
		CreatedAt: j.created, UpdatedAt: j.updated, CommandIDs: []string{}}
	if j.resp != nil {
		r := *j.resp
		v.Response = &r
	}
	for _, c := range j.cmds {
		v.CommandIDs = append(v.CommandIDs, c.wire.ID)
	}
	return v
}

func (c *command) view() Command {
	v := Command{Command: cloneCommand(c.wire), JobID: c.job.id, Status: c.status, Deliveries: c.deliveries,
		Reason: c.reason, UpdatedAt: c.updated}
	if c.resp != nil {
		r := *c.resp
		v.Response = &r
	}
	return v
}

func cloneCommand(c proto.Command) proto.Command {
	c.IgnoreCMEErrors = slices.Clone(c.IgnoreCMEErrors)
	c.Properties = slices.Clone(c.Properties)
	return c
}

func (d *device) view() Device {
	v := Device{ID: d.id, DeviceType: d.devType, Claimed: d.claimed, OwnershipStatus: "UNCLAIMED",
		Status: "READY", Tags: append([]string{}, d.tags...), ModemVersion: d.mver, ClientVersion: d.cver}
	if d.claimed {
		v.OwnershipStatus = "IDENTIFIED"
		t := d.claimedAt
		v.ClaimedAt = &t
	}
	if !d.finishedAt.IsZero() {
		t := d.finishedAt
		v.ProvisionedAt, v.Status = &t, "PROVISIONED"
	}
	if !d.lastSeen.IsZero() {
		t := d.lastSeen
		v.LastSeenAt = &t
	}
	if d.cloudKey != nil {
		if der, err := x509.MarshalPKIXPublicKey(d.cloudKey); err == nil {
			v.CloudAccessKey = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
		}
	}
	return v
}

func (d *device) openJobs() int {
	n := 0
	for _, j := range d.jobs {
		if st := j.status(); st == StatusPending || st == StatusInProgress {
			n++
		}
	}
	return n
}

// RegisterDevice tells the simulator a device's identity public key, as Nordic's identity
// database tells the real service. Registering again replaces the key and keeps the rest.
// uuid is the 8-4-4-4-12 form in either case. Safe for concurrent use.
func (s *Server) RegisterDevice(uuid string, pub *ecdsa.PublicKey) error {
	id, err := normUUID(uuid)
	if err != nil {
		return err
	}
	if pub == nil || pub.Curve != elliptic.P256() {
		return fmt.Errorf("simcloud: register %s: want a P-256 public key: %w", id, ErrInvalid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.devices[id]; d != nil {
		d.pub = pub
		return nil
	}
	s.devices[id] = &device{id: id, pub: pub, tags: []string{}}
	return nil
}

// RegisterDevicePEM is RegisterDevice with a PEM "PUBLIC KEY" block, the form the simulated
// modem exports.
func (s *Server) RegisterDevicePEM(uuid string, pubPEM []byte) error {
	pub, err := attest.ParsePublicKeyPEM(pubPEM)
	if err != nil {
		return fmt.Errorf("simcloud: register %s: %w: %w", uuid, ErrInvalid, err)
	}
	return s.RegisterDevice(uuid, pub)
}

// Claim claims a registered device by its attestation token ("<attest>.<cose>", the
// %ATTESTTOKEN answer without quotes). The token's COSE signature must verify against the
// registered identity key. Errors: ErrInvalid (malformed or badly signed token),
// ErrUnknownDevice, ErrAlreadyClaimed.
func (s *Server) Claim(token string, tags ...string) (Device, error) {
	return s.claim(token, tags, false)
}

func (s *Server) claim(token string, tags []string, dryRun bool) (Device, error) {
	token = strings.Trim(strings.TrimSpace(token), `"`)
	ident, err := attest.ParseToken(token)
	if err != nil {
		return Device{}, fmt.Errorf("simcloud: claim: %w: %w", ErrInvalid, err)
	}
	id := attest.FormatUUID(ident.DeviceUUID)
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.devices[id]
	if d == nil {
		return Device{}, fmt.Errorf("simcloud: claim %s: %w", id, ErrUnknownDevice)
	}
	if _, err := attest.VerifyToken(token, d.pub); err != nil {
		return Device{}, fmt.Errorf("simcloud: claim %s: token not signed by the device: %w: %w", id, ErrInvalid, err)
	}
	if d.claimed {
		return Device{}, fmt.Errorf("simcloud: claim %s: %w", id, ErrAlreadyClaimed)
	}
	if dryRun {
		return d.view(), nil
	}
	d.claimed, d.claimedAt, d.devType = true, s.now(), deviceTypeName(ident.DeviceType)
	d.tags = splitTags(tags)
	s.applyRulesLocked(d)
	return d.view(), nil
}

// splitTags splits comma-separated tags, as Nordic's claim tool sends its whole
// --provisioning-tags value as one list element, and drops blanks and repeats.
func splitTags(in []string) []string {
	out := []string{}
	for _, t := range in {
		for part := range strings.SplitSeq(t, ",") {
			if part = strings.TrimSpace(part); part != "" && !slices.Contains(out, part) {
				out = append(out, part)
			}
		}
	}
	return out
}

// Unclaim releases a claimed device and discards its queue (recorded uploads are kept).
func (s *Server) Unclaim(uuid string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.deviceLocked(uuid, true)
	if err != nil {
		return err
	}
	d.claimed, d.claimedAt, d.finishedAt = false, time.Time{}, time.Time{}
	d.jobs, d.queue, d.cloudKey, d.tags = nil, nil, nil, []string{}
	return nil
}

// Device returns one device's record.
func (s *Server) Device(uuid string) (Device, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.deviceLocked(uuid, false)
	if err != nil {
		return Device{}, err
	}
	return d.view(), nil
}

// Devices lists every registered device, sorted by UUID.
func (s *Server) Devices() []Device {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Device, 0, len(s.devices))
	for _, d := range s.devices {
		out = append(out, d.view())
	}
	slices.SortFunc(out, func(a, b Device) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Enqueue queues owner requests for a claimed device, in order, all or none. Each request
// becomes a Job with a fresh UUID; its device commands get ids "<job id>.e[.x]".
// Errors: ErrUnknownDevice, ErrNotClaimed, ErrInvalid, ErrQueueFull.
func (s *Server) Enqueue(uuid string, reqs ...Request) ([]Job, error) {
	return s.enqueue(uuid, "", reqs)
}

func (s *Server) enqueue(uuid, desc string, reqs []Request) ([]Job, error) {
	plans := make([][]planned, len(reqs))
	for i, r := range reqs {
		p, err := r.plan()
		if err != nil {
			return nil, err
		}
		plans[i] = p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.deviceLocked(uuid, true)
	if err != nil {
		return nil, err
	}
	descs := make([]string, len(reqs))
	for i := range descs {
		descs[i] = desc
	}
	return s.enqueueLocked(d, descs, reqs, plans)
}

// enqueueLocked queues planned requests, all or none, within Config.MaxJobs open jobs.
func (s *Server) enqueueLocked(d *device, descs []string, reqs []Request, plans [][]planned) ([]Job, error) {
	if n := d.openJobs() + len(reqs); n > s.cfg.MaxJobs {
		return nil, fmt.Errorf("simcloud: enqueue %s: %d open, limit %d: %w", d.id, n, s.cfg.MaxJobs, ErrQueueFull)
	}
	now := s.now()
	out := make([]Job, 0, len(reqs))
	for i, r := range reqs {
		j := &job{id: newUUID(), desc: descs[i], req: r, created: now, updated: now}
		for _, p := range plans[i] {
			c := &command{wire: p.cmd, job: j, role: p.role, status: StatusPending, updated: now}
			c.wire.ID = j.id + "." + p.suffix
			j.cmds = append(j.cmds, c)
			d.queue = append(d.queue, c)
		}
		d.jobs = append(d.jobs, j)
		out = append(out, j.view(d.id))
	}
	return out, nil
}

// Jobs lists a device's jobs in queue order.
func (s *Server) Jobs(uuid string) ([]Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.deviceLocked(uuid, false)
	if err != nil {
		return nil, err
	}
	out := make([]Job, 0, len(d.jobs))
	for _, j := range d.jobs {
		out = append(out, j.view(d.id))
	}
	return out, nil
}

// Job returns one job of a device (ErrUnknownJob if there is none with that id).
func (s *Server) Job(uuid, jobID string) (Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.deviceLocked(uuid, false)
	if err != nil {
		return Job{}, err
	}
	for _, j := range d.jobs {
		if j.id == jobID {
			return j.view(d.id), nil
		}
	}
	return Job{}, fmt.Errorf("simcloud: job %s: %w", jobID, ErrUnknownJob)
}

// Discard removes a job that the device has not been sent yet (ErrJobStarted otherwise).
func (s *Server) Discard(uuid, jobID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.deviceLocked(uuid, false)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(d.jobs, func(j *job) bool { return j.id == jobID })
	if i < 0 {
		return fmt.Errorf("simcloud: job %s: %w", jobID, ErrUnknownJob)
	}
	j := d.jobs[i]
	if j.status() != StatusPending {
		return fmt.Errorf("simcloud: discard %s: %w", jobID, ErrJobStarted)
	}
	d.jobs = slices.Delete(d.jobs, i, i+1)
	d.queue = slices.DeleteFunc(d.queue, func(c *command) bool { return c.job == j })
	return nil
}

// Commands lists a device's device-level commands in queue order, resolved ones included.
func (s *Server) Commands(uuid string) ([]Command, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.deviceLocked(uuid, false)
	if err != nil {
		return nil, err
	}
	out := make([]Command, 0, len(d.queue))
	for _, c := range d.queue {
		out = append(out, c.view())
	}
	return out, nil
}

// Responses lists every upload the device made, in arrival order, malformed ones included.
func (s *Server) Responses(uuid string) ([]Upload, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.deviceLocked(uuid, false)
	if err != nil {
		return nil, err
	}
	out := make([]Upload, len(d.uploads))
	for i, u := range d.uploads {
		u.Raw = slices.Clone(u.Raw)
		u.Responses = slices.Clone(u.Responses)
		out[i] = u
	}
	return out, nil
}

// deviceLocked looks a device up; with mustBeClaimed it also requires a claim.
func (s *Server) deviceLocked(uuid string, mustBeClaimed bool) (*device, error) {
	id, err := normUUID(uuid)
	if err != nil {
		return nil, err
	}
	d := s.devices[id]
	if d == nil {
		return nil, fmt.Errorf("simcloud: device %s: %w", id, ErrUnknownDevice)
	}
	if mustBeClaimed && !d.claimed {
		return nil, fmt.Errorf("simcloud: device %s: %w", id, ErrNotClaimed)
	}
	return d, nil
}

// fetchParams are the query parameters of a fetch (docs/protocol.md §1.2 / §2.2).
type fetchParams struct {
	after      string
	rxMaxSize  int // 0: not given, no size bound
	txMaxSize  int
	limit      int
	mver, cver string
}

// batchMode says how a fetch answer is built: normally, or deliberately broken by a fault.
type batchMode int

const (
	batchNormal       batchMode = iota
	batchMalformed              // a truncated batch (not valid CBOR)
	batchNonCanonical           // the real batch with an indefinite-length outer array
	batchTooMany                // more commands than the limit
)

// rxTooSmallError means not even the next command fits the client's rxMaxSize.
type rxTooSmallError struct{ need, have int }

func (e *rxTooSmallError) Error() string {
	return fmt.Sprintf("rxMaxSize %d too small: the next command needs %d bytes", e.have, e.need)
}

// fetch builds the next batch for a device and marks its commands delivered. overhead gives
// the transport's bytes around a body of n bytes that also count against rxMaxSize (the HTTP
// status line and headers), and slack the bytes rxMaxSize leaves unused (1 for HTTP, whose
// client needs room for a terminator). An empty result means nothing is queued.
func (s *Server) fetch(uuid string, p fetchParams, mode batchMode, overhead func(int) int, slack int) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.deviceLocked(uuid, true)
	if err != nil {
		return nil, err
	}
	now := s.now()
	d.lastSeen = now
	if p.mver != "" || p.cver != "" {
		d.mver, d.cver = p.mver, p.cver
	}
	cands := d.candidates(p.after)
	if len(cands) == 0 {
		return nil, nil
	}
	switch mode {
	case batchTooMany:
		return tooManyBatch(cands, p.limit)
	case batchMalformed:
		b, err := encodeWire(cands[:1])
		if err != nil {
			return nil, err
		}
		return b[:len(b)/2+1], nil // cut inside the first command: never valid CBOR
	}
	budget := 0
	if p.rxMaxSize > 0 {
		budget = p.rxMaxSize - slack
	}
	var body []byte
	n := 0
	for k := 1; k <= len(cands) && k <= p.limit; k++ {
		enc, err := encodeWire(cands[:k])
		if err != nil {
			return nil, err
		}
		if budget > 0 && len(enc)+overhead(len(enc)) > budget {
			if k == 1 {
				return nil, &rxTooSmallError{need: len(enc) + overhead(len(enc)) + slack, have: p.rxMaxSize}
			}
			break
		}
		body, n = enc, k
		// The commands after a client-certificate %KEYGEN wait for the certificate signed
		// from its answer, so the batch ends there.
		if cands[k-1].role == roleCertCSR {
			break
		}
	}
	if mode == batchNonCanonical {
		// A real-looking batch that a canonical decoder must refuse; no state changes.
		return indefinite(body), nil
	}
	for _, c := range cands[:n] {
		c.status, c.updated = StatusInProgress, now
		c.deliveries++
		c.job.updated = now
	}
	return body, nil
}

// candidates returns the open commands after the cursor, in queue order. An unknown or empty
// cursor starts at the beginning. The cursor never passes an open client-certificate
// %KEYGEN: what follows it depends on its answer, so a client that skipped its upload gets
// it again.
func (d *device) candidates(after string) []*command {
	start := 0
	if after != "" {
		if i := slices.IndexFunc(d.queue, func(c *command) bool { return c.wire.ID == after }); i >= 0 {
			start = i + 1
		}
	}
	for i := range start {
		if c := d.queue[i]; c.role == roleCertCSR && c.open() {
			start = i
			break
		}
	}
	var out []*command
	for _, c := range d.queue[start:] {
		if c.open() {
			out = append(out, c)
		}
	}
	return out
}

func encodeWire(cs []*command) ([]byte, error) {
	wires := make([]proto.Command, len(cs))
	for i, c := range cs {
		wires[i] = c.wire
	}
	b, err := proto.EncodeCommands(wires)
	if err != nil {
		return nil, fmt.Errorf("simcloud: encode batch: %w", err)
	}
	return b, nil
}

// tooManyBatch returns limit+1 commands: the queued ones, padded with FINISHED commands
// whose ids say they are filler.
func tooManyBatch(cands []*command, limit int) ([]byte, error) {
	wires := make([]proto.Command, 0, limit+1)
	for _, c := range cands {
		if len(wires) == limit+1 {
			break
		}
		wires = append(wires, c.wire)
	}
	for i := 0; len(wires) < limit+1; i++ {
		wires = append(wires, proto.Command{ID: fmt.Sprintf("sim-filler.%d", i), Kind: proto.KindFinished})
	}
	b, err := proto.EncodeCommands(wires)
	if err != nil {
		return nil, fmt.Errorf("simcloud: encode batch: %w", err)
	}
	return b, nil
}

// indefinite rewrites a canonical batch so that its outer array has indefinite length
// (0x9f … 0xff): the same data, which a strict device decoder rejects (docs/protocol.md §3.2).
func indefinite(b []byte) []byte {
	if len(b) == 0 {
		return b
	}
	head := 1
	switch b[0] & 0x1f { // additional information of the array head
	case 24:
		head = 2
	case 25:
		head = 3
	case 26:
		head = 5
	}
	out := append([]byte{0x9f}, b[head:]...)
	return append(out, 0xff)
}

// upload records a response batch and resolves the commands it answers. A batch that does
// not decode is recorded and refused with ErrInvalid.
func (s *Server) upload(uuid, transport string, raw []byte) error {
	rs, derr := proto.DecodeResponses(raw, maxUploadResponses)
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := s.deviceLocked(uuid, true)
	if err != nil {
		return err
	}
	now := s.now()
	d.lastSeen = now
	rec := Upload{Time: now, Transport: transport, Raw: slices.Clone(raw), Responses: rs}
	if derr != nil {
		rec.Responses, rec.Err = nil, derr.Error()
		d.uploads = append(d.uploads, rec)
		return fmt.Errorf("simcloud: upload from %s: %w: %w", d.id, ErrInvalid, derr)
	}
	d.uploads = append(d.uploads, rec)
	for _, r := range rs {
		s.resolveLocked(d, r, now)
	}
	return nil
}

// resolveLocked applies one response. Responses to unknown or already resolved commands are
// ignored (they stay in the upload record): a client may repeat an upload.
func (s *Server) resolveLocked(d *device, r proto.Response, now time.Time) {
	i := slices.IndexFunc(d.queue, func(c *command) bool { return c.wire.ID == r.ID })
	if i < 0 || !d.queue[i].open() {
		return
	}
	c := d.queue[i]
	resp := r
	c.resp, c.updated, c.job.updated = &resp, now, now
	if r.Kind == proto.KindError {
		c.status = StatusFailed
		c.job.resp = &JobResponse{Message: errorMessage(c.wire.Kind, r), CMEError: r.CMEError}
		d.dropAfter(i, now)
		return
	}
	c.status = StatusSucceeded
	fail := func(err error) {
		c.status, c.reason = StatusFailed, err.Error()
		c.job.resp = &JobResponse{Message: err.Error()}
		d.dropAfter(i, now)
	}
	switch c.role {
	case roleCertCSR:
		if err := s.issueLocked(d, i, r.Message, now); err != nil {
			fail(err)
		}
	case roleMain:
		resp, err := keygenResponse(c.wire, r.Message)
		if err == nil && c.job.req.CloudAccessKeyGeneration != nil {
			// The service trusts the key only when the device identity signed it.
			var k *attest.Keygen
			if k, err = attest.VerifyKeygen(r.Message, d.pub); err == nil {
				d.cloudKey = k.PublicKey
			} else {
				err = fmt.Errorf("cloud access key: keygen answer: %w", err)
			}
		}
		if err != nil {
			fail(err)
			return
		}
		c.job.resp = resp
	}
	if c.wire.Kind == proto.KindFinished {
		d.finishedAt = now
	}
}

// dropAfter fails every open command after queue index i (docs/protocol.md §4.1: the service
// drops the failed command and every later one).
func (d *device) dropAfter(i int, now time.Time) {
	failed := d.queue[i].wire.ID
	for _, c := range d.queue[i+1:] {
		if c.open() {
			c.status, c.reason, c.updated = StatusFailed, "dropped: "+failed+" failed", now
			c.job.updated = now
			if c.job.resp == nil {
				c.job.resp = &JobResponse{Message: c.reason}
			}
		}
	}
}

// issueLocked signs the CSR a client-certificate %KEYGEN returned and queues the %CMNG write
// of the certificate right after it.
func (s *Server) issueLocked(d *device, i int, answer string, now time.Time) error {
	c := d.queue[i]
	k, err := attest.VerifyKeygen(answer, d.pub)
	if err != nil {
		return fmt.Errorf("client certificate: keygen answer: %w", err)
	}
	if k.CSR == nil {
		return errors.New("client certificate: keygen answer holds no csr")
	}
	_, certPEM, err := s.ca.signCSR(k.CSR)
	if err != nil {
		return fmt.Errorf("client certificate: %w", err)
	}
	tag := secTag(c.job.req.ClientCertificate.SecTag)
	save := &command{
		wire: proto.Command{ID: c.job.id + ".e.c", Kind: proto.KindAT, SetCommand: "%CMNG",
			Parameters: cmngWrite(tag, 1, string(certPEM))},
		job: c.job, role: roleCertSave, status: StatusPending, updated: now,
	}
	c.job.cmds = append(c.job.cmds, save)
	d.queue = slices.Insert(d.queue, i+1, save)
	c.job.resp = &JobResponse{CSR: keygenText(answer), Certificate: string(certPEM)}
	return nil
}

// keygenResponse turns a command's success text into a job response. A %KEYGEN answer is
// passed on verbatim in CSR (and its public key in PublicKey); an answer that does not
// decode fails a key-generating job.
func keygenResponse(cmd proto.Command, msg string) (*JobResponse, error) {
	if cmd.Kind != proto.KindAT || cmd.SetCommand != "%KEYGEN" {
		return &JobResponse{Message: msg}, nil
	}
	k, err := attest.DecodeKeygen(msg)
	if err != nil {
		return nil, fmt.Errorf("keygen answer: %w", err)
	}
	resp := &JobResponse{CSR: keygenText(msg)}
	if der, err := x509.MarshalPKIXPublicKey(k.PublicKey); err == nil {
		resp.PublicKey = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	return resp, nil
}

// keygenText returns the "<der>.<cose>" text of a %KEYGEN answer: the quoted value of its
// `%KEYGEN: "…"` line, or the whole trimmed message when there is no such line.
func keygenText(msg string) string {
	s := strings.TrimSpace(msg)
	if i := strings.Index(s, "%KEYGEN:"); i >= 0 {
		s = strings.TrimSpace(s[i+len("%KEYGEN:"):])
		if nl := strings.IndexAny(s, "\r\n"); nl >= 0 {
			s = strings.TrimSpace(s[:nl])
		}
	}
	return strings.Trim(s, `"`)
}

// errorMessage says why a command failed, naming its CME code when it has one. A config
// command's code is an errno, not a CME code.
func errorMessage(kind proto.CommandKind, r proto.Response) string {
	msg := strings.TrimSpace(r.Message)
	if r.CMEError == 0 || kind != proto.KindAT {
		if msg == "" {
			return "the device reported an error"
		}
		return msg
	}
	code := strconv.FormatUint(r.CMEError, 10)
	if strings.Contains(msg, code) {
		return msg
	}
	if msg == "" {
		return "+CME ERROR: " + code
	}
	return "+CME ERROR: " + code + ": " + msg
}

func normUUID(s string) (string, error) {
	u, err := attest.ParseUUID(strings.TrimSpace(s))
	if err != nil {
		return "", fmt.Errorf("simcloud: device id %q: %w", s, ErrInvalid)
	}
	return attest.FormatUUID(u), nil
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil { // crypto/rand does not fail on supported platforms
		panic(err)
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return attest.FormatUUID(u)
}

func deviceTypeName(t int) string {
	switch t {
	case 1, 2, attest.DeviceTypeNRF9160:
		return "nrf9160"
	case attest.DeviceTypeNRF9161:
		return "nrf9161"
	case attest.DeviceTypeNRF9131:
		return "nrf9131"
	case attest.DeviceTypeNRF9151:
		return "nrf9151"
	}
	return fmt.Sprintf("type-%d", t)
}
