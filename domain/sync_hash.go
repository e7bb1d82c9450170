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
	h := sha256.New()
	buf := make([]byte, 0, 256)
	buf = appendCanonical(buf, rec, 0)
	h.Write(buf)
	return hex.EncodeToString(h.Sum(nil))
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
