package domain

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestApplyMapping_ToInternal(t *testing.T) {
	cases := []struct {
		name string
		m    []FieldMapping
		src  string
		want string
	}{
		{"empty mapping is the identity", nil,
			`{"a":1,"b":{"c":"x"}}`, `{"a":1,"b":{"c":"x"}}`},
		{"rename keeps the other fields", []FieldMapping{{Source: "first_name", Target: "firstName"}},
			`{"first_name":"Ada","id":"7"}`, `{"firstName":"Ada","id":"7"}`},
		{"nested source to flat target prunes the emptied object", []FieldMapping{{Source: "properties.email", Target: "email"}},
			`{"properties":{"email":"a@x.io"}}`, `{"email":"a@x.io"}`},
		{"nested source keeps its siblings", []FieldMapping{{Source: "properties.email", Target: "email"}},
			`{"properties":{"email":"a@x.io","phone":"1"}}`, `{"email":"a@x.io","properties":{"phone":"1"}}`},
		{"flat source to nested target creates objects", []FieldMapping{{Source: "city", Target: "address.city"}},
			`{"city":"Oslo"}`, `{"address":{"city":"Oslo"}}`},
		{"an already empty object stays", []FieldMapping{{Source: "a.b", Target: "b"}},
			`{"e":{}}`, `{"e":{}}`},
		{"absent source sets nothing", []FieldMapping{{Source: "missing", Target: "there"}},
			`{"a":1}`, `{"a":1}`},
		{"present null maps to null", []FieldMapping{{Source: "n", Target: "m", Convert: ConvertNumber}},
			`{"n":null}`, `{"m":null}`},
		{"constant is written", []FieldMapping{{Target: "source", Constant: "hubspot"}},
			`{"a":1}`, `{"a":1,"source":"hubspot"}`},
		{"constant with conversion", []FieldMapping{{Target: "rank", Constant: "3", Convert: ConvertNumber}},
			`{}`, `{"rank":3}`},
		{"ignored field is dropped", []FieldMapping{{Source: "meta.etag", Ignore: true}},
			`{"a":1,"meta":{"etag":"x"}}`, `{"a":1}`},
		{"swap of two fields", []FieldMapping{{Source: "a", Target: "b"}, {Source: "b", Target: "a"}},
			`{"a":1,"b":2}`, `{"a":2,"b":1}`},
		{"number to string", []FieldMapping{{Source: "n", Target: "s", Convert: ConvertString}},
			`{"n":42}`, `{"s":"42"}`},
		{"fraction to string", []FieldMapping{{Source: "n", Target: "s", Convert: ConvertString}},
			`{"n":0.1}`, `{"s":"0.1"}`},
		{"bool to string", []FieldMapping{{Source: "b", Target: "s", Convert: ConvertString}},
			`{"b":true}`, `{"s":"true"}`},
		{"numeric text to number", []FieldMapping{{Source: "s", Target: "n", Convert: ConvertNumber}},
			`{"s":" 12.5 "}`, `{"n":12.5}`},
		{"empty text to null number", []FieldMapping{{Source: "s", Target: "n", Convert: ConvertNumber}},
			`{"s":""}`, `{"n":null}`},
		{"bool to number", []FieldMapping{{Source: "b", Target: "n", Convert: ConvertNumber}},
			`{"b":true}`, `{"n":1}`},
		{"yes to bool", []FieldMapping{{Source: "s", Target: "b", Convert: ConvertBool}},
			`{"s":"Yes"}`, `{"b":true}`},
		{"0 to bool", []FieldMapping{{Source: "n", Target: "b", Convert: ConvertBool}},
			`{"n":0}`, `{"b":false}`},
		{"RFC 3339 with offset to UTC", []FieldMapping{{Source: "t", Target: "t", Convert: ConvertTime}},
			`{"t":"2024-03-01T12:00:00+02:00"}`, `{"t":"2024-03-01T10:00:00Z"}`},
		{"date to time", []FieldMapping{{Source: "t", Target: "t", Convert: ConvertTime}},
			`{"t":"2024-03-01"}`, `{"t":"2024-03-01T00:00:00Z"}`},
		{"unix seconds via time", []FieldMapping{{Source: "t", Target: "t", Convert: ConvertTime}},
			`{"t":1709294400}`, `{"t":"2024-03-01T12:00:00Z"}`},
		{"unix seconds", []FieldMapping{{Source: "t", Target: "t", Convert: ConvertTimeUnix}},
			`{"t":"1709294400"}`, `{"t":"2024-03-01T12:00:00Z"}`},
		{"unix milliseconds", []FieldMapping{{Source: "t", Target: "t", Convert: ConvertTimeUnixMs}},
			`{"t":1709294400123}`, `{"t":"2024-03-01T12:00:00.123Z"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := decode(t, tc.src)
			before := CanonicalJSON(src)
			got, err := ApplyMapping(tc.m, src, MapToInternal)
			if err != nil {
				t.Fatalf("ApplyMapping: %v", err)
			}
			if want := decode(t, tc.want); !reflect.DeepEqual(got, want) {
				t.Errorf("mapped record = %s, want %s", CanonicalJSON(got), CanonicalJSON(want))
			}
			if after := CanonicalJSON(src); string(after) != string(before) {
				t.Errorf("the source record was modified: %s became %s", before, after)
			}
		})
	}
}

func TestApplyMapping_ToExternalIsTheInverse(t *testing.T) {
	cases := []struct {
		name     string
		m        []FieldMapping
		internal string
		want     string
	}{
		{"rename back", []FieldMapping{{Source: "first_name", Target: "firstName"}},
			`{"firstName":"Ada","id":"7"}`, `{"first_name":"Ada","id":"7"}`},
		{"nested back", []FieldMapping{{Source: "properties.email", Target: "email"}},
			`{"email":"a@x.io"}`, `{"properties":{"email":"a@x.io"}}`},
		{"constant target is not sent", []FieldMapping{{Target: "source", Constant: "hubspot"}},
			`{"a":1,"source":"hubspot"}`, `{"a":1}`},
		{"ignored field is not sent", []FieldMapping{{Source: "etag", Ignore: true}},
			`{"a":1,"etag":"mine"}`, `{"a":1}`},
		{"number back to text", []FieldMapping{{Source: "s", Target: "n", Convert: ConvertNumber}},
			`{"n":12.5}`, `{"s":"12.5"}`},
		{"integer back to text", []FieldMapping{{Source: "s", Target: "n", Convert: ConvertNumber}},
			`{"n":1e21}`, `{"s":"1e+21"}`},
		{"text back to number", []FieldMapping{{Source: "n", Target: "s", Convert: ConvertString}},
			`{"s":"42"}`, `{"n":42}`},
		{"text that is not a canonical number stays text", []FieldMapping{{Source: "n", Target: "s", Convert: ConvertString}},
			`{"s":"007"}`, `{"n":"007"}`},
		{"text back to bool", []FieldMapping{{Source: "b", Target: "s", Convert: ConvertString}},
			`{"s":"false"}`, `{"b":false}`},
		{"bool back to text", []FieldMapping{{Source: "s", Target: "b", Convert: ConvertBool}},
			`{"b":true}`, `{"s":"true"}`},
		{"time back to RFC 3339", []FieldMapping{{Source: "t", Target: "t", Convert: ConvertTime}},
			`{"t":"2024-03-01T12:00:00+02:00"}`, `{"t":"2024-03-01T10:00:00Z"}`},
		{"time back to unix seconds", []FieldMapping{{Source: "t", Target: "t", Convert: ConvertTimeUnix}},
			`{"t":"2024-03-01T12:00:00Z"}`, `{"t":1709294400}`},
		{"time back to unix milliseconds", []FieldMapping{{Source: "t", Target: "t", Convert: ConvertTimeUnixMs}},
			`{"t":"2024-03-01T12:00:00.123Z"}`, `{"t":1709294400123}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ApplyMapping(tc.m, decode(t, tc.internal), MapToExternal)
			if err != nil {
				t.Fatalf("ApplyMapping: %v", err)
			}
			if want := decode(t, tc.want); !reflect.DeepEqual(got, want) {
				t.Errorf("external record = %s, want %s", CanonicalJSON(got), CanonicalJSON(want))
			}
		})
	}
}

