package syncrun

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store/docfields"
)

// The partial decoders must read what encoding/json reads, whatever the
// state's snapshot holds (strings with braces, quotes and escapes), or the
// sweep would delete a record it saw or a re-read miss a change.
func TestDecodeStateDoc_ReadsWhatEncodingJSONReads(t *testing.T) {
	st := domain.NewRecordState("tenant-a", "task-1", `k"ey}{\/`)
	st.Agree(&domain.SideRecord{Data: map[string]any{"a": `}"{[`, "n": map[string]any{"x": []any{1.0, "]\\"}}}},
		&domain.SideRecord{Data: map[string]any{"a": "b"}}, time.Now())
	withConflict := *st
	withConflict.Conflict = &domain.PendingConflict{ConflictID: "cfl_1", ExternalHash: "e", InternalHash: "i", DetectedAt: time.Now().UTC()}
	deleted := *st
	deleted.Deleted, deleted.ExternalHash = true, ""
	var bodies [][]byte
	for _, s := range []domain.RecordState{*st, withConflict, deleted} {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, b, append(b[:len(b)-1:len(b)-1], `,"_etag":"\"3f\"","_ts":17}`...))
	}
	bodies = append(bodies,
		[]byte(` { "kind" : "seen" , "executionId":"run-1", "keys":["a","b"], "recordKey": null } `),
		[]byte(`{"recordKey":"x","conflict":null,"deleted":false,"externalHash":"h"}`),
		[]byte(`{"record\u004bey":"escaped name","externalHash":"h"}`),
		[]byte(`{"internalHash":"h\u0031","externalHash":"h","conflict":null}`),
		[]byte(`{"recordKey":"caf\u00e9","externalHash":"h","conflict":{"conflictId":"c","externalHash":"e2"}}`),
		[]byte(`{}`),
	)
	for _, b := range bodies {
		var want stateDoc
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		var got stateDoc
		if err := decodeStateDoc(b, &got); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", b, got, want)
		}
		var wantHead stateHead
		_ = json.Unmarshal(b, &wantHead)
		head, err := decodeStateHead(b)
		if err != nil || head.ExternalHash != wantHead.ExternalHash || head.InternalHash != wantHead.InternalHash || docfields.IsNull(head.Conflict) != docfields.IsNull(wantHead.Conflict) {
			t.Errorf("%s: head %+v (%v), want %+v", b, head, err, wantHead)
		}
	}
	var d stateDoc
	if err := decodeStateDoc([]byte(`{"recordKey":`), &d); err == nil {
		t.Error("a truncated body decoded without error")
	}
}
