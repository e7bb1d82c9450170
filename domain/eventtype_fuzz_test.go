package domain

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

// FuzzEventTypeFilters checks IsValidEventType against the documented grammar,
// ValidateEventFilter against its three accepted forms, and MatchesEventType's
// semantics: an exact filter matches only itself, "p.*" matches exactly the
// valid types below "p." (never "p" itself), "*" matches every valid type, and
// a filter list matches when any of its filters does.
// Seeds: testdata/fuzz/FuzzEventTypeFilters.
func FuzzEventTypeFilters(f *testing.F) {
	// The documented grammar, as a reference for IsValidEventType's hand-written scanner.
	eventTypeGrammar := regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$`)
	f.Add("sync.*", "sync.run.completed", "contact.updated")
	f.Add("sync.*", "sync", "syncx.a")
	f.Add("*", "a", "a.*")
	f.Add("contact.updated", "contact.updated", "contact.updated.x")
	f.Add("a..b", "a._", "A.b")
	f.Add(".*", "*", "sync.*.*")
	f.Fuzz(func(t *testing.T, filter, eventType, other string) {
		for _, s := range []string{filter, eventType, other} {
			want := len(s) <= MaxEventTypeLength && eventTypeGrammar.MatchString(s)
			if got := IsValidEventType(s); got != want {
				t.Fatalf("IsValidEventType(%q) = %v, the grammar says %v", s, got, want)
			}
		}

		prefix, isWildcard := strings.CutSuffix(filter, ".*")
		isWildcard = isWildcard && IsValidEventType(prefix) && len(filter) <= MaxEventTypeLength
		wantValid := filter == "*" || IsValidEventType(filter) || isWildcard
		err := ValidateEventFilter(filter)
		if (err == nil) != wantValid {
			t.Fatalf("ValidateEventFilter(%q) = %v, want valid=%v", filter, err, wantValid)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("ValidateEventFilter(%q) error %v is not ErrInvalid", filter, err)
		}

		matches := MatchesEventType([]string{filter}, eventType)
		if MatchesEventType(nil, eventType) {
			t.Fatalf("no filters matched %q", eventType)
		}
		if got, want := MatchesEventType([]string{other, filter}, eventType), matches || MatchesEventType([]string{other}, eventType); got != want {
			t.Fatalf("filters [%q %q] on %q: %v, but one by one: %v", other, filter, eventType, got, want)
		}
		if IsValidEventType(filter) && matches && eventType != filter {
			t.Fatalf("exact filter %q matched the different type %q", filter, eventType)
		}
		if filter == eventType && !matches {
			t.Fatalf("filter %q did not match itself", filter)
		}
		if !IsValidEventType(eventType) {
			return
		}
		switch {
		case filter == "*":
			if !matches {
				t.Fatalf("\"*\" did not match %q", eventType)
			}
		case isWildcard:
			if want := strings.HasPrefix(eventType, prefix+"."); matches != want {
				t.Fatalf("%q on %q: %v, want %v", filter, eventType, matches, want)
			}
			if MatchesEventType([]string{filter}, prefix) {
				t.Fatalf("%q matched its own prefix %q", filter, prefix)
			}
		}
	})
}
