package embedded

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/castiel/integration-manager/store/docfields"
)

var validSeeds = []string{
	`{}`, `[]`, `""`, `0`, `-0`, `1.5e-3`, `1E+2`, `true`, `false`, `null`, ` {"a" : [1, 2.0, "x\"\\\/\b\f\n\r\tq\u00e9"], "b": {"c": null}} `,
	`{"id":"x","_etag":"\"3\"","n":-12.25e10}`, `"\xff\xfe raw bytes"`, `"é☃"`,
	``, ` `, `{`, `}`, `[1,]`, `{"a":1,}`, `{"a"}`, `{"a":}`, `{1:2}`, `01`, `-`, `1.`, `.5`, `1e`, `1e+`, `+1`, `tru`, `nul`, `truex`,
	`"\u12"`, `"\x"`, "\"a\x01b\"", `"unterminated`, `[1 2]`, `{"a":1 "b":2}`, `1 2`, `[`, `]`, `{"a":[}]`, "\"\\u00zz\"",
	"\t[\n1\r]\n", `{"a":{"b":{"c":[[[]]]}}}`, `[-0.0e0]`, `NaN`, `Infinity`, `"\/"`,
}

func TestValidJSON_AgreesWithEncodingJSON(t *testing.T) {
	cases := append([]string(nil), validSeeds...)
	cases = append(cases, strings.Repeat("[", maxNesting)+strings.Repeat("]", maxNesting),
		strings.Repeat("[", maxNesting+1)+strings.Repeat("]", maxNesting+1),
		strings.Repeat(`{"a":`, maxNesting)+"1"+strings.Repeat("}", maxNesting),
		strings.Repeat(`{"a":`, maxNesting+1)+"1"+strings.Repeat("}", maxNesting+1))
	for _, c := range cases {
		if got, want := validJSON([]byte(c)), json.Valid([]byte(c)); got != want {
			t.Errorf("validJSON(%.60q) = %v, encoding/json says %v", c, got, want)
		}
	}
}

func FuzzValidJSON(f *testing.F) {
	for _, s := range validSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validJSON(b), json.Valid(b); got != want {
			t.Errorf("validJSON(%q) = %v, encoding/json says %v", b, got, want)
		}
		if json.Valid(b) {
			var buf bytes.Buffer
			if json.Indent(&buf, b, "", " ") == nil && !validJSON(buf.Bytes()) {
				t.Errorf("validJSON refused the indented form of %q", b)
			}
		}
	})
}

// validObject must accept what validJSON and docfields.TopLevel accept
// together, and show the same members.
func FuzzValidObject(f *testing.F) {
	for _, s := range append(validSeeds, `{"id":"a","x":{"y":[1,{"z":2}]},"s":"q\"}"}`, `{"a\u0062":1}`, ` { "a" : 1 } `, `{"a":1}x`, `{"a":1,"a":2}`) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		type member struct{ name, value string }
		var got, want []member
		okGot := validObject(b, func(name, value []byte) bool {
			got = append(got, member{string(name), string(value)})
			return true
		})
		okWant := validJSON(b) && docfields.TopLevel(b, func(name, value []byte) bool {
			want = append(want, member{string(name), string(value)})
			return true
		})
		if okGot != okWant || okGot && !slices.Equal(got, want) {
			t.Errorf("validObject(%q) = %v %v, validJSON and TopLevel say %v %v", b, okGot, got, okWant, want)
		}
	})
}

// BenchmarkCheckBody: the check every write makes of its body (a sync state
// of a pulled record here), in one pass against the two it took before.
func BenchmarkCheckBody(b *testing.B) {
	body := []byte(`{"id":"sst.9f2c1a.rec-0000123","syncTaskId":"st-bench","tenantId":"tenant-a","recordKey":"rec-0000123",` +
		`"externalHash":"5d41402abc4b2a76b9719d911017c592aa7c1c5e4d8f1e2b3c4d5e6f708192a3",` +
		`"internalHash":"5d41402abc4b2a76b9719d911017c592aa7c1c5e4d8f1e2b3c4d5e6f708192a3",` +
		`"baseSnapshot":{"contact":{"email":"user123@example.com","phone":"+44 20 7946 0123"},"fullName":"User 123","id":"rec-0000123",` +
		`"source":"fake-crm","tags":["a","b"],"updated_at":"2026-11-26T07:00:00.123456Z"},` +
		`"externalModifiedAt":"2026-11-26T07:00:00.123456Z","lastSyncedAt":"2026-11-26T07:00:01.5Z","ttl":-1}`)
	members := func(name, value []byte) bool { return len(name) > 0 && len(value) > 0 }
	b.Run("one pass", func(b *testing.B) {
		for b.Loop() {
			if !validObject(body, members) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("validate then scan", func(b *testing.B) {
		for b.Loop() {
			if !validJSON(body) || !docfields.TopLevel(body, members) {
				b.Fatal("refused")
			}
		}
	})
}
