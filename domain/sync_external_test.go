package domain

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestEntityDef_ModifiedAtReadsTheCursorFieldInItsFormat(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	def := func(field string, f TimeFormat) EntityDef { return EntityDef{CursorField: field, CursorFormat: f} }
	cases := []struct {
		name string
		def  EntityDef
		raw  map[string]any
		want time.Time
	}{
		{"rfc3339 text", def("updated_at", TimeRFC3339), map[string]any{"updated_at": "2025-03-04T05:06:07Z"}, at},
		{"empty format means rfc3339", def("updated_at", ""), map[string]any{"updated_at": "2025-03-04T05:06:07Z"}, at},
		{"offset is normalised to UTC", def("updated_at", ""), map[string]any{"updated_at": "2025-03-04T07:06:07+02:00"}, at},
		{"nested field", def("meta.updated", ""), map[string]any{"meta": map[string]any{"updated": "2025-03-04T05:06:07Z"}}, at},
		{"unix seconds as json.Number", def("ts", TimeUnix), map[string]any{"ts": json.Number("1741064767")}, at},
		{"unix seconds as float64", def("ts", TimeUnix), map[string]any{"ts": float64(1741064767)}, at},
		{"unix seconds as text", def("ts", TimeUnix), map[string]any{"ts": "1741064767"}, at},
		{"unix milliseconds", def("ts", TimeUnixMillis), map[string]any{"ts": json.Number("1741064767000")}, at},
		{"no cursor field defined", def("", ""), map[string]any{"updated_at": "2025-03-04T05:06:07Z"}, time.Time{}},
		{"field missing", def("updated_at", ""), map[string]any{"name": "x"}, time.Time{}},
		{"nil record", def("updated_at", ""), nil, time.Time{}},
		{"unparsable text", def("updated_at", ""), map[string]any{"updated_at": "yesterday"}, time.Time{}},
		{"not a scalar", def("updated_at", ""), map[string]any{"updated_at": map[string]any{}}, time.Time{}},
		{"bool", def("updated_at", ""), map[string]any{"updated_at": true}, time.Time{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.def.ModifiedAt(tc.raw)
			if !got.Equal(tc.want) || got.Location() != time.UTC {
				t.Errorf("ModifiedAt = %v (%v), want %v in UTC", got, got.Location(), tc.want)
			}
		})
	}
}

func TestExternalSideRecord_MapsHashesAndStampsTheRecord(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	entity := EntityDef{Name: "contacts", PrimaryKey: "id", CursorField: "updated_at"}
	rename := []FieldMapping{{Source: "email", Target: "contact.email"}}
	raw := func() map[string]any {
		return map[string]any{"id": "c1", "email": "a@example.com", "updated_at": "2025-03-04T05:06:07Z"}
	}
	mapped := map[string]any{"id": "c1", "contact": map[string]any{"email": "a@example.com"}, "updated_at": "2025-03-04T05:06:07Z"}
	cases := []struct {
		name     string
		mapping  []FieldMapping
		raw      map[string]any
		deleted  bool
		want     *SideRecord
		wantMapE bool
	}{
		{"mapped to Castiel's shape and hashed", rename, raw(), false,
			&SideRecord{Data: mapped, Hash: ContentHash(mapped), ModifiedAt: at}, false},
		{"no mapping is the identity", nil, raw(), false,
			&SideRecord{Data: raw(), Hash: ContentHash(raw()), ModifiedAt: at}, false},
		{"deleted keeps only the modification time", rename, raw(), true,
			&SideRecord{Deleted: true, ModifiedAt: at}, false},
		{"deleted without a record", rename, nil, true,
			&SideRecord{Deleted: true}, false},
		{"a value the mapping cannot convert", []FieldMapping{{Source: "email", Target: "n", Convert: ConvertNumber}}, raw(), false,
			nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ExternalSideRecord(entity, tc.mapping, tc.raw, tc.deleted)
			if tc.wantMapE {
				if !errors.Is(err, ErrMapping) || got != nil {
					t.Fatalf("got (%+v, %v), want no record and an ErrMapping", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// The side record's hash is the one Castiel's side gets for the same
// content, so the two sides of an agreed record compare equal.
func TestExternalSideRecord_HashEqualsCastielsHashOfTheSameRecord(t *testing.T) {
	entity := EntityDef{Name: "contacts", PrimaryKey: "id"}
	mapping := []FieldMapping{{Source: "n", Target: "count", Convert: ConvertNumber}}
	ext, err := ExternalSideRecord(entity, mapping, map[string]any{"id": "c1", "n": "7"}, false)
	if err != nil {
		t.Fatal(err)
	}
	internal := &SideRecord{Data: map[string]any{"id": "c1", "count": json.Number("7")}}
	if ext.ContentHash() != internal.ContentHash() {
		t.Errorf("external hash %s differs from Castiel's %s for the same record %v", ext.ContentHash(), internal.ContentHash(), ext.Data)
	}
}

func TestExternalSideRecordTaking_GivesWhatExternalSideRecordGives(t *testing.T) {
	deep := any("leaf")
	for range maxCanonicalDepth + 3 {
		deep = map[string]any{"d": deep}
	}
	mapping := []FieldMapping{
		{Source: "name", Target: "fullName"},
		{Source: "email", Target: "contact.email"},
		{Source: "meta", Target: "info"},
		{Source: "meta.secret", Ignore: true}, // inside a moved object: the moved copy keeps it
		{Source: "a", Target: "b"},
		{Source: "b", Target: "a"}, // a swap
		{Source: "count", Target: "n", Convert: ConvertString},
		{Target: "source", Constant: map[string]any{"crm": "fake"}},
	}
	records := map[string]func() map[string]any{
		"flat": func() map[string]any {
			return map[string]any{"id": "c1", "name": "Ann", "email": "ann@example.com", "a": 1.0, "b": "two", "count": json.Number("12345678901234567")}
		},
		"nested": func() map[string]any {
			return map[string]any{"id": "c2", "meta": map[string]any{"secret": "s", "tags": []any{"x", map[string]any{"y": nil}}}}
		},
		"nil object and list": func() map[string]any {
			return map[string]any{"id": "c3", "empty": map[string]any(nil), "none": []any(nil)}
		},
		"deeper than a copy keeps": func() map[string]any { return map[string]any{"id": "c4", "deep": deep} },
		"empty":                    func() map[string]any { return map[string]any{} },
		"nil":                      func() map[string]any { return nil },
	}
	for name, rec := range records {
		t.Run(name, func(t *testing.T) {
			want, werr := ExternalSideRecord(EntityDef{}, mapping, rec(), false)
			got, gerr := ExternalSideRecordTaking(EntityDef{}, mapping, rec(), false)
			if (werr == nil) != (gerr == nil) {
				t.Fatalf("errors differ: %v, taking: %v", werr, gerr)
			}
			if werr != nil {
				return
			}
			if got.Hash != want.Hash || !reflect.DeepEqual(got.Data, want.Data) {
				t.Errorf("a pull mapping the record in place would store and hash it differently:\n got  %#v (%s)\n want %#v (%s)", got.Data, got.Hash, want.Data, want.Hash)
			}
		})
	}
}
