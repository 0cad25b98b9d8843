package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/provisiond/provisiond/internal/proto"
	"github.com/provisiond/provisiond/internal/testbed"
)

type fakeLookup struct {
	cmds   map[string]proto.Command
	upload []proto.Response
	cert   bool
}

func (f *fakeLookup) command(id string) (proto.Command, bool) { c, ok := f.cmds[id]; return c, ok }
func (f *fakeLookup) lastUpload() ([]proto.Response, bool)    { return f.upload, f.upload != nil }
func (f *fakeLookup) certificateIssued() bool                 { return f.cert }

func TestRendererLines(t *testing.T) {
	look := &fakeLookup{cmds: map[string]proto.Command{
		"j.e.r": {ID: "j.e.r", Kind: proto.KindAT, SetCommand: "%CMNG", Parameters: "3,16842753,1"},
		"j.e.c": {ID: "j.e.c", Kind: proto.KindAT, SetCommand: "%CMNG",
			Parameters: "0,16842753,1,\"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n\""},
		"k.e": {ID: "k.e", Kind: proto.KindConfig, Properties: []proto.Property{{Key: "provisioning/interval-sec", Value: "3600"}}},
	}}
	tests := []struct {
		name   string
		line   string
		upload []proto.Response
		cert   bool
		want   []string // substrings of the output, in order; nil means no output
		tally  tally
	}{
		{name: "event start", line: `{"level":"info","msg":"provisioning event","event":"START","attempt":1}`,
			want: []string{"▸ START attempt 1"}, tally: tally{events: []string{"START"}}},
		{name: "failure event with reason", line: `{"level":"warn","msg":"provisioning event","event":"FAILED_WRONG_ROOT_CA","reason":"x509"}`,
			want: []string{"✗ FAILED_WRONG_ROOT_CA: x509"}, tally: tally{events: []string{"FAILED_WRONG_ROOT_CA"}}},
		{name: "AT command from the service's queue", line: `{"level":"info","msg":"command done","correlation_id":"j.e.r","command":"%CMNG"}`,
			want: []string{"→ AT%CMNG=3,16842753,1  ok"}, tally: tally{executed: 1}},
		{name: "certificate body abbreviated", line: `{"level":"info","msg":"command done","correlation_id":"j.e.c","command":"%CMNG"}`,
			want: []string{`AT%CMNG=0,16842753,1,"<certificate, 59 bytes>"  ok`}, tally: tally{executed: 1}},
		{name: "unknown id falls back to the logged name", line: `{"level":"warn","msg":"command failed","correlation_id":"z","command":"%XY","cme_error":518}`,
			want: []string{"✗ AT%XY  +CME ERROR: 518"}, tally: tally{executed: 1, failed: 1}},
		{name: "config", line: `{"level":"info","msg":"config written","correlation_id":"k.e","pairs":1}`,
			want: []string{"config command: provisioning/interval-sec=3600  stored"}, tally: tally{executed: 1}},
		{name: "upload with keygen and signed certificate", line: `{"level":"info","msg":"results uploaded","responses":2}`,
			upload: []proto.Response{
				{ID: "a", Kind: proto.KindATResponse, Message: "+CME ERROR: 513\r\n"},
				{ID: "b", Kind: proto.KindATResponse, Message: "%KEYGEN: \"abcd.ef\"\r\nOK\r\n"},
			}, cert: true,
			want:  []string{`2 response(s): +CME ERROR: 513 (in the ignore list); %KEYGEN: "<CSR, 4 chars>.<COSE, 2 chars>" OK`, "CSR from %KEYGEN verified"},
			tally: tally{uploads: 1}},
		{name: "other warning shown", line: `{"level":"warn","msg":"upload failed; results kept for the next attempt","error":"503"}`,
			want: []string{"! upload failed; results kept for the next attempt: 503"}, tally: tally{warnings: []string{"upload failed; results kept for the next attempt: 503"}}},
		{name: "info noise hidden", line: `{"level":"info","msg":"provisiond started"}`},
		{name: "plain stderr line", line: "provisiond: FAILED: 1 command(s) failed", want: []string{"! provisiond: FAILED: 1 command(s) failed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			look.upload, look.cert = tt.upload, tt.cert
			t0 := time.Unix(100, 0)
			r := &renderer{out: &out, look: look, start: t0, now: func() time.Time { return t0.Add(1500 * time.Millisecond) }}
			r.handle(testbed.ParseLogLine(tt.line))
			got := out.String()
			if tt.want == nil && got != "" {
				t.Errorf("got output %q, want none", got)
			}
			rest := got
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("output %q: missing %q", got, w)
				}
				rest = rest[i+len(w):]
			}
			if tt.want != nil && !strings.HasPrefix(got, "   1.50s ") {
				t.Errorf("output %q: want the elapsed time first", got)
			}
			snap := r.snapshot()
			if snap.executed != tt.tally.executed || snap.failed != tt.tally.failed || snap.uploads != tt.tally.uploads ||
				strings.Join(snap.events, ",") != strings.Join(tt.tally.events, ",") ||
				strings.Join(snap.warnings, ",") != strings.Join(tt.tally.warnings, ",") {
				t.Errorf("tally: got %+v, want %+v", snap, tt.tally)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    options
		wantErr bool
	}{
		{name: "defaults", want: options{transport: "http", latency: 20 * time.Millisecond, baud: 115200, listen: "127.0.0.1:9273"}},
		{name: "coap and binary", args: []string{"--transport", "coap", "--provisiond", "bin/provisiond", "--latency", "0"},
			want: options{transport: "coap", provisiond: "bin/provisiond", baud: 115200, listen: "127.0.0.1:9273"}},
		{name: "station", args: []string{"--station", "8", "--listen", "127.0.0.1:0"},
			want: options{transport: "http", latency: 20 * time.Millisecond, baud: 115200, station: 8, listen: "127.0.0.1:0"}},
		{name: "station held", args: []string{"--station", "8", "--hold"},
			want: options{transport: "http", latency: 20 * time.Millisecond, baud: 115200, station: 8, listen: "127.0.0.1:9273", hold: true}},
		{name: "hold without a station", args: []string{"--hold"}, wantErr: true},
		{name: "station too large", args: []string{"--station", "65"}, wantErr: true},
		{name: "negative station", args: []string{"--station", "-1"}, wantErr: true},
		{name: "unknown transport", args: []string{"--transport", "mqtt"}, wantErr: true},
		{name: "stray argument", args: []string{"now"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args, io.Discard)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err: got %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	if _, err := parseFlags([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: got %v, want flag.ErrHelp", err)
	}
}
