package proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestEncodeBatchJSON(t *testing.T) {
	tests := []struct {
		name string
		js   string
		want string // hex
	}{
		{name: "D4 mixed command kinds", js: `[
			{"id":"c1","type":"at","command":"%CMNG","parameters":"3,42,0","ignore_cme_errors":[513]},
			{"id":"c2","type":"config","properties":{"provisioning/interval-sec":"3600"}},
			{"id":"c3","type":"finished"}]`,
			want: "8385626331006525434d4e4766332c34322c30811902018362633201a1781970726f766973696f6e696e672f696e74657276616c2d73656364333630308262633302"},
		{name: "fields in any order", js: `[{"type":"finished","id":"x"}]`, want: "8182617802"},
		{name: "ignore codes may be left out", js: `[{"id":"a","type":"at","command":"+CFUN","parameters":"4"}]`,
			want: "8185616100652b4346554e613480"},
		{name: "property order is kept", js: `[{"id":"b","type":"config","properties":{"z":"1","a":"2"}}]`,
			want: "8183616201a2617a6131616161 32"},
		{name: "escapes are decoded", js: `[{"id":"\u0063\u0031","type":"at_response","message":"\r\n"}]`,
			want: "8183626331 1864 620d0a"},
		{name: "responses", js: `[{"id":"c1","type":"error","cme_error":514,"message":""}]`, want: "8184626331186319020260"},
		{name: "acks", js: `[{"id":"c2","type":"config_ack"},{"id":"c3","type":"finished_ack"}]`,
			want: "82 8262633218 65 8262633318 66"},
		{name: "largest cme_error", js: `[{"id":"a","type":"error","cme_error":18446744073709551615,"message":""}]`,
			want: "81846161 1863 1bffffffffffffffff 60"},
		{name: "surrounding white space", js: " \n[{\"id\":\"x\",\"type\":\"finished\"}]\n ", want: "8182617802"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := EncodeBatchJSON([]byte(tc.js))
			if err != nil {
				t.Fatalf("EncodeBatchJSON: %v", err)
			}
			if want := mustHex(t, tc.want); !bytes.Equal(got, want) {
				t.Errorf("got %x, want %x", got, want)
			}
		})
	}
}

func TestEncodeBatchJSONRefusals(t *testing.T) {
	tests := []struct {
		name string
		js   string
		msg  string
	}{
		{name: "empty input", js: ``, msg: "unexpected EOF"},
		{name: "not an array", js: `{"id":"x","type":"finished"}`, msg: `got "{", want "["`},
		{name: "empty array", js: `[]`, msg: "empty batch"},
		{name: "element is a string", js: `["x"]`, msg: `element 0: invalid value: got a string, want "{"`},
		{name: "unknown field", js: `[{"id":"x","type":"finished","extra":1}]`, msg: `unknown field "extra"`},
		{name: "duplicate field", js: `[{"id":"x","id":"y","type":"finished"}]`, msg: `duplicate field "id"`},
		{name: "missing type", js: `[{"id":"x"}]`, msg: `missing field "type"`},
		{name: "unknown type", js: `[{"id":"x","type":"reboot"}]`, msg: `unknown type "reboot"`},
		{name: "missing id", js: `[{"type":"finished"}]`, msg: `finished: missing field "id"`},
		{name: "at without parameters", js: `[{"id":"a","type":"at","command":"+CFUN"}]`, msg: `at: missing field "parameters"`},
		{name: "config without properties", js: `[{"id":"b","type":"config"}]`, msg: `missing field "properties"`},
		{name: "error without cme_error", js: `[{"id":"e","type":"error","message":""}]`, msg: `missing field "cme_error"`},
		{name: "at_response without message", js: `[{"id":"e","type":"at_response"}]`, msg: `missing field "message"`},
		{name: "field of another type", js: `[{"id":"x","type":"finished","properties":{}}]`, msg: `field "properties" does not belong here`},
		{name: "ack with message", js: `[{"id":"x","type":"config_ack","message":""}]`, msg: `field "message" does not belong here`},
		{name: "id is a number", js: `[{"id":1,"type":"finished"}]`, msg: `"id": got a number, want a string`},
		{name: "type is null", js: `[{"id":"x","type":null}]`, msg: `"type": got null, want a string`},
		{name: "negative cme_error", js: `[{"id":"e","type":"error","cme_error":-5,"message":""}]`, msg: "not an unsigned 64-bit integer"},
		{name: "fractional cme_error", js: `[{"id":"e","type":"error","cme_error":5.0,"message":""}]`, msg: "not an unsigned"},
		{name: "exponent cme_error", js: `[{"id":"e","type":"error","cme_error":5e2,"message":""}]`, msg: "not an unsigned"},
		{name: "cme_error over 64 bits", js: `[{"id":"e","type":"error","cme_error":18446744073709551616,"message":""}]`, msg: "not an unsigned"},
		{name: "cme_error is a string", js: `[{"id":"e","type":"error","cme_error":"5","message":""}]`, msg: "want an unsigned integer"},
		{name: "ignore codes not an array", js: `[{"id":"a","type":"at","command":"","parameters":"","ignore_cme_errors":5}]`, msg: `"ignore_cme_errors": invalid value: got a number, want "["`},
		{name: "ignore code is a string", js: `[{"id":"a","type":"at","command":"","parameters":"","ignore_cme_errors":["513"]}]`, msg: "want an unsigned integer"},
		{name: "properties not an object", js: `[{"id":"b","type":"config","properties":[]}]`, msg: `"properties": invalid value: got "[", want "{"`},
		{name: "property value is a number", js: `[{"id":"b","type":"config","properties":{"k":1}}]`, msg: `"properties": invalid value: "k": got a number`},
		{name: "mixed batch", js: `[{"id":"x","type":"finished"},{"id":"x","type":"finished_ack"}]`, msg: "element 1: invalid value: batch mixes"},
		{name: "trailing data", js: `[{"id":"x","type":"finished"}] []`, msg: "trailing data"},
		{name: "truncated", js: `[{"id":"x","type":"finished"}`, msg: "invalid value"},
		{name: "syntax error", js: `[{"id" "x"}]`, msg: "invalid value"},
		{name: "unknown command type is not encodable", js: `[{"id":"x","type":"at_response","message":1}]`, msg: `"message": got a number`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := EncodeBatchJSON([]byte(tc.js))
			if err == nil {
				t.Fatalf("encoded %x", got)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("err %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err %q does not mention %q", err, tc.msg)
			}
		})
	}
}

