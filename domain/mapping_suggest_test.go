package domain

import (
	"reflect"
	"testing"
)

func TestSuggestMapping_MatchesNamesTypesAndSynonyms(t *testing.T) {
	external := decode(t, `{
		"id": "101",
		"properties": {
			"e_mail": "ada@example.com",
			"firstname": "Ada",
			"Last_Name": "Lovelace",
			"zip": "12345",
			"annualrevenue": "1200.50",
			"is_vip": "yes",
			"createdate": "2024-03-01T12:00:00+02:00",
			"hs_object_id": "101"
		},
		"updated": 1709294400123,
		"archived": false,
		"meta": {"etag": "W/1", "links": {"self": "/x"}}
	}`)
	internal := decode(t, `{
		"id": "string",
		"email": "string",
		"firstName": "string",
		"lastName": "string",
		"address": {"postalCode": "string"},
		"annualRevenue": "number",
		"vip": "boolean",
		"createdAt": "date-time",
		"updatedAt": "date-time",
		"archived": "boolean"
	}`)
	got := SuggestMapping(external, internal)
	want := []FieldMapping{
		{Source: "properties.zip", Target: "address.postalCode"},
		{Source: "properties.annualrevenue", Target: "annualRevenue", Convert: ConvertNumber},
		{Source: "archived", Target: "archived"},
		{Source: "properties.createdate", Target: "createdAt", Convert: ConvertTime},
		{Source: "properties.e_mail", Target: "email"},
		{Source: "properties.firstname", Target: "firstName"},
		{Source: "id", Target: "id"},
		{Source: "properties.Last_Name", Target: "lastName"},
		{Source: "updated", Target: "updatedAt", Convert: ConvertTimeUnixMs},
		{Source: "properties.is_vip", Target: "vip", Convert: ConvertBool},
		{Source: "meta", Ignore: true},
		{Source: "properties.hs_object_id", Ignore: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("suggestion:\n%s\nwant:\n%s", dumpMappings(got), dumpMappings(want))
	}
	for i, m := range got {
		if err := m.Validate(); err != nil {
			t.Errorf("suggested mapping[%d] %+v does not validate: %v", i, m, err)
		}
	}

	// Applying the suggestion gives a record in Castiel's shape, nothing else.
	rec, err := ApplyMapping(got, external, MapToInternal)
	if err != nil {
		t.Fatalf("applying the suggestion: %v", err)
	}
	wantRec := decode(t, `{"id":"101","email":"ada@example.com","firstName":"Ada","lastName":"Lovelace",
		"address":{"postalCode":"12345"},"annualRevenue":1200.5,"vip":true,"createdAt":"2024-03-01T10:00:00Z",
		"updatedAt":"2024-03-01T12:00:00.123Z","archived":false}`)
	if !reflect.DeepEqual(rec, wantRec) {
		t.Errorf("mapped sample = %s\nwant %s", CanonicalJSON(rec), CanonicalJSON(wantRec))
	}
}

func TestSuggestMapping_IsDeterministic(t *testing.T) {
	external := decode(t, `{"mail":"a","email":"b","e_mail":"c","name":"n","full_name":"f","displayName":"d","x":1,"y":{"z":2}}`)
	internal := decode(t, `{"email":"string","name":"string","fullName":"string"}`)
	first := SuggestMapping(external, internal)
	for range 50 {
		if again := SuggestMapping(external, internal); !reflect.DeepEqual(again, first) {
			t.Fatalf("suggestions differ between calls:\n%s\nvs\n%s", dumpMappings(first), dumpMappings(again))
		}
	}
	// The exact name wins over its synonyms; each field is used once.
	want := []FieldMapping{
		{Source: "email", Target: "email"},
		{Source: "full_name", Target: "fullName"},
		{Source: "name", Target: "name"},
		{Source: "displayName", Ignore: true},
		{Source: "e_mail", Ignore: true},
		{Source: "mail", Ignore: true},
		{Source: "x", Ignore: true},
		{Source: "y", Ignore: true},
	}
	if !reflect.DeepEqual(first, want) {
		t.Errorf("suggestion:\n%s\nwant:\n%s", dumpMappings(first), dumpMappings(want))
	}
}

func TestSuggestMapping_RefusesIncompatibleTypes(t *testing.T) {
	external := decode(t, `{"email":{"primary":"a@x.io"},"count":"many","active":"maybe","created":"last week"}`)
	internal := decode(t, `{"email":"string","count":"number","active":"boolean","created":"time"}`)
	got := SuggestMapping(external, internal)
	for _, m := range got {
		if !m.Ignore && m.Source != "email.primary" {
			t.Errorf("suggested %+v for values that cannot convert", m)
		}
	}
}

func TestSuggestMapping_ReadsJSONSchema(t *testing.T) {
	external := decode(t, `{"EmailAddress":"a@x.io","dob":"1990-01-01","score":"7","tags":["a"]}`)
	schema := decode(t, `{"type":"object","properties":{
		"email":{"type":"string","format":"email"},
		"birthDate":{"type":"string","format":"date"},
		"score":{"type":["integer","null"]},
		"tags":{"type":"array"},
		"profile":{"type":"object","properties":{"dob":{"type":"string","format":"date"}}}
	}}`)
	got := SuggestMapping(external, schema)
	want := []FieldMapping{
		{Source: "EmailAddress", Target: "email"},
		{Source: "dob", Target: "profile.dob", Convert: ConvertTime},
		{Source: "score", Target: "score", Convert: ConvertNumber},
		{Source: "tags", Target: "tags"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("suggestion:\n%s\nwant:\n%s", dumpMappings(got), dumpMappings(want))
	}
}

func TestSuggestMapping_SampleAsSchema(t *testing.T) {
	got := SuggestMapping(decode(t, `{"Phone_Number":"+47 1","count":3}`), decode(t, `{"phone":"+1 2","count":"3"}`))
	want := []FieldMapping{
		{Source: "count", Target: "count", Convert: ConvertString},
		{Source: "Phone_Number", Target: "phone"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("suggestion:\n%s\nwant:\n%s", dumpMappings(got), dumpMappings(want))
	}
}

func TestSuggestMapping_EmptyInputs(t *testing.T) {
	if got := SuggestMapping(nil, nil); len(got) != 0 {
		t.Errorf("nothing to match gave %v", got)
	}
	got := SuggestMapping(map[string]any{"a": 1.0, "bad key": 2.0, "x.y": 3.0}, nil)
	want := []FieldMapping{{Source: "a", Ignore: true}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("no schema: %v, want only valid paths ignored", got)
	}
}

func TestWords_SplitsNamingStyles(t *testing.T) {
	cases := map[string]string{
		"firstName":     "first name",
		"first_name":    "first name",
		"First-Name":    "first name",
		"HTTPStatus":    "http status",
		"address2Line":  "address2 line",
		"hs_lead_score": "hs lead score",
		"e_mail":        "e mail",
		"":              "",
	}
	for in, want := range cases {
		got := ""
		for i, w := range words(in) {
			if i > 0 {
				got += " "
			}
			got += w
		}
		if got != want {
			t.Errorf("words(%q) = %q, want %q", in, got, want)
		}
	}
}

func dumpMappings(ms []FieldMapping) string {
	out := ""
	for _, m := range ms {
		switch {
		case m.Ignore:
			out += "  ignore " + m.Source + "\n"
		default:
			out += "  " + m.Source + " → " + m.Target
			if m.Convert != "" {
				out += " (" + string(m.Convert) + ")"
			}
			out += "\n"
		}
	}
	return out
}
