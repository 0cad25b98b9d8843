package simcloud

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func TestOwnerClaim(t *testing.T) {
	s := startServer(t, Config{})
	c := httpClient(t, s)
	key := DefaultAPIKey
	dev := newTestDevice(t)
	other := newTestDevice(t)
	if err := s.RegisterDevice(dev.uuid, &dev.key.PublicKey); err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterDevice(other.uuid, &other.key.PublicKey); err != nil {
		t.Fatal(err)
	}
	// A token for dev's UUID signed by another key.
	forged := testDevice{key: other.key, raw: dev.raw, uuid: dev.uuid}

	tests := []struct {
		name   string
		path   string
		key    string
		body   any
		status int
	}{
		{name: "wrong api key", path: "/v1/claimed-devices", key: "nope", body: map[string]any{"claimToken": dev.token(t)}, status: 401},
		{name: "not JSON", path: "/v1/claimed-devices", key: key, body: []byte("claim"), status: 400},
		{name: "unknown field", path: "/v1/claimed-devices", key: key, body: map[string]any{"token": dev.token(t)}, status: 400},
		{name: "malformed token", path: "/v1/claimed-devices", key: key, body: map[string]any{"claimToken": "abc"}, status: 400},
		{name: "forged token", path: "/v1/claimed-devices", key: key, body: map[string]any{"claimToken": forged.token(t)}, status: 400},
		{name: "unregistered device", path: "/v1/claimed-devices", key: key, body: map[string]any{"claimToken": newTestDevice(t).token(t)}, status: 404},
		{name: "dry run", path: "/v1/claimed-devices?dryrun=true", key: key, body: map[string]any{"claimToken": dev.token(t)}, status: 202},
		{name: "claim", path: "/v1/claimed-devices", key: key, body: map[string]any{"claimToken": `"` + dev.token(t) + `"`, "tags": []string{"a"}}, status: 201},
		{name: "second claim", path: "/v1/claimed-devices", key: key, body: map[string]any{"claimToken": dev.token(t)}, status: 409},
		{name: "dry run of a claimed device", path: "/v1/claimed-devices?dryrun=true", key: key, body: map[string]any{"claimToken": dev.token(t)}, status: 409},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if st := owner(t, s, c, "POST", tc.path, tc.key, tc.body, nil); st != tc.status {
				t.Errorf("status = %d, want %d", st, tc.status)
			}
		})
	}
	var l struct {
		Items []Device `json:"items"`
		Total int      `json:"total"`
	}
	if st := owner(t, s, c, "GET", "/v1/claimed-devices", key, nil, &l); st != 200 || l.Total != 1 || l.Items[0].ID != dev.uuid ||
		l.Items[0].OwnershipStatus != "IDENTIFIED" || len(l.Items[0].Tags) != 1 {
		t.Errorf("claimed devices = %d %+v", st, l)
	}
	if st := owner(t, s, c, "GET", "/v1/sim/devices", key, nil, &l); st != 200 || l.Total != 2 {
		t.Errorf("registered devices = %d %+v", st, l)
	}
	if st := owner(t, s, c, "GET", "/v1/claimed-devices/"+other.uuid, key, nil, nil); st != 404 {
		t.Errorf("unclaimed device get = %d, want 404", st)
	}
	if st := owner(t, s, c, "DELETE", "/v1/claimed-devices/"+dev.uuid, key, nil, nil); st != 204 {
		t.Errorf("unclaim = %d", st)
	}
	if d, err := s.Device(dev.uuid); err != nil || d.Claimed || len(d.Tags) != 0 {
		t.Errorf("unclaimed device %+v %v: want no claim and no tags", d, err)
	}
	if st := owner(t, s, c, "DELETE", "/v1/claimed-devices/"+dev.uuid, key, nil, nil); st != 404 {
		t.Errorf("second unclaim = %d, want 404", st)
	}
	if st := owner(t, s, c, "POST", "/v1/claimed-devices", key, map[string]any{"claimToken": dev.token(t)}, nil); st != 201 {
		t.Errorf("claim after unclaim = %d", st)
	}
}

