package domain

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func TestContentHash_IgnoresKeyOrderAndNumberSpelling(t *testing.T) {
	same := []map[string]any{
		{"a": 1.0, "b": map[string]any{"x": "y", "n": int64(2)}, "c": []any{true, nil}},
		{"c": []any{true, nil}, "b": map[string]any{"n": json.Number("2.0"), "x": "y"}, "a": int(1)},
		{"b": map[string]any{"n": json.Number("2e0"), "x": "y"}, "a": json.Number("1"), "c": []any{true, nil}},
		{"a": float32(1), "c": []any{true, nil}, "b": map[string]any{"x": "y", "n": uint8(2)}},
	}
	want := ContentHash(same[0])
	for i, rec := range same[1:] {
		if got := ContentHash(rec); got != want {
			t.Errorf("record %d hashes to %s, want %s like record 0: %s vs %s", i+1, got, want, CanonicalJSON(rec), CanonicalJSON(same[0]))
		}
	}
}

func TestContentHash_SeesEveryRealChange(t *testing.T) {
	base := map[string]any{"a": 1.0, "b": map[string]any{"x": "y"}, "c": []any{"p", "q"}, "d": nil}
	changed := []map[string]any{
		{"a": 1.5, "b": map[string]any{"x": "y"}, "c": []any{"p", "q"}, "d": nil},
		{"a": 1.0, "b": map[string]any{"x": "Y"}, "c": []any{"p", "q"}, "d": nil},
		{"a": 1.0, "b": map[string]any{"x": "y"}, "c": []any{"q", "p"}, "d": nil},
		{"a": 1.0, "b": map[string]any{"x": "y"}, "c": []any{"p", "q"}},
		{"a": 1.0, "b": map[string]any{"x": "y"}, "c": []any{"p", "q"}, "d": false},
		{"a": "1", "b": map[string]any{"x": "y"}, "c": []any{"p", "q"}, "d": nil},
		{"a": 1.0, "b": map[string]any{"x": "y", "z": nil}, "c": []any{"p", "q"}, "d": nil},
	}
	seen := map[string]int{ContentHash(base): -1}
	for i, rec := range changed {
		h := ContentHash(rec)
		if j, dup := seen[h]; dup {
			t.Errorf("change %d (%s) hashes like %d", i, CanonicalJSON(rec), j)
		}
		seen[h] = i
	}
}

func TestContentHash_LeavesOutVolatileFields(t *testing.T) {
	a := map[string]any{"name": "Ada", "etag": "1", "meta": map[string]any{"fetchedAt": "t1", "v": 1.0}}
	b := map[string]any{"name": "Ada", "etag": "2", "meta": map[string]any{"fetchedAt": "t2", "v": 1.0}}
	if ContentHash(a, "etag", "meta.fetchedAt") != ContentHash(b, "etag", "meta.fetchedAt") {
		t.Error("records differing only in volatile fields hash differently")
	}
	if ContentHash(a) == ContentHash(b) {
		t.Error("without volatile fields the records should differ")
	}
	if _, ok := a["etag"]; !ok {
		t.Error("ContentHash removed a field from the caller's record")
	}
}

func TestContentHash_CanonicalFormsOfOddValues(t *testing.T) {
	cases := []struct {
		v    any
		want string
	}{
		{nil, `null`},
		{map[string]any(nil), `{}`},
		{-0.0, `0`},
		{1e21, `1e+21`},
		{0.1, `0.1`},
		{math.NaN(), `"NaN"`},
		{math.Inf(-1), `"-Inf"`},
		{"bad \xff utf8", `"bad ` + "\uFFFD" + ` utf8"`},
		{time.Date(2024, 3, 1, 12, 0, 0, 0, time.FixedZone("", 3600)), `"2024-03-01T11:00:00Z"`},
		{map[string]string{"b": "2", "a": "1"}, `{"a":"1","b":"2"}`},
		{json.RawMessage(`{"b":1.0,"a":[]}`), `{"a":[],"b":1}`},
	}
	for _, tc := range cases {
		if got := string(CanonicalJSON(tc.v)); got != tc.want {
			t.Errorf("CanonicalJSON(%#v) = %s, want %s", tc.v, got, tc.want)
		}
	}
}

func TestContentHash_SurvivesSelfReference(t *testing.T) {
	m := map[string]any{}
	m["self"] = m
	if ContentHash(m) == "" {
		t.Fatal("no hash")
	}
}

// The hashes stored in sync state must not change with the encoder's speed-ups:
// every string encodes exactly as encoding/json writes it.
func TestAppendString_MatchesEncodingJSON(t *testing.T) {
	odd := []string{"", "plain", "c0000001", "a b~\x7f", `quote"`, `back\slash`, "<tag>&amp;", "tab\there", "nl\n", "\x00\x1f",
		"é unicode ☃", "\u2028\u2029", "bad \xff utf8", "emoji 😀", "ascii ~!#$%'()*+,-./:;=?@[]^_`{|}"}
	for c := 0; c < 256; c++ {
		odd = append(odd, "x"+string(rune(c))+"y", "x"+string([]byte{byte(c)})+"y")
	}
	for _, s := range odd {
		want, _ := json.Marshal(strings.ToValidUTF8(s, "\uFFFD"))
		if got := appendString(nil, s); string(got) != string(want) {
			t.Errorf("appendString(%q) = %s, want %s", s, got, want)
		}
	}
}
