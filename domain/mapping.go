package domain

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Conversions beyond the basic four: a time held externally as a Unix
// timestamp. Castiel always holds times as RFC 3339 text in UTC.
const (
	ConvertTimeUnix   Convert = "time_unix"    // external: seconds since the epoch
	ConvertTimeUnixMs Convert = "time_unix_ms" // external: milliseconds since the epoch
)

// Converts lists every conversion a FieldMapping may name.
func Converts() []Convert {
	return []Convert{ConvertNone, ConvertString, ConvertNumber, ConvertBool, ConvertTime, ConvertTimeUnix, ConvertTimeUnixMs}
}

// MappingDirection says which way ApplyMapping translates a record.
type MappingDirection string

const (
	// MapToInternal translates an external record into Castiel's shape (pull).
	MapToInternal MappingDirection = "to_internal"
	// MapToExternal translates a Castiel record into the external shape (push),
	// the inverse of MapToInternal.
	MapToExternal MappingDirection = "to_external"
)

// ErrMapping is matched (errors.Is) by every *MappingError: the record cannot
// be mapped with this task's mapping. Retrying does not help; the sync run
// records the record as failed and goes on.
var ErrMapping = errors.New("mapping failed")

// MappingError names the field a record could not be mapped on.
type MappingError struct {
	Field   string // the dotted path, on the side being read
	Index   int    // the entry of the task's mapping, -1 when none
	Message string
}

func (e *MappingError) Error() string {
	if e.Index >= 0 {
		return fmt.Sprintf("mapping[%d]: field %q: %s", e.Index, e.Field, e.Message)
	}
	return fmt.Sprintf("mapping: field %q: %s", e.Field, e.Message)
}

// Is makes errors.Is(err, ErrMapping) true.
func (e *MappingError) Is(target error) bool { return target == ErrMapping }

// ApplyMapping translates src with mapping m and returns a new record; src is
// never modified.
//
// Fields no entry mentions pass through unchanged, so an empty mapping is the
// identity; that is also why Ignore exists: it keeps a field out of the sync in
// both directions.
//
// MapToInternal (pull): every Source path is moved to its Target (nested paths
// on both sides, created as needed), converted by Convert; a Source absent from
// src sets nothing (a present null maps to null); a Constant is written to its
// Target; Ignore drops its Source.
//
// MapToExternal (push) is the exact inverse: every Target path is moved back to
// its Source with the inverse conversion, constant Targets are dropped (the
// external side never had them) and ignored Sources are dropped too. The
// inverse is chosen so that pushing and then pulling a record gives back the
// same record, which keeps a bidirectional sync from ping-ponging:
//
//	convert        pull (external → Castiel)                    push (Castiel → external)
//	string         number/bool → its text                       text that spells a number or bool exactly → that value
//	number         numeric text, bool (1/0) → number            number → its shortest decimal text
//	bool           true/false/yes/no/y/n/on/off/1/0 → bool      bool → "true"/"false"
//	time           RFC 3339 (any offset), date, Unix s → UTC    RFC 3339 text (UTC)
//	time_unix      Unix seconds (number or text) → RFC 3339     RFC 3339 → Unix seconds
//	time_unix_ms   Unix milliseconds → RFC 3339                 RFC 3339 → Unix milliseconds
//
// An empty string converts to null for number, bool and the time kinds
// (external APIs often send "" for "no value"). A value that cannot be
// converted is a *MappingError naming the field.
func ApplyMapping(m []FieldMapping, src map[string]any, dir MappingDirection) (map[string]any, error) {
	return applyMapping(m, src, dir, false)
}