// A record pushed and pulled back must come back unchanged, or a
// bidirectional sync would see its own write as a new change and loop.
func TestApplyMapping_PushThenPullGivesTheSameRecord(t *testing.T) {
	m := []FieldMapping{
		{Source: "first_name", Target: "firstName"},
		{Source: "properties.email", Target: "contact.email"},
		{Source: "score", Target: "score", Convert: ConvertNumber},
		{Source: "code", Target: "code", Convert: ConvertString},
		{Source: "vip", Target: "vip", Convert: ConvertBool},
		{Source: "created", Target: "createdAt", Convert: ConvertTimeUnix},
		{Source: "updated", Target: "updatedAt", Convert: ConvertTimeUnixMs},
		{Source: "seen", Target: "seenAt", Convert: ConvertTime},
		{Target: "source", Constant: "crm"},
		{Source: "etag", Ignore: true},
	}
	internals := []string{
		`{"firstName":"Ada","contact":{"email":"a@x.io"},"score":12.5,"code":"42","vip":true,"createdAt":"2024-03-01T12:00:00Z","updatedAt":"2024-03-01T12:00:00.123Z","seenAt":"2024-03-01T12:00:00.5Z","source":"crm","tags":["a"]}`,
		`{"firstName":null,"score":0,"code":"007","vip":false,"source":"crm"}`,
		`{"code":"1e+21","score":1e21,"source":"crm"}`,
		`{"code":"true","source":"crm","extra":{"deep":{"x":1}}}`,
	}
	for _, in := range internals {
		internal := decode(t, in)
		external, err := ApplyMapping(m, internal, MapToExternal)
		if err != nil {
			t.Fatalf("push %s: %v", in, err)
		}
		back, err := ApplyMapping(m, roundTripJSON(t, external), MapToInternal)
		if err != nil {
			t.Fatalf("pull %s: %v", CanonicalJSON(external), err)
		}
		if !reflect.DeepEqual(back, internal) {
			t.Errorf("push then pull changed the record:\n  was  %s\n  sent %s\n  got  %s", in, CanonicalJSON(external), CanonicalJSON(back))
		}
	}
}

