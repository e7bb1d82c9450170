package domain

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ContentHash returns a hash of rec's content that does not depend on how the
// record was produced: object keys are sorted, every number is written in one
// canonical form (1, 1.0, int64(1) and json.Number("1e0") hash alike), times
// become RFC 3339 in UTC, and a nil map hashes like an empty one. Fields named
// in volatile (top-level names or dotted paths such as "meta.etag") are left
// out, so a field that changes on every read (an ETag, a fetch time) does not
// make an unchanged record look updated.
//
// Sync state stores one hash per side; a change of hash is what a run calls a
// change of the record.
func ContentHash(rec map[string]any, volatile ...string) string {
	if len(volatile) > 0 {
		rec = withoutPaths(rec, volatile)
	}
	sum := sha256.Sum256(appendCanonical(make([]byte, 0, 256), rec, 0))
	return hex.EncodeToString(sum[:])
}

// CanonicalJSON returns the canonical encoding ContentHash hashes. It is
// valid JSON (non-finite numbers, which JSON cannot hold, become strings).
func CanonicalJSON(v any) []byte {
	return appendCanonical(nil, v, 0)
}

// maxCanonicalDepth stops runaway nesting (and self-referencing maps built in
// Go) from exhausting the stack; deeper values hash as a marker.
const maxCanonicalDepth = 64

func appendCanonical(b []byte, v any, depth int) []byte {
	if depth > maxCanonicalDepth {
		return append(b, `"…"`...)
	}
	switch x := v.(type) {
	case nil:
		return append(b, "null"...)
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendCanonical(b, x[k], depth+1)
		}
		return append(b, '}')
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendCanonical(b, e, depth+1)
		}
		return append(b, ']')
	case string:
		return appendString(b, x)
	case bool:
		return strconv.AppendBool(b, x)
	case time.Time:
		return appendString(b, FormatTime(x))
	case json.RawMessage:
		var decoded any
		if err := json.Unmarshal(x, &decoded); err != nil {
			return appendString(b, string(x))
		}
		return appendCanonical(b, decoded, depth+1)
	}
	if s, ok := canonicalNumber(v); ok {
		return append(b, s...)
	}
	// Other Go types (map[string]string, structs, typed slices): their JSON
	// form, decoded generically, so they hash like the JSON they would become.
	raw, err := json.Marshal(v)
	if err != nil {
		return appendString(b, "unencodable")
	}
	var decoded any
	if err := json.Unmarshal(raw, &decoded); err != nil {
		return appendString(b, string(raw))
	}
	return appendCanonical(b, decoded, depth+1)
}

// appendString writes s as a JSON string; invalid UTF-8 is replaced, as
// encoding/json does, so equal decoded values hash alike.
func appendString(b []byte, s string) []byte {
	if plainJSONString(s) {
		// What encoding/json writes for it, without its allocations: hashing
		// is on the path of every record of a sync.
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	raw, _ := json.Marshal(s) // a valid string always encodes
	return append(b, raw...)
}

// canonicalNumber reports whether v is a number and writes it canonically:
// integers (and integral floats within ±2^63) without a fraction or exponent,
// other finite floats in the shortest form that reads back the same, and
// NaN/±Inf as strings.
func canonicalNumber(v any) (string, bool) {
	switch x := v.(type) {
	case int:
		return strconv.FormatInt(int64(x), 10), true
	case int8:
		return strconv.FormatInt(int64(x), 10), true
	case int16:
		return strconv.FormatInt(int64(x), 10), true
	case int32:
		return strconv.FormatInt(int64(x), 10), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case uint:
		return strconv.FormatUint(uint64(x), 10), true
	case uint8:
		return strconv.FormatUint(uint64(x), 10), true
	case uint16:
		return strconv.FormatUint(uint64(x), 10), true
	case uint32:
		return strconv.FormatUint(uint64(x), 10), true
	case uint64:
		return strconv.FormatUint(x, 10), true
	case float32:
		return formatFloat(float64(x)), true
	case float64:
		return formatFloat(x), true
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return strconv.FormatInt(i, 10), true
		}
		if f, err := strconv.ParseFloat(string(x), 64); err == nil {
			return formatFloat(f), true
		}
		return strconv.Quote(string(x)), true
	}
	return "", false
}

func formatFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return `"NaN"`
	case math.IsInf(f, 1):
		return `"+Inf"`
	case math.IsInf(f, -1):
		return `"-Inf"`
	case f == math.Trunc(f) && math.Abs(f) < 1<<63:
		return strconv.FormatInt(int64(f), 10) // also turns -0 into 0
	default:
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
}

// FormatTime is the one text form of a time in synced records: RFC 3339 in UTC
// with as many fractional digits as needed.
func FormatTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}

// withoutPaths returns a copy of rec without the given dotted paths; rec is
// not modified.
func withoutPaths(rec map[string]any, paths []string) map[string]any {
	out := cloneMap(rec)
	for _, p := range paths {
		removePath(out, splitPath(p))
	}
	return out
}

// plainJSONString reports whether encoding/json writes s as is between
// quotes: printable ASCII without '"', '\\' and the characters it escapes
// for HTML ('<', '>', '&').
func plainJSONString(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20, c >= utf8.RuneSelf, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// AppendJSON appends v encoded exactly as json.Marshal encodes it, for the
// values records are made of (maps of string keys, slices, strings, numbers,
// bools, nil, json.Number), without reflection; anything else goes through
// json.Marshal. Sync writes every record and its state, so this is on the
// path of every record.
func AppendJSON(b []byte, v any) ([]byte, error) {
	return appendJSON(b, v, 0)
}

// maxJSONDepth hands deeper values (and self-referencing maps) to
// json.Marshal, which detects cycles.
const maxJSONDepth = 256

func appendJSON(b []byte, v any, depth int) ([]byte, error) {
	if depth > maxJSONDepth {
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		return append(b, raw...), nil
	}
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		return AppendJSONString(b, x), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			break // json.Marshal words the refusal
		}
		return appendJSONFloat(b, x), nil
	case json.Number:
		if x == "" {
			return append(b, '0'), nil
		}
		if !IsJSONNumber(string(x)) {
			break
		}
		return append(b, x...), nil
	case map[string]any:
		if x == nil {
			return append(b, "null"...), nil
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = AppendJSONString(b, k)
			b = append(b, ':')
			var err error
			if b, err = appendJSON(b, x[k], depth+1); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	case []any:
		if x == nil {
			return append(b, "null"...), nil
		}
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendJSON(b, e, depth+1); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, raw...), nil
}

// AppendJSONString appends s as encoding/json writes it (HTML characters escaped).
func AppendJSONString(b []byte, s string) []byte {
	if plainJSONString(s) {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	raw, _ := json.Marshal(s) // a string always encodes
	return append(b, raw...)
}

// appendJSONFloat writes a finite float64 as encoding/json does.
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// Clean up e-09 to e-9, as encoding/json does.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// IsJSONNumber reports whether s is a number as JSON spells it.
func IsJSONNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}
