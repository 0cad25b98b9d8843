package simcloud

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"slices"
	"strings"
	"time"
)

// maxRuleCommands bounds a provisioning rule's commands: a rule can never queue more than a
// device may hold.
const maxRuleCommands = 20

// ProvisioningTag is a named tag an owner creates so that claims and rules can refer to it.
type ProvisioningTag struct {
	Tag         string    `json:"tag"`
	Description string    `json:"description"`
	CreatedAt   time.Time `json:"createdAt"`
}

// RuleCommand is one command of a provisioning rule: the same request a device's own
// provisioning command takes.
type RuleCommand struct {
	Description string  `json:"description,omitempty"`
	Request     Request `json:"request"`
}

// Rule is a provisioning rule: when a device is claimed with one of Tags and the rule is
// Active, its Commands are queued for that device, in order (auto-onboarding).
type Rule struct {
	ID          string        `json:"id"`
	Name        string        `json:"name"`
	Description string        `json:"description"`
	Active      bool          `json:"active"`
	Commands    []RuleCommand `json:"commands"`
	Tags        []string      `json:"tags"`
	CreatedAt   time.Time     `json:"createdAt"`
}

type rule struct {
	Rule
	plans [][]planned
}

func (r *rule) view() Rule {
	v := r.Rule
	v.Commands = slices.Clone(r.Commands)
	v.Tags = slices.Clone(r.Tags)
	return v
}

func (r *rule) matches(tags []string) bool {
	return r.Active && slices.ContainsFunc(tags, func(t string) bool { return slices.Contains(r.Tags, t) })
}

// CreateTag adds a provisioning tag. Errors: ErrInvalid (empty or malformed name),
// ErrAlreadyExists.
func (s *Server) CreateTag(tag, description string) (ProvisioningTag, error) {
	if err := checkTag(tag); err != nil {
		return ProvisioningTag{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.ContainsFunc(s.tags, func(t ProvisioningTag) bool { return t.Tag == tag }) {
		return ProvisioningTag{}, fmt.Errorf("simcloud: provisioning tag %q: %w", tag, ErrAlreadyExists)
	}
	t := ProvisioningTag{Tag: tag, Description: description, CreatedAt: s.now()}
	s.tags = append(s.tags, t)
	return t, nil
}

// Tags lists the provisioning tags in creation order.
func (s *Server) Tags() []ProvisioningTag {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.tags)
}

func checkTag(tag string) error {
	if strings.TrimSpace(tag) == "" || strings.ContainsAny(tag, ",\r\n\"") {
		return fmt.Errorf("simcloud: provisioning tag %q: want a non-empty name without commas, quotes or line breaks: %w", tag, ErrInvalid)
	}
	return nil
}

// CreateRule adds a provisioning rule. Every command is validated as a device's provisioning
// command is. It applies to devices claimed from now on. Errors: ErrInvalid.
func (s *Server) CreateRule(r Rule) (Rule, error) {
	if strings.TrimSpace(r.Name) == "" {
		return Rule{}, fmt.Errorf("simcloud: provisioning rule: empty name: %w", ErrInvalid)
	}
	if n := len(r.Commands); n == 0 || n > maxRuleCommands {
		return Rule{}, fmt.Errorf("simcloud: provisioning rule %q: %d commands, want 1 to %d: %w", r.Name, n, maxRuleCommands, ErrInvalid)
	}
	if len(r.Tags) == 0 {
		return Rule{}, fmt.Errorf("simcloud: provisioning rule %q: no tags: %w", r.Name, ErrInvalid)
	}
	for _, t := range r.Tags {
		if err := checkTag(t); err != nil {
			return Rule{}, err
		}
	}
	in := &rule{Rule: r}
	for i, c := range r.Commands {
		p, err := c.Request.plan()
		if err != nil {
			return Rule{}, fmt.Errorf("simcloud: provisioning rule %q: command %d: %w", r.Name, i+1, err)
		}
		in.plans = append(in.plans, p)
	}
	in.Commands, in.Tags = slices.Clone(r.Commands), slices.Clone(r.Tags)
	s.mu.Lock()
	defer s.mu.Unlock()
	in.ID, in.CreatedAt = newUUID(), s.now()
	s.rules = append(s.rules, in)
	return in.view(), nil
}

// Rules lists the provisioning rules in creation order.
func (s *Server) Rules() []Rule {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Rule, 0, len(s.rules))
	for _, r := range s.rules {
		out = append(out, r.view())
	}
	return out
}

