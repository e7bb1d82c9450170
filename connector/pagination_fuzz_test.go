package connector

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/castiel/integration-manager/domain"
)

// FuzzDecodePageToken feeds arbitrary tokens (they come back from checkpoints
// and API callers) to decodePageToken under every pagination kind. It must
// never panic; a refusal is a permanent ErrBadPageToken; "" is the first page
// for every kind; an accepted token is its kind's prefix plus the position,
// and every other kind refuses it; page and offset positions are
// non-negative integers; and what ListPage issues (prefix + position)
// decodes back to that position. Seeds: testdata/fuzz/FuzzDecodePageToken.
func FuzzDecodePageToken(f *testing.F) {
	f.Add("c:abc", "eyJpZCI6NDJ9", int64(2))
	f.Add("p:4", "", int64(0))
	f.Add("o:-1", "x", int64(-1))
	f.Add("l:https://api.example/v1/items?page=2", "https://api.example/v1/items?page=3&size=50", int64(1500))
	f.Add("p:+7", "c:", int64(1<<62))
	f.Add("c:", "p:", int64(-1<<63))
	// Every pagination kind that issues tokens, with its prefix.
	pageTokenPrefixes := map[domain.PaginationKind]string{
		domain.PaginationCursor: tokCursor, domain.PaginationPage: tokPage,
		domain.PaginationOffset: tokOffset, domain.PaginationLinkHeader: tokLink,
	}
	kinds := []domain.PaginationKind{domain.PaginationCursor, domain.PaginationPage, domain.PaginationOffset,
		domain.PaginationLinkHeader, domain.PaginationNone, ""}
	f.Fuzz(func(t *testing.T, tok, pos string, n int64) {
		accepted := 0
		for _, kind := range kinds {
			got, err := decodePageToken(kind, tok)
			if err != nil {
				if !errors.Is(err, ErrBadPageToken) || !IsPermanent(err) {
					t.Fatalf("token %q for %q: error %v is not a permanent ErrBadPageToken", tok, kind, err)
				}
				if got != "" {
					t.Fatalf("token %q for %q: refused but returned the position %q", tok, kind, got)
				}
				continue
			}
			if tok == "" {
				if got != "" {
					t.Fatalf("the empty token for %q decoded to %q, want the first page", kind, got)
				}
				continue
			}
			accepted++
			if prefix := pageTokenPrefixes[kind]; prefix == "" || got == "" || prefix+got != tok {
				t.Fatalf("token %q for %q decoded to %q, which is not the token without its prefix %q", tok, kind, got, prefix)
			}
			if kind == domain.PaginationPage || kind == domain.PaginationOffset {
				if v, err := strconv.Atoi(got); err != nil || v < 0 {
					t.Fatalf("token %q for %q: position %q is not a non-negative integer", tok, kind, got)
				}
			}
		}
		if accepted > 1 {
			t.Fatalf("token %q was accepted by %d pagination kinds; a token belongs to one", tok, accepted)
		}

		// What ListPage issues decodes back.
		for _, kind := range []domain.PaginationKind{domain.PaginationCursor, domain.PaginationLinkHeader} {
			if got, err := decodePageToken(kind, pageTokenPrefixes[kind]+pos); pos != "" && (err != nil || got != pos) {
				t.Fatalf("the %s token for %q decoded to %q, %v", kind, pos, got, err)
			}
		}
		num := strconv.FormatInt(n, 10)
		for _, kind := range []domain.PaginationKind{domain.PaginationPage, domain.PaginationOffset} {
			got, err := decodePageToken(kind, pageTokenPrefixes[kind]+num)
			if n >= 0 && (err != nil || got != num) {
				t.Fatalf("the %s token for %d decoded to %q, %v", kind, n, got, err)
			}
			if n < 0 && err == nil {
				t.Fatalf("the %s token for the negative position %d was accepted", kind, n)
			}
		}
	})
}

// FuzzNextLink parses arbitrary Link headers (they come from the provider's
// API): never a panic; a result is always the target of one <...> of the
// input; and the first rel="next" link wins, so a well-formed one after the
// header is found unless the header had its own (an empty "<>" one ends the
// walk: it would refetch the same page). Seeds: testdata/fuzz/FuzzNextLink.
func FuzzNextLink(f *testing.F) {
	f.Add(`<https://x/a?page=1>; rel="prev", <https://x/a?page=3>; rel="next"`, "https://x/b?page=2")
	f.Add(`<https://x/a>; title="a, b"; rel="next last"`, "/relative")
	f.Add(`<<>>; rel=next,`, "")
	f.Add(`<u>; rel="nope, <v>; rel=next`, "w")
	f.Fuzz(func(t *testing.T, header, target string) {
		own := nextLink([]string{header})
		if own != "" && !strings.Contains(header, "<"+own+">") {
			t.Fatalf("nextLink(%q) = %q, which is not a <...> target of the header", header, own)
		}
		if target == "" || strings.ContainsAny(target, "<>") {
			return
		}
		// A quote or comma left open in header would swallow what follows it,
		// so the well-formed link goes in a value of its own.
		got := nextLink([]string{header, "<" + target + `>; rel="next"`})
		if got != own && (own != "" || got != target) {
			t.Fatalf("nextLink([%q, <%s>; rel=next]) = %q; the header alone gives %q", header, target, got, own)
		}
		if !strings.Contains(header, "<") && got != target {
			t.Fatalf("nextLink([%q, <%s>; rel=next]) = %q, want %q", header, target, got, target)
		}
	})
}
