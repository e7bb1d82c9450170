package domain

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// SuggestMapping proposes a mapping from an external sample record to
// Castiel's schema by names and types alone. It is the fallback when no AI
// Service is configured, and it is deterministic: the same inputs always give
// the same mapping, in the same order.
//
// internalSchema may be a sample Castiel record, a map of field names to type
// names ("string", "number", "integer", "boolean", "time", "date-time",
// "object", "array"), or a JSON Schema object ({"type": "object",
// "properties": {...}}); nested objects give dotted paths in all three.
//
// Names match after normalisation (case, '_', '-', '.', camelCase and common
// prefixes like "properties." are ignored when comparing the last segment) and
// through a table of synonyms (email/e_mail/mail, zip/postcode/postal_code,
// ...). A pair is only proposed when the types are compatible, with the
// conversion that makes them so. Each field is used at most once; better
// matches win, ties go to the alphabetically first path. External fields left
// unmatched are listed as Ignore entries (a whole object at once when nothing
// inside it matched), so the suggestion does not pass them through into
// Castiel. Entries come mapped first (by target), then ignored (by source).
func SuggestMapping(externalSample, internalSchema map[string]any) []FieldMapping {
	ext := flattenSample(externalSample, "", 0, nil)
	in := flattenSchema(internalSchema)

	type pair struct {
		score   int
		e, i    int
		convert Convert
	}
	var pairs []pair
	for ei, ef := range ext {
		for ii, inf := range in {
			conv, ok := compatible(ef, inf)
			if !ok {
				continue
			}
			if s := nameScore(ef, inf); s > 0 {
				if ef.kind == inf.kind {
					s += 2 // prefer a pair that needs no conversion
				}
				pairs = append(pairs, pair{score: s, e: ei, i: ii, convert: conv})
			}
		}
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		return cmp.Or(
			cmp.Compare(b.score, a.score),
			strings.Compare(in[a.i].path, in[b.i].path),
			strings.Compare(ext[a.e].path, ext[b.e].path),
		)
	})
	usedE, usedI := map[int]bool{}, map[int]bool{}
	var mapped []FieldMapping
	matched := map[string]bool{}
	for _, p := range pairs {
		if usedE[p.e] || usedI[p.i] {
			continue
		}
		usedE[p.e], usedI[p.i] = true, true
		matched[ext[p.e].path] = true
		mapped = append(mapped, FieldMapping{Source: ext[p.e].path, Target: in[p.i].path, Convert: p.convert})
	}
	slices.SortFunc(mapped, func(a, b FieldMapping) int { return strings.Compare(a.Target, b.Target) })

	var ignored []FieldMapping
	collectIgnored(externalSample, "", matched, &ignored, 0)
	slices.SortFunc(ignored, func(a, b FieldMapping) int { return strings.Compare(a.Source, b.Source) })

	out := append(mapped, ignored...)
	if len(out) > MaxMappings {
		out = out[:MaxMappings] // an absurd sample; the task could not be saved otherwise
	}
	return out
}

// fieldKind is the type of a field as far as matching cares.
type fieldKind int

const (
	kindUnknown fieldKind = iota // null in a sample: fits anything
	kindString
	kindNumber
	kindBool
	kindTime
	kindObject // an empty object in a sample, or "object" in a schema
	kindArray
)

type field struct {
	path   string
	kind   fieldKind
	sample any      // the sample value (external side), for choosing a conversion
	tokens []string // normalised words of the last segment
	full   string   // normalised full path, words joined
	leaf   string   // normalised last segment, words joined
	canon  string   // synonym-resolved leaf ("" when none)
}

func newField(path string, kind fieldKind, sample any) field {
	segs := strings.Split(path, ".")
	last := segs[len(segs)-1]
	f := field{path: path, kind: kind, sample: sample, tokens: words(last)}
	f.leaf = strings.Join(f.tokens, "")
	var all []string
	for _, s := range segs {
		all = append(all, words(s)...)
	}
	f.full = strings.Join(all, "")
	f.canon = synonyms[f.leaf]
	if f.canon == "" && len(f.tokens) > 0 {
		// "contact_email_address" → look up its last words too.
		for i := 1; i < len(f.tokens) && f.canon == ""; i++ {
			f.canon = synonyms[strings.Join(f.tokens[i:], "")]
		}
	}
	return f
}