// applyMapping is ApplyMapping, into src itself when inPlace: src is then
// the caller's to give, and must be kept as is by a copy (keptByClone).
func applyMapping(m []FieldMapping, src map[string]any, dir MappingDirection, inPlace bool) (map[string]any, error) {
	if dir != MapToInternal && dir != MapToExternal {
		return nil, &MappingError{Index: -1, Message: fmt.Sprintf("unknown mapping direction %q", dir)}
	}
	for i, fm := range m {
		if err := checkEntry(i, fm); err != nil {
			return nil, err
		}
	}
	// Every value moved is read (and copied) first, then every consumed
	// field removed, then the targets written: so a rename whose target is
	// another entry's source (a swap) works, and, in place, no removal
	// changes a value still to be moved.
	type move struct {
		index    int
		value    any
		from, to string
		convert  Convert
	}
	var few [8]move // most mappings have no more entries: no allocation a record
	moves := few[:0]
	var seg [8]string // the segments of one path at a time: most paths have no more
	for i, fm := range m {
		switch {
		case fm.Ignore:
		case fm.Constant != nil:
			if dir == MapToInternal {
				moves = append(moves, move{index: i, value: cloneValue(fm.Constant, 0), from: fm.Target, to: fm.Target, convert: fm.Convert})
			}
		default:
			from, to := fm.Source, fm.Target
			if dir == MapToExternal {
				from, to = to, from
			}
			if v, ok := getPath(src, appendPath(seg[:0], from)); ok {
				moves = append(moves, move{index: i, value: cloneValue(v, 0), from: from, to: to, convert: fm.Convert})
			}
		}
	}
	out := src
	if !inPlace {
		out = cloneMap(src)
	}
	for _, fm := range m {
		switch {
		case fm.Ignore:
			// Ignored external fields never leave or enter the external shape.
			removePath(out, appendPath(seg[:0], fm.Source))
		case fm.Constant != nil:
			if dir == MapToExternal {
				removePath(out, appendPath(seg[:0], fm.Target))
			}
		case dir == MapToExternal:
			removePath(out, appendPath(seg[:0], fm.Target))
		default:
			removePath(out, appendPath(seg[:0], fm.Source))
		}
	}
	for _, mv := range moves {
		// Converting a copy gives a copy: conversions make scalars, or refuse.
		v, err := convertValue(mv.value, mv.convert, dir)
		if err != nil {
			return nil, &MappingError{Field: mv.from, Index: mv.index, Message: err.Error()}
		}
		if err := setPath(out, appendPath(seg[:0], mv.to), v); err != nil {
			return nil, &MappingError{Field: mv.to, Index: mv.index, Message: err.Error()}
		}
	}
	return out, nil
}

// checkEntry refuses an entry ApplyMapping cannot follow (tasks are validated
// on save; this guards against a mapping that never went through Validate).
func checkEntry(i int, fm FieldMapping) error {
	bad := func(field, msg string) error { return &MappingError{Field: field, Index: i, Message: msg} }
	switch {
	case fm.Ignore:
		if !validPath(fm.Source) {
			return bad(fm.Source, "an ignored field needs a dotted source path")
		}
	case fm.Constant != nil:
		if !validPath(fm.Target) {
			return bad(fm.Target, "a constant needs a dotted target path")
		}
	default:
		if !validPath(fm.Source) {
			return bad(fm.Source, "needs a dotted source path")
		}
		if !validPath(fm.Target) {
			return bad(fm.Target, "needs a dotted target path")
		}
	}
	for _, c := range Converts() {
		if fm.Convert == c {
			return nil
		}
	}
	field := fm.Source
	if field == "" {
		field = fm.Target
	}
	return bad(field, fmt.Sprintf("unknown conversion %q", fm.Convert))
}

func validPath(p string) bool {
	if p == "" || len(p) > MaxPathLength {
		return false
	}
	// No empty segment, checked without splitting: every record's mapping
	// checks its paths.
	return p[0] != '.' && p[len(p)-1] != '.' && !strings.Contains(p, "..")
}

func splitPath(p string) []string { return strings.Split(p, ".") }

// appendPath appends the segments of the dotted path p to segs: splitPath
// into a buffer of the caller's (mapping a record splits every path).
func appendPath(segs []string, p string) []string {
	for {
		seg, rest, more := strings.Cut(p, ".")
		segs = append(segs, seg)
		if !more {
			return segs
		}
		p = rest
	}
}

// getPath reads a nested value; a path through a non-object is absent.
func getPath(m map[string]any, path []string) (any, bool) {
	var cur any = m
	for _, seg := range path {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[seg]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// setPath writes a nested value, creating objects on the way. It refuses to
// replace a non-object on the way rather than silently drop it.
func setPath(m map[string]any, path []string, v any) error {
	cur := m
	for i, seg := range path[:len(path)-1] {
		next, ok := cur[seg]
		if !ok || next == nil {
			obj := map[string]any{}
			cur[seg] = obj
			cur = obj
			continue
		}
		obj, ok := next.(map[string]any)
		if !ok {
			return fmt.Errorf("%q holds a %s, not an object", strings.Join(path[:i+1], "."), kindOf(next))
		}
		cur = obj
	}
	cur[path[len(path)-1]] = v
	return nil
}

// removePath deletes a nested value and prunes the objects the deletion left
// empty (an object that was already empty stays).
func removePath(m map[string]any, path []string) {
	if len(path) == 0 || m == nil {
		return
	}
	if len(path) == 1 {
		delete(m, path[0])
		return
	}
	child, ok := m[path[0]].(map[string]any)
	if !ok || len(child) == 0 {
		return
	}
	removePath(child, path[1:])
	if len(child) == 0 {
		delete(m, path[0])
	}
}

// cloneMap deep-copies the maps and slices of a record (nil gives an empty map).
func cloneMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneValue(v, 0)
	}
	return out
}