func TestApplyMapping_ErrorsNameTheField(t *testing.T) {
	cases := []struct {
		name      string
		m         []FieldMapping
		src       string
		dir       MappingDirection
		wantField string
		wantIndex int
	}{
		{"text that is no number", []FieldMapping{{Source: "a", Target: "a"}, {Source: "amount", Target: "total", Convert: ConvertNumber}},
			`{"amount":"twelve"}`, MapToInternal, "amount", 1},
		{"word that is no bool", []FieldMapping{{Source: "flag", Target: "flag", Convert: ConvertBool}},
			`{"flag":"maybe"}`, MapToInternal, "flag", 0},
		{"number that is no bool", []FieldMapping{{Source: "flag", Target: "flag", Convert: ConvertBool}},
			`{"flag":2}`, MapToInternal, "flag", 0},
		{"object to string", []FieldMapping{{Source: "o", Target: "s", Convert: ConvertString}},
			`{"o":{"x":1}}`, MapToInternal, "o", 0},
		{"bad time", []FieldMapping{{Source: "when", Target: "at", Convert: ConvertTime}},
			`{"when":"yesterday"}`, MapToInternal, "when", 0},
		{"time out of range", []FieldMapping{{Source: "when", Target: "at", Convert: ConvertTimeUnix}},
			`{"when":1e300}`, MapToInternal, "when", 0},
		{"target crosses a value", []FieldMapping{{Source: "city", Target: "address.city"}},
			`{"city":"Oslo","address":"Main St 1"}`, MapToInternal, "address.city", 0},
		{"push of a bad time", []FieldMapping{{Source: "when", Target: "at", Convert: ConvertTimeUnix}},
			`{"at":"soon"}`, MapToExternal, "at", 0},
		{"unknown conversion", []FieldMapping{{Source: "a", Target: "b", Convert: "rot13"}},
			`{"a":"x"}`, MapToInternal, "a", 0},
		{"empty source", []FieldMapping{{Target: "b"}},
			`{"a":"x"}`, MapToInternal, "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ApplyMapping(tc.m, decode(t, tc.src), tc.dir)
			if !errors.Is(err, ErrMapping) {
				t.Fatalf("error = %v, want a mapping error", err)
			}
			var me *MappingError
			if !errors.As(err, &me) || me.Field != tc.wantField || me.Index != tc.wantIndex {
				t.Fatalf("error %q names field %q (entry %d), want %q (entry %d)", err, me.Field, me.Index, tc.wantField, tc.wantIndex)
			}
			if !strings.Contains(err.Error(), `"`+tc.wantField+`"`) {
				t.Errorf("message %q does not quote the field %q", err, tc.wantField)
			}
		})
	}
}