// maxSuggestDepth and maxSuggestFields bound the work on huge or deeply nested
// samples; matching is quadratic in the number of fields.
const (
	maxSuggestDepth  = 8
	maxSuggestFields = 1000
)

func flattenSample(m map[string]any, prefix string, depth int, out []field) []field {
	for _, k := range sortedKeys(m) {
		if len(out) >= maxSuggestFields || !validSegment(k) {
			continue
		}
		path := joinPath(prefix, k)
		if path == "" {
			continue
		}
		v := m[k]
		if obj, ok := v.(map[string]any); ok && len(obj) > 0 && depth < maxSuggestDepth {
			out = flattenSample(obj, path, depth+1, out)
			continue
		}
		out = append(out, newField(path, sampleKind(v), v))
	}
	return out
}

func flattenSchema(schema map[string]any) []field {
	if props, ok := schema["properties"].(map[string]any); ok && isJSONSchema(schema) {
		return flattenJSONSchema(props, "", 0, nil)
	}
	return flattenTyped(schema, "", 0, nil)
}

func isJSONSchema(m map[string]any) bool {
	t, _ := m["type"].(string)
	return t == "object" || m["$schema"] != nil
}

func flattenJSONSchema(props map[string]any, prefix string, depth int, out []field) []field {
	for _, k := range sortedKeys(props) {
		if len(out) >= maxSuggestFields || !validSegment(k) {
			continue
		}
		path := joinPath(prefix, k)
		if path == "" {
			continue
		}
		def, _ := props[k].(map[string]any)
		if sub, ok := def["properties"].(map[string]any); ok && len(sub) > 0 && depth < maxSuggestDepth {
			out = flattenJSONSchema(sub, path, depth+1, out)
			continue
		}
		kind := kindUnknown
		switch t := def["type"].(type) {
		case string:
			kind = typeNameKind(t, def["format"])
		case []any: // ["string", "null"]
			for _, e := range t {
				if s, ok := e.(string); ok && s != "null" {
					kind = typeNameKind(s, def["format"])
					break
				}
			}
		}
		out = append(out, newField(path, kind, nil))
	}
	return out
}

// flattenTyped reads a sample record or a map of type names.
func flattenTyped(m map[string]any, prefix string, depth int, out []field) []field {
	for _, k := range sortedKeys(m) {
		if len(out) >= maxSuggestFields || !validSegment(k) {
			continue
		}
		path := joinPath(prefix, k)
		if path == "" {
			continue
		}
		switch v := m[k].(type) {
		case map[string]any:
			if len(v) > 0 && depth < maxSuggestDepth {
				out = flattenTyped(v, path, depth+1, out)
				continue
			}
			out = append(out, newField(path, kindObject, nil))
		case string:
			if kind, ok := typeNames[strings.ToLower(v)]; ok {
				out = append(out, newField(path, kind, nil))
				continue
			}
			out = append(out, newField(path, sampleKind(v), nil))
		default:
			out = append(out, newField(path, sampleKind(v), nil))
		}
	}
	return out
}

var typeNames = map[string]fieldKind{
	"string": kindString, "text": kindString,
	"number": kindNumber, "integer": kindNumber, "int": kindNumber, "float": kindNumber, "double": kindNumber, "decimal": kindNumber,
	"boolean": kindBool, "bool": kindBool,
	"time": kindTime, "date-time": kindTime, "datetime": kindTime, "timestamp": kindTime, "date": kindTime,
	"object": kindObject, "array": kindArray,
}

func typeNameKind(t string, format any) fieldKind {
	if f, _ := format.(string); t == "string" && (f == "date-time" || f == "date") {
		return kindTime
	}
	return typeNames[strings.ToLower(t)]
}