// keptByClone reports whether cloneMap(m) would be m as it is: nothing
// nested too deep to be copied, no nil map or slice (a copy makes them
// empty). Records decoded from JSON are, unless absurdly deep.
func keptByClone(m map[string]any) bool {
	for _, v := range m {
		if !keptByCloneValue(v, 0) {
			return false
		}
	}
	return true
}

func keptByCloneValue(v any, depth int) bool {
	if depth > maxCanonicalDepth {
		return false
	}
	switch x := v.(type) {
	case map[string]any:
		if x == nil {
			return false
		}
		for _, e := range x {
			if !keptByCloneValue(e, depth+1) {
				return false
			}
		}
	case []any:
		if x == nil {
			return false
		}
		for _, e := range x {
			if !keptByCloneValue(e, depth+1) {
				return false
			}
		}
	}
	return true
}

func cloneValue(v any, depth int) any {
	if depth > maxCanonicalDepth {
		return nil
	}
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = cloneValue(e, depth+1)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = cloneValue(e, depth+1)
		}
		return out
	}
	return v
}

func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case bool:
		return "bool"
	case time.Time:
		return "time"
	}
	if _, ok := toFloat(v); ok {
		return "number"
	}
	return fmt.Sprintf("%T", v)
}

// convertValue applies c in direction dir. null stays null.
func convertValue(v any, c Convert, dir MappingDirection) (any, error) {
	if c == ConvertNone || v == nil {
		return v, nil
	}
	if dir == MapToInternal {
		return convertIn(v, c)
	}
	return convertOut(v, c)
}

func convertIn(v any, c Convert) (any, error) {
	switch c {
	case ConvertString:
		return toString(v)
	case ConvertNumber:
		return toNumber(v)
	case ConvertBool:
		return toBool(v)
	case ConvertTime:
		return toTime(v, time.Second, true)
	case ConvertTimeUnix:
		return toTime(v, time.Second, false)
	case ConvertTimeUnixMs:
		return toTime(v, time.Millisecond, false)
	}
	return nil, fmt.Errorf("unknown conversion %q", c)
}

func convertOut(v any, c Convert) (any, error) {
	switch c {
	case ConvertString:
		s, ok := v.(string)
		if !ok {
			return v, nil // already not text: nothing to undo
		}
		return parseScalar(s), nil
	case ConvertNumber:
		if s, ok := v.(string); ok {
			return s, nil
		}
		f, ok := toFloat(v)
		if !ok {
			return nil, fmt.Errorf("cannot convert a %s to number text", kindOf(v))
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%v is not a finite number", f)
		}
		return numberText(f), nil
	case ConvertBool:
		switch x := v.(type) {
		case bool:
			return strconv.FormatBool(x), nil
		case string:
			return x, nil
		}
		return nil, fmt.Errorf("cannot convert a %s to bool text", kindOf(v))
	case ConvertTime, ConvertTimeUnix, ConvertTimeUnixMs:
		t, err := parseInternalTime(v)
		if err != nil {
			return nil, err
		}
		switch c {
		case ConvertTimeUnix:
			return float64(t.Unix()), nil
		case ConvertTimeUnixMs:
			return float64(t.UnixMilli()), nil
		}
		return FormatTime(t), nil
	}
	return nil, fmt.Errorf("unknown conversion %q", c)
}

func toString(v any) (any, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case time.Time:
		return FormatTime(x), nil
	}
	if f, ok := toFloat(v); ok {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%v is not a finite number", f)
		}
		if n, ok := v.(json.Number); ok {
			if _, err := strconv.ParseInt(string(n), 10, 64); err == nil {
				return string(n), nil // keeps integers beyond 2^53 exact
			}
		}
		return numberText(f), nil
	}
	return nil, fmt.Errorf("cannot convert a %s to string", kindOf(v))
}