func TestOwnerJobs(t *testing.T) {
	s := startServer(t, Config{})
	c := httpClient(t, s)
	key := DefaultAPIKey
	dev := claimedDevice(t, s)
	base := "/v1/claimed-devices/" + dev.uuid + "/provisioning"

	create := []struct {
		name   string
		body   string
		status int
	}{
		{name: "at", body: `{"description":"list","request":{"atRequest":{"command":"%CMNG","parameters":"1"}}}`, status: 201},
		{name: "config keeps order", body: `{"request":{"config":{"properties":{"z/b":"1","a/a":2}}}}`, status: 201},
		{name: "finished", body: `{"request":{"finished":{}}}`, status: 201},
		{name: "unknown request type", body: `{"request":{"preSharedKey":{"secTag":1}}}`, status: 400},
		{name: "empty request", body: `{"request":{}}`, status: 400},
		{name: "duplicate property", body: `{"request":{"config":{"properties":{"a":"1","a":"2"}}}}`, status: 400},
		{name: "object property", body: `{"request":{"config":{"properties":{"a":{}}}}}`, status: 400},
	}
	var jobIDs []string
	for _, tc := range create {
		t.Run(tc.name, func(t *testing.T) {
			var out struct{ ID string }
			if st := owner(t, s, c, "POST", base, key, []byte(tc.body), &out); st != tc.status {
				t.Fatalf("status = %d, want %d", st, tc.status)
			}
			if tc.status == 201 {
				jobIDs = append(jobIDs, out.ID)
			}
		})
	}
	var jobs struct {
		Items []Job `json:"items"`
	}
	if st := owner(t, s, c, "GET", base, key, nil, &jobs); st != 200 || len(jobs.Items) != 3 {
		t.Fatalf("jobs = %d %+v", st, jobs)
	}
	if p := jobs.Items[1].Request.Config.Properties; len(p) != 2 || p[0].Key != "z/b" || p[1].Value != "2" {
		t.Errorf("config properties = %+v", p)
	}
	for _, j := range jobs.Items {
		if j.Status != StatusPending || j.DeviceID != dev.uuid {
			t.Errorf("job %+v", j)
		}
	}
	if st := owner(t, s, c, "GET", base+"/nope", key, nil, nil); st != 404 {
		t.Errorf("unknown job = %d", st)
	}
	// Deliver the first job, then discard: the delivered one cannot go, a pending one can.
	h := newHTTPDevice(t, s, dev)
	if st, _ := h.fetch("after=&limit=1"); st != 200 {
		t.Fatal(st)
	}
	var j Job
	if owner(t, s, c, "GET", base+"/"+jobIDs[0], key, nil, &j); j.Status != StatusInProgress {
		t.Errorf("delivered job status %s", j.Status)
	}
	if st := owner(t, s, c, "DELETE", base+"/"+jobIDs[0], key, nil, nil); st != 409 {
		t.Errorf("discard delivered = %d, want 409", st)
	}
	if st := owner(t, s, c, "DELETE", base+"/"+jobIDs[2], key, nil, nil); st != 204 {
		t.Errorf("discard pending = %d, want 204", st)
	}

	var cmds struct {
		Items []json.RawMessage `json:"items"`
	}
	if st := owner(t, s, c, "GET", "/v1/sim/devices/"+dev.uuid+"/commands", key, nil, &cmds); st != 200 || len(cmds.Items) != 2 {
		t.Fatalf("commands = %d %d", st, len(cmds.Items))
	}
	for i, want := range []string{`"command":"%CMNG","parameters":"1"`, `"properties":{"z/b":"1","a/a":"2"}`} {
		if !strings.Contains(string(cmds.Items[i]), want) {
			t.Errorf("command %d JSON %s lacks %s", i, cmds.Items[i], want)
		}
	}
	up := []byte{0x81, 0x83}
	up = append(up, 0x78, byte(len(jobIDs[0]+".e")))
	up = append(up, jobIDs[0]+".e"...)
	up = append(up, 0x18, 0x64, 0x62, 'O', 'K')
	if st := h.upload(up); st != 200 {
		t.Fatal(st)
	}
	var ups struct {
		Items []struct {
			Transport string `json:"transport"`
			CBOR      string `json:"cbor"`
			Responses []struct {
				ID, Type, Message string
			} `json:"responses"`
		} `json:"items"`
	}
	if st := owner(t, s, c, "GET", "/v1/sim/devices/"+dev.uuid+"/responses", key, nil, &ups); st != 200 || len(ups.Items) != 1 ||
		ups.Items[0].Transport != "http" || ups.Items[0].Responses[0].Type != "at_response" || ups.Items[0].Responses[0].Message != "OK" {
		t.Errorf("responses = %d %+v", st, ups)
	}
	if owner(t, s, c, "GET", base+"/"+jobIDs[0], key, nil, &j); j.Status != StatusSucceeded || j.Response == nil || j.Response.Message != "OK" {
		t.Errorf("answered job %+v", j)
	}
}

func TestOwnerSimControls(t *testing.T) {
	s := startServer(t, Config{APIKey: "secret"})
	c := httpClient(t, s)
	dev := newTestDevice(t)
	if st := owner(t, s, c, "PUT", "/v1/sim/devices/"+dev.uuid, "secret", []byte("not a pem"), nil); st != 400 {
		t.Errorf("register garbage = %d, want 400", st)
	}
	if st := owner(t, s, c, "PUT", "/v1/sim/devices/not-a-uuid", "secret", mustPublicPEM(t, dev), nil); st != 400 {
		t.Errorf("register bad uuid = %d, want 400", st)
	}
	if st := owner(t, s, c, "PUT", "/v1/sim/devices/"+dev.uuid, "secret", mustPublicPEM(t, dev), nil); st != 201 {
		t.Errorf("register = %d", st)
	}
	var fl struct {
		Items []Fault `json:"items"`
	}
	if st := owner(t, s, c, "PUT", "/v1/sim/faults", "secret", []byte(`{"items":[{"kind":"busy","count":1,"httpStatus":503}]}`), &fl); st != 200 || len(fl.Items) != 1 {
		t.Errorf("set faults = %d %+v", st, fl)
	}
	if st := owner(t, s, c, "PUT", "/v1/sim/faults", "secret", []byte(`{"items":[{"kind":"nope"}]}`), nil); st != 400 {
		t.Errorf("bad fault = %d, want 400", st)
	}
	if st := owner(t, s, c, "GET", "/v1/sim/faults", "secret", nil, &fl); st != 200 || len(fl.Items) != 1 || fl.Items[0].HTTPStatus != 503 {
		t.Errorf("get faults = %d %+v", st, fl)
	}
	if st := owner(t, s, c, "DELETE", "/v1/sim/faults", "secret", nil, nil); st != 204 || len(s.Faults()) != 0 {
		t.Errorf("clear faults = %d, %d left", st, len(s.Faults()))
	}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", s.HTTPURL()+"/v1/sim/ca", nil)
	req.Header.Set("Authorization", "Bearer secret")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-pem-file" {
		t.Errorf("ca = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}