func sampleKind(v any) fieldKind {
	switch x := v.(type) {
	case nil:
		return kindUnknown
	case string:
		if _, err := parseTimeText(strings.TrimSpace(x)); err == nil && len(x) >= len("2006-01-02") {
			return kindTime
		}
		return kindString
	case bool:
		return kindBool
	case map[string]any:
		return kindObject
	case []any:
		return kindArray
	}
	if _, ok := toFloat(v); ok {
		return kindNumber
	}
	return kindUnknown
}

// compatible reports whether an external field can fill an internal one, and
// with which conversion.
func compatible(e, i field) (Convert, bool) {
	if e.kind == kindUnknown || i.kind == kindUnknown {
		return ConvertNone, true
	}
	if e.kind == i.kind {
		if e.kind == kindTime {
			return ConvertTime, true // normalise offsets to UTC
		}
		return ConvertNone, true
	}
	switch i.kind {
	case kindString:
		switch e.kind {
		case kindNumber, kindBool:
			return ConvertString, true
		case kindTime:
			return ConvertNone, true // already text
		}
	case kindNumber:
		switch e.kind {
		case kindString:
			if s, ok := e.sample.(string); ok {
				if _, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil {
					return ConvertNumber, true
				}
			}
		case kindBool:
			return ConvertNumber, true
		}
	case kindBool:
		switch e.kind {
		case kindString:
			if _, err := toBool(e.sample); err == nil {
				return ConvertBool, true
			}
		case kindNumber:
			if _, err := toBool(e.sample); err == nil {
				return ConvertBool, true
			}
		}
	case kindTime:
		switch e.kind {
		case kindNumber:
			if f, ok := toFloat(e.sample); ok && math.Abs(f) >= 1e11 {
				return ConvertTimeUnixMs, true // past year 5138 in seconds: milliseconds
			}
			return ConvertTimeUnix, true
		case kindString:
			if s, ok := e.sample.(string); ok {
				if _, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil {
					return ConvertTimeUnix, true
				}
			}
		}
	}
	return ConvertNone, false
}

// nameScore rates how well two names match; 0 is no match.
func nameScore(e, i field) int {
	switch {
	case e.full == "" || i.full == "":
		return 0
	case e.path == i.path:
		return 100
	case e.full == i.full:
		return 95
	case e.leaf == i.full || e.full == i.leaf:
		return 85 // "properties.email" → "email"
	case e.canon != "" && e.canon == i.canon && (e.leaf == e.canon || i.leaf == i.canon || e.leaf == i.leaf):
		return 80
	case e.leaf == i.leaf:
		return 70
	case e.canon != "" && e.canon == i.canon:
		return 65
	}
	// Shared words: "billing_city" ~ "city" is weak, "customer_name" ~ "name" weaker.
	j := jaccard(canonTokens(e.tokens), canonTokens(i.tokens))
	if j >= 0.5 {
		return int(30 + 30*j)
	}
	return 0
}

func canonTokens(ts []string) []string {
	out := make([]string, len(ts))
	for k, t := range ts {
		if c := synonyms[t]; c != "" {
			out[k] = c
		} else {
			out[k] = t
		}
	}
	return out
}

func jaccard(a, b []string) float64 {
	if len(a) == 0 || len(b) == 0 {
		return 0
	}
	set := map[string]int{}
	for _, t := range a {
		set[t] |= 1
	}
	for _, t := range b {
		set[t] |= 2
	}
	both := 0
	for _, v := range set {
		if v == 3 {
			both++
		}
	}
	return float64(both) / float64(len(set))
}

