package proto

import (
	"bytes"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the testdata/vectors/*.json golden files")

// vector is one golden CBOR batch from testdata/vectors: D* come from docs/vectors.md,
// X* are our own additions, hand-built from the schema.
type vector struct {
	name string
	data []byte
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "vectors", "*.hex"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no vectors: %v", err)
	}
	var vs []vector
	for _, f := range files {
		vs = append(vs, vector{name: strings.TrimSuffix(filepath.Base(f), ".hex"), data: readHex(t, f)})
	}
	return vs
}

func readHex(t testing.TB, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

const (
	idD1 = "9685ef84-8cac-4257-b5cc-94bc416a1c1d.d"
	idD2 = "e5256918-aba9-4d12-8b87-f2c07affec5d.14"
	idD3 = "80b8095e-2714-459e-bd8b-3745d8410a18.f"
)

// wantVectors is what each golden vector means, written from docs/vectors.md's "decoded" column.
var wantVectors = map[string]Batch{
	"D1": {Responses: []Response{{ID: idD1, Kind: KindFinishedAck}}},
	"D2": {Responses: []Response{{ID: idD2, Kind: KindError, CMEError: 4294967291,
		Message: "Unable to store [0](0-indexed) key-value-pair"}}},
	"D3": {Responses: []Response{{ID: idD3, Kind: KindATResponse, Message: "%KEYGEN: \"abc.def\"\r\nOK\r\n"}}},
	"D4": {Commands: []Command{
		{ID: "c1", Kind: KindAT, SetCommand: "%CMNG", Parameters: "3,42,0", IgnoreCMEErrors: []uint64{513}},
		{ID: "c2", Kind: KindConfig, Properties: []Property{{"provisioning/interval-sec", "3600"}}},
		{ID: "c3", Kind: KindFinished},
	}},
	"D5": {Responses: []Response{{ID: "c1", Kind: KindATResponse}, {ID: "c2", Kind: KindConfigAck},
		{ID: "c3", Kind: KindFinishedAck}}},
	"D6":                        {Responses: []Response{{ID: "c1", Kind: KindError, CMEError: 514}}},
	"D7":                        {Commands: []Command{{ID: "x", Kind: KindFinished}}},
	"X1-at-no-ignore":           {Commands: []Command{{ID: "a", Kind: KindAT, SetCommand: "+CFUN", Parameters: "4"}}},
	"X2-config-empty":           {Commands: []Command{{ID: "b", Kind: KindConfig}}},
	"X3-error-local":            {Responses: []Response{{ID: "e", Kind: KindError, Message: "ERROR"}}},
	"X4-finished-ack-canonical": {Responses: []Response{{ID: idD1, Kind: KindFinishedAck}}},
	"X5-at-six-ignore": {Commands: []Command{{ID: "k", Kind: KindAT, SetCommand: "%KEYGEN",
		Parameters: "16842753,2,0", IgnoreCMEErrors: []uint64{1, 24, 255, 256, 65535, 65536}}}},
	"X6-config-escapes": {Commands: []Command{{ID: "u", Kind: KindConfig, Properties: []Property{
		{"a/b", "x\"y\n<&>\\"}, {"ключ", "значение 😀"}, {"tab", "\t\x01"}}}}},
}

// reencoded names vectors that are not canonical and the canonical vector they encode to.
var reencoded = map[string]string{"D1": "X4-finished-ack-canonical"}

func TestVectorsDecode(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			got, err := DecodeBatch(v.data, DefaultMaxCommands)
			if err != nil {
				t.Fatalf("DecodeBatch: %v", err)
			}
			want, ok := wantVectors[v.name]
			if !ok {
				if n := len(got.Commands) + len(got.Responses); n == 0 {
					t.Fatal("decoded to nothing")
				}
				return // checked by the round trip and the JSON golden file only
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestVectorsRoundTrip(t *testing.T) {
	byName := map[string][]byte{}
	vs := loadVectors(t)
	for _, v := range vs {
		byName[v.name] = v.data
	}
	for _, v := range vs {
		t.Run(v.name, func(t *testing.T) {
			want := v.data
			if canon, ok := reencoded[v.name]; ok {
				want = byName[canon]
			}
			b, err := DecodeBatch(v.data, DefaultMaxCommands)
			if err != nil {
				t.Fatalf("DecodeBatch: %v", err)
			}
			var got []byte
			if len(b.Commands) > 0 {
				got, err = EncodeCommands(b.Commands)
			} else {
				got, err = EncodeResponses(b.Responses)
			}
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("encode(decode(x)):\n got %x\nwant %x", got, want)
			}
			// The JSON form must carry everything: CBOR → JSON → CBOR.
			js, err := DecodeBatchJSON(v.data, DefaultMaxCommands)
			if err != nil {
				t.Fatalf("DecodeBatchJSON: %v", err)
			}
			got, err = EncodeBatchJSON(js)
			if err != nil {
				t.Fatalf("EncodeBatchJSON(%s): %v", js, err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("EncodeBatchJSON(DecodeBatchJSON(x)):\n got %x\nwant %x", got, want)
			}
		})
	}
}

// TestVectorsJSONGolden pins the JSON form of every vector; run with -update to rewrite.
func TestVectorsJSONGolden(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			js, err := DecodeBatchJSON(v.data, DefaultMaxCommands)
			if err != nil {
				t.Fatalf("DecodeBatchJSON: %v", err)
			}
			js = append(js, '\n')
			path := filepath.Join("testdata", "vectors", v.name+".json")
			if *update {
				if err := os.WriteFile(path, js, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(js, want) {
				t.Errorf("got\n%s\nwant\n%s", js, want)
			}
		})
	}
}

// TestVectorsKindSeparation checks that every command vector passes the command decoder and
// every response vector passes the tolerant one, and neither passes the other's.
func TestVectorsKindSeparation(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			b, err := DecodeBatch(v.data, DefaultMaxCommands)
			if err != nil {
				t.Fatal(err)
			}
			_, errC := DecodeCommands(v.data, DefaultMaxCommands)
			_, errR := DecodeResponses(v.data, DefaultMaxCommands)
			if (len(b.Commands) > 0) != (errC == nil) {
				t.Errorf("DecodeCommands: err %v, batch has %d commands", errC, len(b.Commands))
			}
			if (len(b.Responses) > 0) != (errR == nil) {
				t.Errorf("DecodeResponses: err %v, batch has %d responses", errR, len(b.Responses))
			}
		})
	}
}