func TestApplyMapping_RefusesAnUnknownDirection(t *testing.T) {
	if _, err := ApplyMapping(nil, map[string]any{}, "sideways"); !errors.Is(err, ErrMapping) {
		t.Fatalf("error = %v, want a mapping error", err)
	}
}

func TestApplyMapping_AcceptsGoValuesAndJSONNumbers(t *testing.T) {
	src := map[string]any{
		"n":  json.Number("12345678901234567"),
		"i":  int64(7),
		"t":  time.Date(2024, 3, 1, 12, 0, 0, 0, time.FixedZone("x", 3600)),
		"ms": map[string]string{"not": "a record map"},
	}
	m := []FieldMapping{
		{Source: "n", Target: "ns", Convert: ConvertString},
		{Source: "i", Target: "is", Convert: ConvertString},
		{Source: "t", Target: "ts", Convert: ConvertTime},
		{Source: "ms", Target: "copied"},
	}
	got, err := ApplyMapping(m, src, MapToInternal)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"ns": "12345678901234567", "is": "7", "ts": "2024-03-01T11:00:00Z", "copied": map[string]string{"not": "a record map"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v, want %#v", got, want)
	}
}

func TestConverts_AreAcceptedByValidation(t *testing.T) {
	for _, c := range Converts() {
		m := FieldMapping{Source: "a", Target: "b", Convert: c}
		if err := m.Validate(); err != nil {
			t.Errorf("conversion %q is refused: %v", c, err)
		}
	}
}

func decode(t testing.TB, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("test JSON %s: %v", s, err)
	}
	return m
}

// roundTripJSON is what happens to a record sent over HTTP and read back.
func roundTripJSON(t testing.TB, m map[string]any) map[string]any {
	t.Helper()
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, string(raw))
}

// The per-record cost of the domain side of a sync run (map, hash, classify),
// to hold against the sync benchmark's records/s.
func BenchmarkSyncRecord(b *testing.B) {
	m := []FieldMapping{
		{Source: "properties.email", Target: "email"},
		{Source: "properties.firstname", Target: "firstName"},
		{Source: "properties.score", Target: "score", Convert: ConvertNumber},
		{Source: "updatedAt", Target: "updatedAt", Convert: ConvertTimeUnixMs},
		{Target: "source", Constant: "crm"},
		{Source: "etag", Ignore: true},
	}
	ext := decode(b, `{"id":"123","etag":"W/1","updatedAt":1709294400123,"properties":{"email":"ada@example.com","firstname":"Ada","score":"12","city":"Oslo","tags":["a","b"]}}`)
	state := NewRecordState("t", "task", "123")
	b.ReportAllocs()
	for b.Loop() {
		mapped, err := ApplyMapping(m, ext, MapToInternal)
		if err != nil {
			b.Fatal(err)
		}
		side := &SideRecord{Data: mapped}
		side.Hash = ContentHash(mapped)
		if d := Classify(DirectionBidirectional, state, side, nil); d.Action == ActionConflict {
			b.Fatal(d)
		}
	}
}