// words splits a name into lowercase words at '_', '-', ' ', '.', and
// camelCase boundaries ("firstName", "HTTPStatus", "address2Line").
func words(s string) []string {
	var out []string
	var cur []rune
	flush := func() {
		if len(cur) > 0 {
			out = append(out, strings.ToLower(string(cur)))
			cur = cur[:0]
		}
	}
	rs := []rune(s)
	for k, r := range rs {
		switch {
		case !unicode.IsLetter(r) && !unicode.IsDigit(r):
			flush()
			continue
		case unicode.IsUpper(r) && len(cur) > 0:
			prev := rs[k-1]
			nextLower := k+1 < len(rs) && unicode.IsLower(rs[k+1])
			if unicode.IsLower(prev) || unicode.IsDigit(prev) || (unicode.IsUpper(prev) && nextLower) {
				flush()
			}
		}
		cur = append(cur, r)
	}
	flush()
	return out
}

// synonyms maps a normalised name (words joined) to its canonical name.
var synonyms = func() map[string]string {
	groups := map[string][]string{
		"email":       {"email", "mail", "emailaddress", "mailaddress", "emailaddr", "primaryemail"},
		"phone":       {"phone", "tel", "telephone", "phonenumber", "phoneno", "telephonenumber", "tel1"},
		"mobile":      {"mobile", "mobilephone", "cell", "cellphone", "mobilenumber"},
		"firstname":   {"firstname", "givenname", "fname", "forename", "first"},
		"lastname":    {"lastname", "surname", "familyname", "lname", "last"},
		"name":        {"name", "fullname", "displayname"},
		"company":     {"company", "companyname", "organization", "organisation", "org", "orgname", "employer"},
		"postalcode":  {"postalcode", "zip", "zipcode", "postcode", "postal"},
		"street":      {"street", "streetaddress", "address1", "addressline1", "line1"},
		"city":        {"city", "town", "locality"},
		"state":       {"state", "region", "province", "county"},
		"country":     {"country", "countrycode", "nation"},
		"createdat":   {"createdat", "created", "createdate", "creationdate", "createdon", "createdtime", "datecreated", "createtime"},
		"updatedat":   {"updatedat", "updated", "modified", "modifiedat", "lastmodified", "lastmodifieddate", "updatedon", "modifiedon", "lastupdated", "datemodified", "updatetime", "hslastmodifieddate"},
		"id":          {"id", "identifier", "uid", "externalid"},
		"url":         {"url", "website", "homepage", "webpage", "link"},
		"description": {"description", "desc", "details", "summary"},
		"title":       {"title", "jobtitle", "position"},
		"amount":      {"amount", "total"},
		"status":      {"status", "stage"},
		"notes":       {"notes", "note", "comment", "comments"},
	}
	out := map[string]string{}
	for canon, names := range groups {
		for _, n := range names {
			out[n] = canon
		}
	}
	return out
}()

// collectIgnored lists the external fields no mapping uses: a whole object
// when nothing inside it matched, else its unmatched members.
func collectIgnored(m map[string]any, prefix string, matched map[string]bool, out *[]FieldMapping, depth int) {
	for _, k := range sortedKeys(m) {
		if !validSegment(k) {
			continue // cannot be named by a dotted path; it passes through
		}
		path := joinPath(prefix, k)
		if path == "" || matched[path] {
			continue
		}
		obj, isObj := m[k].(map[string]any)
		if !isObj || len(obj) == 0 || depth >= maxSuggestDepth || !anyMatchedUnder(path, matched) {
			*out = append(*out, FieldMapping{Source: path, Ignore: true})
			continue
		}
		collectIgnored(obj, path, matched, out, depth+1)
	}
}

func anyMatchedUnder(prefix string, matched map[string]bool) bool {
	for p := range matched {
		if strings.HasPrefix(p, prefix+".") {
			return true
		}
	}
	return false
}

// validSegment: a key that can be one segment of a valid dotted path.
func validSegment(k string) bool {
	return k != "" && !strings.Contains(k, ".") && !hasSpaceOrControl(k) && utf8.ValidString(k)
}

// joinPath returns "" when the path would be too long to save in a mapping.
func joinPath(prefix, k string) string {
	p := k
	if prefix != "" {
		p = prefix + "." + k
	}
	if len(p) > MaxPathLength {
		return ""
	}
	return p
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
