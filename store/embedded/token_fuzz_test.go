package embedded

import (
	"errors"
	"testing"
	"unicode/utf8"

	"github.com/castiel/integration-manager/store"
)

// FuzzDecodeToken feeds arbitrary continuation tokens (callers hand them
// back) to decodeToken for both kinds of query. It must never panic; a
// refusal is store.ErrInvalidQuery; an accepted token has a position and a
// partition exactly for cross-partition queries, so the other kind refuses
// it; decoding is idempotent (re-encoding what was decoded gives the same
// position); and every token encodeToken issues decodes back to its position.
// Seeds: testdata/fuzz/FuzzDecodeToken.
func FuzzDecodeToken(f *testing.F) {
	f.Add(encodeToken(continuation{After: "doc-7"}), "doc-7", "")
	f.Add(encodeToken(continuation{After: "b", PK: "tenant-a"}), "id with spaces/ü", "crm")
	f.Add("eyJhZnRlciI6IiJ9", "", "t")               // {"after":""}
	f.Add("eyJhZnRlciI6ImEiLCJ4IjoxfQ", "a", "\x00") // an unknown field
	f.Add("eyJBRlRFUiI6ImEifXt9", "\xff", "")        // {"AFTER":"a"}{}
	f.Add("not a token%%", "a", "b")
	f.Fuzz(func(t *testing.T, tok, after, pk string) {
		accepted := 0
		for _, cross := range []bool{false, true} {
			c, err := decodeToken(tok, cross)
			if err != nil {
				if !errors.Is(err, store.ErrInvalidQuery) {
					t.Fatalf("decodeToken(%q, cross=%v): %v is not store.ErrInvalidQuery", tok, cross, err)
				}
				continue
			}
			accepted++
			if c.After == "" || (c.PK != "") != cross {
				t.Fatalf("decodeToken(%q, cross=%v) accepted %+v", tok, cross, c)
			}
			again, err := decodeToken(encodeToken(c), cross)
			if err != nil || again != c {
				t.Fatalf("re-encoding %+v (from %q) decodes to %+v, %v", c, tok, again, err)
			}
		}
		if accepted > 1 {
			t.Fatalf("token %q was accepted by both partition and cross-partition queries", tok)
		}

		// Stored ids and partition keys are valid UTF-8 (prepareBody compares
		// them with the body's JSON strings), and only they go into tokens.
		if after == "" || !utf8.ValidString(after) || !utf8.ValidString(pk) {
			return
		}
		want := continuation{After: after, PK: pk}
		if got, err := decodeToken(encodeToken(want), pk != ""); err != nil || got != want {
			t.Fatalf("the token for %+v decodes to %+v, %v", want, got, err)
		}
		if _, err := decodeToken(encodeToken(want), pk == ""); err == nil {
			t.Fatalf("the token for %+v was accepted by the other kind of query", want)
		}
	})
}