func toNumber(v any) (any, error) {
	switch x := v.(type) {
	case bool:
		if x {
			return float64(1), nil
		}
		return float64(0), nil
	case string:
		s := strings.TrimSpace(x)
		if s == "" {
			return nil, nil
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%q is not a number", truncate(x))
		}
		return f, nil
	}
	f, ok := toFloat(v)
	if !ok {
		return nil, fmt.Errorf("cannot convert a %s to number", kindOf(v))
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("%v is not a finite number", f)
	}
	return f, nil
}

func toBool(v any) (any, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "":
			return nil, nil
		case "true", "t", "yes", "y", "on", "1":
			return true, nil
		case "false", "f", "no", "n", "off", "0":
			return false, nil
		}
		return nil, fmt.Errorf("%q is not a boolean", truncate(x))
	}
	if f, ok := toFloat(v); ok {
		switch f {
		case 1:
			return true, nil
		case 0:
			return false, nil
		}
		return nil, fmt.Errorf("%v is not a boolean (only 0 and 1 are)", f)
	}
	return nil, fmt.Errorf("cannot convert a %s to bool", kindOf(v))
}

// Times outside years 1–9999 have no RFC 3339 form.
var (
	minTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
)

// toTime converts to RFC 3339 text. Numbers (and numeric text) count unit
// since the epoch; text is RFC 3339 or a date when textOK.
func toTime(v any, unit time.Duration, textOK bool) (any, error) {
	var t time.Time
	switch x := v.(type) {
	case time.Time:
		t = x
	case string:
		s := strings.TrimSpace(x)
		if s == "" {
			return nil, nil
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return toTime(f, unit, textOK)
		}
		if !textOK {
			return nil, fmt.Errorf("%q is not a Unix timestamp", truncate(x))
		}
		var err error
		if t, err = parseTimeText(s); err != nil {
			return nil, fmt.Errorf("%q is not an RFC 3339 time", truncate(x))
		}
	default:
		f, ok := toFloat(v)
		if !ok {
			return nil, fmt.Errorf("cannot convert a %s to time", kindOf(v))
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%v is not a timestamp", f)
		}
		// Range-check before converting: a huge float overflows int64 nanoseconds.
		sec := f * float64(unit) / float64(time.Second)
		if sec < float64(minTime.Unix()) || sec > float64(maxTime.Unix()) {
			return nil, fmt.Errorf("%v is outside years 1–9999", f)
		}
		// Integer arithmetic on whole units: 1709294400123 ms must give .123 exactly.
		perSec := int64(time.Second / unit)
		whole, frac := math.Modf(f)
		w := int64(whole)
		t = time.Unix(w/perSec, (w%perSec)*int64(unit)+int64(math.Round(frac*float64(unit))))
	}
	t = t.UTC()
	if t.Before(minTime) || t.After(maxTime) {
		return nil, fmt.Errorf("%s is outside years 1–9999", t)
	}
	return FormatTime(t), nil
}

func parseTimeText(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New("not a time")
}

// parseInternalTime reads a Castiel time (RFC 3339 text) for a push.
func parseInternalTime(v any) (time.Time, error) {
	switch x := v.(type) {
	case time.Time:
		return x, nil
	case string:
		t, err := parseTimeText(strings.TrimSpace(x))
		if err != nil {
			return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time", truncate(x))
		}
		return t, nil
	}
	return time.Time{}, fmt.Errorf("cannot convert a %s to time", kindOf(v))
}

// parseScalar undoes ConvertString: text that is exactly the canonical
// spelling of a number or a bool becomes that value again; any other text
// ("007", "1e3", "yes") stays text, because the pull would not have produced it.
func parseScalar(s string) any {
	switch s {
	case "true":
		return true
	case "false":
		return false
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) && numberText(f) == s {
		return f
	}
	return s
}

// numberText is the text a pull makes of a number: integers without a
// fraction, other values in their shortest exact decimal form.
func numberText(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e21 {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case int:
		return float64(x), true
	case int8:
		return float64(x), true
	case int16:
		return float64(x), true
	case int32:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint:
		return float64(x), true
	case uint8:
		return float64(x), true
	case uint16:
		return float64(x), true
	case uint32:
		return float64(x), true
	case uint64:
		return float64(x), true
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		return f, err == nil
	}
	return 0, false
}

// truncate keeps error messages short when a value is long.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + "…"
}
