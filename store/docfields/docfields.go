// Package docfields reads the top-level fields of a stored JSON document in
// place, without decoding the rest: the embedded store checks a body's id and
// partition key this way, and the sync worker reads a few fields of each sync
// state on every run. Anything it cannot read plainly (not an object, an
// escaped name, a truncated body) it reports, so the caller can fall back to
// encoding/json, which words the errors.
package docfields

import (
	"bytes"
	"encoding/json"
)

// TopLevel calls fn with the name and raw value of every top-level property
// of the JSON object body until fn returns false. It reports false if body is
// not an object with plain (unescaped) names, is cut short, or fn stopped it.
func TopLevel(body []byte, fn func(name, value []byte) bool) bool {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return false
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		return true
	}
	for i < len(body) && body[i] == '"' {
		end := stringEnd(body, i)
		if end > len(body) || end-i < 2 {
			return false
		}
		name := body[i+1 : end-1]
		if bytes.IndexByte(name, '\\') >= 0 {
			return false
		}
		i = skipSpace(body, end)
		if i >= len(body) || body[i] != ':' {
			return false
		}
		i = skipSpace(body, i+1)
		vend := valueEnd(body, i)
		if vend <= i {
			return false
		}
		if !fn(name, body[i:vend]) {
			return false
		}
		i = skipSpace(body, vend)
		switch {
		case i < len(body) && body[i] == ',':
			i = skipSpace(body, i+1)
		case i < len(body) && body[i] == '}':
			return true
		default:
			return false
		}
	}
	return false
}

// IsNull reports whether raw is JSON null (or empty: the field was absent).
func IsNull(raw []byte) bool { return len(raw) == 0 || string(raw) == "null" }

// String decodes a raw JSON string value (null: "").
func String(raw []byte) (string, error) {
	if len(raw) >= 2 && raw[0] == '"' && raw[len(raw)-1] == '"' && bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), nil
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// stringEnd returns the index just past the JSON string starting at b[i]
// (past the end of b if it is unterminated).
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b) + 1
}

// valueEnd returns the index just past the JSON value starting at b[i].
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return min(stringEnd(b, i), len(b))
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = stringEnd(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	default: // a number, true, false or null
		for ; i < len(b); i++ {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				return i
			}
		}
		return len(b)
	}
}