// DeleteRule removes a provisioning rule (ErrUnknownRule if there is none with that id).
// Commands it already queued stay.
func (s *Server) DeleteRule(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.rules, func(r *rule) bool { return r.ID == id })
	if i < 0 {
		return fmt.Errorf("simcloud: provisioning rule %s: %w", id, ErrUnknownRule)
	}
	s.rules = slices.Delete(s.rules, i, i+1)
	return nil
}

// applyRulesLocked queues, for a device just claimed, the commands of every active rule that
// matches one of its tags, rule by rule in creation order. A rule whose commands would pass
// Config.MaxJobs is skipped whole and logged.
func (s *Server) applyRulesLocked(d *device) {
	for _, r := range s.rules {
		if !r.matches(d.tags) {
			continue
		}
		descs := make([]string, len(r.Commands))
		reqs := make([]Request, len(r.Commands))
		for i, c := range r.Commands {
			descs[i], reqs[i] = c.Description, c.Request
			if descs[i] == "" {
				descs[i] = "rule " + r.Name
			}
		}
		if _, err := s.enqueueLocked(d, descs, reqs, r.plans); err != nil {
			s.logf("simcloud: rule %q not applied to %s: %v", r.Name, d.id, err)
		}
	}
}

// maxBulkRows is the most rows one CSV bulk claim may carry, as Nordic's client sends them.
const maxBulkRows = 1000

// BulkClaim is the answer to a CSV bulk claim.
type BulkClaim struct {
	// ClaimedIDs are the UUIDs of the devices claimed, in row order.
	ClaimedIDs []string `json:"claimedIds"`
	// Failed lists the rows that were not claimed and why.
	Failed []BulkFailure `json:"failed"`
	// Code and Message are set when no row was claimed.
	Code    int    `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// BulkFailure is one row of a bulk claim that failed; Row counts from 1.
type BulkFailure struct {
	Row    int    `json:"row"`
	Reason string `json:"reason"`
}

// ClaimCSV claims devices from CSV rows `"<claim token>"` or `"<claim token>","<tag,tag>"`,
// each row on its own: a row that fails is reported and the others go on. Rules apply as for
// a single claim. Errors (ErrInvalid) only for a CSV that does not parse, has no rows, or has
// more than 1000.
func (s *Server) ClaimCSV(body []byte) (BulkClaim, error) {
	rd := csv.NewReader(bytes.NewReader(body))
	rd.FieldsPerRecord = -1
	rows, err := rd.ReadAll()
	if err != nil {
		return BulkClaim{}, fmt.Errorf("simcloud: bulk claim: csv: %w: %w", ErrInvalid, err)
	}
	switch {
	case len(rows) == 0:
		return BulkClaim{}, fmt.Errorf("simcloud: bulk claim: no rows: %w", ErrInvalid)
	case len(rows) > maxBulkRows:
		return BulkClaim{}, fmt.Errorf("simcloud: bulk claim: %d rows, at most %d: %w", len(rows), maxBulkRows, ErrInvalid)
	}
	res := BulkClaim{ClaimedIDs: []string{}, Failed: []BulkFailure{}}
	for i, row := range rows {
		if len(row) < 1 || len(row) > 2 {
			res.Failed = append(res.Failed, BulkFailure{Row: i + 1,
				Reason: fmt.Sprintf("want \"<claim token>\" or \"<claim token>\",\"<tags>\", got %d fields", len(row))})
			continue
		}
		if strings.TrimSpace(row[0]) == "" {
			res.Failed = append(res.Failed, BulkFailure{Row: i + 1, Reason: "empty claim token"})
			continue
		}
		var tags []string
		if len(row) == 2 {
			tags = []string{row[1]}
		}
		d, err := s.claim(row[0], tags, false)
		if err != nil {
			res.Failed = append(res.Failed, BulkFailure{Row: i + 1, Reason: err.Error()})
			continue
		}
		res.ClaimedIDs = append(res.ClaimedIDs, d.ID)
	}
	return res, nil
}