// TestJSONMethods: Command, Response and Batch work inside other JSON documents, as the
// simulated service's owner API uses them.
func TestJSONMethods(t *testing.T) {
	type job struct {
		Command  Command   `json:"command"`
		Response *Response `json:"response,omitempty"`
		Batch    Batch     `json:"batch"`
	}
	in := job{
		Command: Command{ID: "c2", Kind: KindConfig, Properties: []Property{{"z", "<1>"}, {"a", "2"}}},
		Response: &Response{ID: "c2", Kind: KindError, CMEError: 4294967291,
			Message: "Unable to store [0](0-indexed) key-value-pair"},
		Batch: Batch{Commands: []Command{{ID: "a", Kind: KindAT, SetCommand: "%CMNG", Parameters: "3,1,0",
			IgnoreCMEErrors: []uint64{513, 514}}}},
	}
	js, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out job
	if err := json.Unmarshal(js, &out); err != nil {
		t.Fatalf("Unmarshal(%s): %v", js, err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Errorf("round trip through %s:\n got %+v\nwant %+v", js, out, in)
	}
	// null leaves the value alone, as encoding/json does for its own types.
	keep := Command{ID: "keep"}
	if err := json.Unmarshal([]byte(`null`), &keep); err != nil || keep.ID != "keep" {
		t.Errorf("null: %v, %+v", err, keep)
	}
}

func TestJSONMethodRefusals(t *testing.T) {
	tests := []struct {
		name string
		do   func() error
		msg  string
	}{
		{name: "command from a response", do: func() error {
			var c Command
			return json.Unmarshal([]byte(`{"id":"x","type":"config_ack"}`), &c)
		}, msg: `"config_ack" is a response type`},
		{name: "response from a command", do: func() error {
			var r Response
			return json.Unmarshal([]byte(`{"id":"x","type":"finished"}`), &r)
		}, msg: `"finished" is a command type`},
		{name: "command with trailing data", do: func() error {
			var c Command
			return c.UnmarshalJSON([]byte(`{"id":"x","type":"finished"} 1`))
		}, msg: "trailing data"},
		{name: "marshal unknown command kind", do: func() error {
			_, err := json.Marshal(Command{Kind: 9})
			return err
		}, msg: "unknown command type 9"},
		{name: "marshal unknown response kind", do: func() error {
			_, err := json.Marshal(Response{Kind: 9})
			return err
		}, msg: "unknown response type 9"},
		{name: "marshal mixed batch", do: func() error {
			_, err := json.Marshal(Batch{Commands: finishedBatch(1), Responses: []Response{{Kind: KindConfigAck}}})
			return err
		}, msg: "mixes commands and responses"},
		{name: "marshal batch with a bad command", do: func() error {
			_, err := json.Marshal(Batch{Commands: []Command{{Kind: KindFinished}, {Kind: 9}}})
			return err
		}, msg: "element 1"},
		{name: "marshal batch with a bad response", do: func() error {
			_, err := json.Marshal(Batch{Responses: []Response{{Kind: 9}}})
			return err
		}, msg: "element 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err %v, want one mentioning %q", err, tc.msg)
			}
		})
	}
}

func TestAppendJSONString(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "plain", in: "abc", want: `"abc"`},
		{name: "quote and backslash", in: `a"b\c`, want: `"a\"b\\c"`},
		{name: "html is not escaped", in: "<a&b>", want: `"<a&b>"`},
		{name: "control characters", in: "\r\n\t\x00\x1f\x7f", want: `"\r\n\t\u0000\u001f` + "\x7f" + `"`},
		{name: "multi-byte", in: "ключ 😀", want: `"ключ 😀"`},
		{name: "invalid UTF-8", in: "a\xffb", want: `"a\ufffdb"`},
		{name: "line separators", in: "\u2028\u2029", want: `"\u2028\u2029"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := string(appendJSONString(nil, tc.in))
			if got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
			var back string
			if err := json.Unmarshal([]byte(got), &back); err != nil {
				t.Fatalf("not valid JSON: %v", err)
			}
			if tc.name != "invalid UTF-8" && back != tc.in {
				t.Errorf("decodes to %q, want %q", back, tc.in)
			}
		})
	}
}

func TestBatchMarshalJSONCompact(t *testing.T) {
	tests := []struct {
		name string
		b    Batch
		want string
	}{
		{name: "empty", b: Batch{}, want: `[]`},
		{name: "commands", b: Batch{Commands: finishedBatch(2)}, want: `[{"id":"f","type":"finished"},{"id":"f","type":"finished"}]`},
		{name: "responses", b: Batch{Responses: []Response{{ID: "a", Kind: KindATResponse, Message: "OK"}}},
			want: `[{"id":"a","type":"at_response","message":"OK"}]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.b.MarshalJSON()
			if err != nil || string(got) != tc.want {
				t.Errorf("got %s, %v; want %s", got, err, tc.want)
			}
		})
	}
}
