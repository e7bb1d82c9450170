package domain

import (
	"encoding/json"
	"testing"
)

// FuzzApplyMapping feeds arbitrary records and mappings (as JSON) to
// ApplyMapping, SuggestMapping and ContentHash: none may panic, the source
// record is never modified, and a mapped record is always encodable JSON.
// The seed corpus is in testdata/fuzz/FuzzApplyMapping; run longer with
//
//	go test ./domain -run '^$' -fuzz FuzzApplyMapping -fuzztime 60s
func FuzzApplyMapping(f *testing.F) {
	f.Add([]byte(`{"a":1,"b":{"c":"x"}}`), []byte(`[{"source":"b.c","target":"c"}]`), false)
	f.Add([]byte(`{"n":"12.5","t":1709294400}`), []byte(`[{"source":"n","target":"n","convert":"number"},{"source":"t","target":"at","convert":"time_unix"}]`), true)
	f.Fuzz(func(t *testing.T, record, mapping []byte, push bool) {
		var src map[string]any
		if json.Unmarshal(record, &src) != nil {
			return
		}
		var m []FieldMapping
		if json.Unmarshal(mapping, &m) != nil {
			return
		}
		dir := MapToInternal
		if push {
			dir = MapToExternal
		}
		before := ContentHash(src)
		out, err := ApplyMapping(m, src, dir)
		if after := ContentHash(src); after != before {
			t.Fatalf("ApplyMapping modified its source record")
		}
		if err == nil {
			if _, err := json.Marshal(out); err != nil {
				t.Fatalf("mapped record cannot be encoded: %v", err)
			}
			_ = ContentHash(out)
		}
		// A sync run maps a page's records in place where a copy would keep
		// them as they are: it must give exactly what the copying path gives.
		var own map[string]any
		_ = json.Unmarshal(record, &own)
		if keptByClone(own) {
			inPlace, ierr := applyMapping(m, own, dir, true)
			if (ierr == nil) != (err == nil) {
				t.Fatalf("in place: error %v, copying: error %v", ierr, err)
			}
			if err == nil && ContentHash(inPlace) != ContentHash(out) {
				t.Fatalf("in place mapped to %v, copying to %v", inPlace, out)
			}
		}
		for _, s := range SuggestMapping(src, src) {
			if err := s.Validate(); err != nil {
				t.Fatalf("suggested mapping %+v does not validate: %v", s, err)
			}
		}
	})
}
