package docfields

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestTopLevel_ReadsWhatEncodingJSONReadsOrSaysItCannot(t *testing.T) {
	for _, tc := range []struct {
		body string
		ok   bool
	}{
		{`{}`, true},
		{` { "a" : 1 , "b":"x" } `, true},
		{`{"s":"br}ace\"quote{","n":{"x":[1,"]\\",{"y":null}]},"t":true,"f":-1.5e3}`, true},
		{`{"\u0061":1}`, false}, // an escaped name
		{`[1,2]`, false},
		{`{"a":1`, false},
		{`{"a" 1}`, false},
		{`{"a":}`, false},
		{`"x"`, false},
		{``, false},
	} {
		got := map[string]json.RawMessage{}
		ok := TopLevel([]byte(tc.body), func(name, value []byte) bool {
			got[string(name)] = append(json.RawMessage(nil), value...)
			return true
		})
		if ok != tc.ok {
			t.Errorf("%s: ok %v, want %v", tc.body, ok, tc.ok)
			continue
		}
		if !ok {
			continue
		}
		var want map[string]json.RawMessage
		if err := json.Unmarshal([]byte(tc.body), &want); err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: read %q, encoding/json reads %q", tc.body, got, want)
		}
	}
}

func TestTopLevel_StopsWhenAsked(t *testing.T) {
	var seen []string
	ok := TopLevel([]byte(`{"a":1,"b":2,"c":3}`), func(name, _ []byte) bool {
		seen = append(seen, string(name))
		return string(name) != "b"
	})
	if ok || !reflect.DeepEqual(seen, []string{"a", "b"}) {
		t.Errorf("ok %v, saw %v; want false after a, b", ok, seen)
	}
}

func TestString(t *testing.T) {
	for raw, want := range map[string]string{`"plain"`: "plain", `"caf\u00e9"`: "café", `null`: "", `"a\"b"`: `a"b`} {
		if got, err := String([]byte(raw)); err != nil || got != want {
			t.Errorf("String(%s) = %q, %v; want %q", raw, got, err, want)
		}
	}
	if _, err := String([]byte(`12`)); err == nil {
		t.Error("a number decoded as a string")
	}
}
