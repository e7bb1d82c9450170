package storetest

import "testing"

func TestBodyDiff_AllowsOnlySystemPropertiesToBeAdded(t *testing.T) {
	cases := []struct {
		name      string
		want, got string
		equal     bool
	}{
		{"identical", `{"id":"a","n":1}`, `{"id":"a","n":1}`, true},
		{"key order and spacing do not matter", `{"id":"a","n":1}`, `{ "n": 1.0, "id": "a" }`, true},
		{"system properties may be added", `{"id":"a"}`, `{"id":"a","_etag":"\"x\"","_ts":1700000000}`, true},
		{"nested values compared deeply", `{"o":{"a":[1,{"b":null}]}}`, `{"o":{"a":[1,{"b":null}]}}`, true},
		{"changed value", `{"id":"a","n":1}`, `{"id":"a","n":2}`, false},
		{"missing property", `{"id":"a","n":1}`, `{"id":"a"}`, false},
		{"other property added", `{"id":"a"}`, `{"id":"a","ttl":60}`, false},
		{"nested change", `{"o":{"a":[1,2]}}`, `{"o":{"a":[2,1]}}`, false},
		{"not an object", `{"id":"a"}`, `[1]`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			diff := bodyDiff([]byte(tc.want), []byte(tc.got))
			if (diff == "") != tc.equal {
				t.Errorf("bodyDiff(%s, %s) = %q, want equal=%v", tc.want, tc.got, diff, tc.equal)
			}
		})
	}
}
