package domain

import (
	"fmt"
	"strings"
)

// One grammar for event types everywhere (published events, filters, deliveries):
// lowercase dot-separated segments ^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$, at
// most 128 characters, e.g. "contact.updated" or "sync.run.completed".

// IsValidEventType reports whether s is an exact event type.
func IsValidEventType(s string) bool {
	if len(s) == 0 || len(s) > MaxEventTypeLength {
		return false
	}
	segmentStart := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z':
			segmentStart = false
		case !segmentStart && (c >= '0' && c <= '9' || c == '_'):
		case !segmentStart && c == '.':
			segmentStart = true
		default:
			return false
		}
	}
	return !segmentStart
}

// ValidateEventFilter accepts an exact event type, a prefix wildcard such as
// "sync.*" (any event type below "sync."), or "*" (every event type).
func ValidateEventFilter(filter string) error {
	if msg := eventFilterProblem(filter); msg != "" {
		return NewValidationError("eventType", msg)
	}
	return nil
}

func eventFilterProblem(f string) string {
	if f == "*" || IsValidEventType(f) {
		return ""
	}
	if prefix, ok := strings.CutSuffix(f, ".*"); ok && IsValidEventType(prefix) && len(f) <= MaxEventTypeLength {
		return ""
	}
	if f == "" {
		return "is required"
	}
	return fmt.Sprintf("must be an event type of lowercase dot-separated segments such as \"sync.completed\", a prefix wildcard such as \"sync.*\", or \"*\" (at most %d characters)", MaxEventTypeLength)
}

// MatchesEventType reports whether any filter selects eventType. "sync.*"
// matches "sync.x" and "sync.x.y" but neither "sync" nor "syncx.a". No
// filters match nothing.
func MatchesEventType(filters []string, eventType string) bool {
	for _, f := range filters {
		if f == "*" || f == eventType {
			return true
		}
		// prefix keeps its trailing dot, so "sync.*" never matches "syncx.a".
		if prefix, ok := strings.CutSuffix(f, "*"); ok && strings.HasSuffix(prefix, ".") &&
			len(eventType) > len(prefix) && strings.HasPrefix(eventType, prefix) {
			return true
		}
	}
	return false
}

func checkEventType(ve *ValidationError, field, v string) {
	switch {
	case v == "":
		ve.Add(field, "is required")
	case !IsValidEventType(v):
		ve.Addf(field, "must be lowercase dot-separated segments such as \"contact.updated\" (letters, digits, '_'; at most %d characters)", MaxEventTypeLength)
	}
}
