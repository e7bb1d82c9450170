package embedded

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
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
