package simcloud

import (
	"encoding/json"
	"testing"

	"github.com/provisiond/provisiond/internal/attest"
)

// FuzzUpload feeds arbitrary upload bodies to a device with queued work, then fetches: the
// service must neither panic nor serve a batch it cannot encode.
func FuzzUpload(f *testing.F) {
	s, err := New(Config{StateDir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	key, err := attest.GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	var raw [16]byte
	raw[0] = 1
	uuid := attest.FormatUUID(raw)
	if err := s.RegisterDevice(uuid, &key.PublicKey); err != nil {
		f.Fatal(err)
	}
	tok, err := attest.BuildToken(key, attest.Identity{MsgType: 1, DeviceUUID: raw, DeviceType: 4})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := s.Claim(tok); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{0x9f, 0x9f, 0x61, 0x78, 0x18, 0x66, 0xff, 0xff})
	f.Add([]byte{0x81, 0x84, 0x61, 0x78, 0x18, 0x63, 0x19, 0x02, 0x02, 0x60})
	f.Add([]byte{0x81, 0x83, 0x61, 0x78, 0x18, 0x64, 0x62, 'O', 'K'})
	f.Fuzz(func(t *testing.T, body []byte) {
		if js, _ := s.Jobs(uuid); len(js) > 10 {
			s.Unclaim(uuid)
			s.Claim(tok)
		}
		s.Enqueue(uuid, Request{ClientCertificate: &ClientCertificateRequest{}}, Request{Finished: &FinishedRequest{}})
		s.upload(uuid, TransportHTTP, body)
		if _, err := s.fetch(uuid, fetchParams{limit: 10, rxMaxSize: 4096}, batchNormal, httpOverhead, 1); err != nil {
			t.Fatalf("fetch after upload %x: %v", body, err)
		}
	})
}

// FuzzOwnerRequest decodes arbitrary owner API bodies and expands them: no panics, and any
// accepted request expands into commands the codec can encode.
func FuzzOwnerRequest(f *testing.F) {
	f.Add(`{"request":{"atRequest":{"command":"AT%CMNG=1"}}}`)
	f.Add(`{"request":{"config":{"properties":{"a":"1","b":2,"c":true}}}}`)
	f.Add(`{"request":{"clientCertificate":{"secTag":7,"attributes":"CN=x","keyUsage":"101010000"}}}`)
	f.Add(`{"description":"x","request":{"finished":{}}}`)
	f.Fuzz(func(t *testing.T, body string) {
		var b createJobBody
		if json.Unmarshal([]byte(body), &b) != nil {
			return
		}
		ps, err := b.Request.plan()
		if err != nil {
			return
		}
		for i, p := range ps {
			p.cmd.ID = "x." + p.suffix
			if _, err := encodeWire([]*command{{wire: p.cmd}}); err != nil {
				t.Fatalf("command %d of %s does not encode: %v", i, body, err)
			}
		}
	})
}
