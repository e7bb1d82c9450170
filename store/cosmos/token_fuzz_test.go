package cosmos

import (
	"testing"
	"unicode/utf8"
)

// FuzzDecodeToken feeds arbitrary continuation tokens (callers hand them
// back) to decodeToken; no emulator is needed. It must never panic; an
// accepted token has a position; decoding is idempotent (re-encoding what was
// decoded gives the same position back); and every token encodeToken issues for
// a stored id and partition key decodes back to them.
// Seeds: testdata/fuzz/FuzzDecodeToken.
func FuzzDecodeToken(f *testing.F) {
	f.Add(encodeToken(pageToken{After: "p-10"}), "p-10", "")
	f.Add(encodeToken(pageToken{After: "id with spaces/ü", PK: "crm"}), "b", "tenant-a")
	f.Add("eyJhZnRlciI6IiJ9", "", "t")        // {"after":""}
	f.Add("eyJhZnRlciI6ImEifXt9", "\xff", "") // trailing data
	f.Add("bnVsbA", "a", "\x00")              // null
	f.Add("not a token%%", "a", "b")
	f.Fuzz(func(t *testing.T, tok, after, pk string) {
		if got, err := decodeToken(tok); err == nil {
			if got == nil || got.After == "" {
				t.Fatalf("decodeToken(%q) accepted %+v without a position", tok, got)
			}
			again, err := decodeToken(encodeToken(*got))
			if err != nil || *again != *got {
				t.Fatalf("re-encoding %+v (from %q) decodes to %+v, %v", *got, tok, again, err)
			}
		} else if got != nil {
			t.Fatalf("decodeToken(%q) refused (%v) but returned %+v", tok, err, got)
		}

		// Cosmos ids and partition keys are JSON strings, so valid UTF-8.
		if after == "" || !utf8.ValidString(after) || !utf8.ValidString(pk) {
			return
		}
		want := pageToken{After: after, PK: pk}
		if got, err := decodeToken(encodeToken(want)); err != nil || *got != want {
			t.Fatalf("the token for %+v decodes to %+v, %v", want, got, err)
		}
	})
}
