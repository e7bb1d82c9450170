package embedded

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/castiel/integration-manager/store"
)

// Keys: uvarint(len(partitionKey)) | partitionKey | id.
//
// The length prefix makes a partition's keys one contiguous range that no
// other partition shares ("tenant-a" never prefixes "tenant-ab"'s keys, whose
// length differs), and inside it keys sort by id bytes, so a partition query is
// a prefix scan in id order.

func partitionPrefix(pk string) []byte {
	p := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(pk)), uint64(len(pk)))
	return append(p, pk...)
}

func docKey(pk, id string) []byte {
	return append(partitionPrefix(pk), id...)
}

// splitKey is the inverse of docKey.
func splitKey(k []byte) (pk, id string, err error) {
	n, w := binary.Uvarint(k)
	if w <= 0 || uint64(len(k)-w) < n {
		return "", "", fmt.Errorf("corrupt document key %q", k)
	}
	return string(k[w : w+int(n)]), string(k[w+int(n):]), nil
}

// prefixEnd is the smallest key greater than every key starting with p, or
// nil when there is none (p is all 0xff).
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// envelope is the stored value: version and write metadata, then the body.
//
//	[0]      format version (1)
//	[1:9]    last write, unix nanoseconds, big endian
//	[9:17]   ttl in seconds (0: never expires), big endian
//	[17]     length of the ETag
//	[18:18+n] ETag
//	rest     JSON body as written (with "ttl" stamped in TTL containers)
type envelope struct {
	written time.Time
	ttl     int64
	etag    string
	body    []byte
}

const envelopeVersion = 1

func (e envelope) encode() []byte {
	out := make([]byte, 0, 18+len(e.etag)+len(e.body))
	out = append(out, envelopeVersion)
	out = binary.BigEndian.AppendUint64(out, uint64(e.written.UnixNano()))
	out = binary.BigEndian.AppendUint64(out, uint64(e.ttl))
	out = append(out, byte(len(e.etag)))
	out = append(out, e.etag...)
	return append(out, e.body...)
}

// decodeEnvelope reads v without copying: the body aliases v, which bbolt only
// guarantees for the life of the transaction.
func decodeEnvelope(v []byte) (envelope, error) {
	if len(v) < 18 || v[0] != envelopeVersion {
		return envelope{}, errors.New("corrupt or unknown document envelope")
	}
	n := int(v[17])
	if len(v) < 18+n {
		return envelope{}, errors.New("corrupt document envelope: truncated etag")
	}
	return envelope{
		written: time.Unix(0, int64(binary.BigEndian.Uint64(v[1:9]))),
		ttl:     int64(binary.BigEndian.Uint64(v[9:17])),
		etag:    string(v[18 : 18+n]),
		body:    v[18+n:],
	}, nil
}

// expiresAt is zero when the document never expires.
func (e envelope) expiresAt() time.Time {
	if e.ttl <= 0 {
		return time.Time{}
	}
	return e.written.Add(time.Duration(e.ttl) * time.Second)
}

func (e envelope) expired(now time.Time) bool {
	at := e.expiresAt()
	return !at.IsZero() && !now.Before(at)
}

// expiryKey orders the expiry index by time, then document.
func expiryKey(at time.Time, key []byte) []byte {
	out := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(key)), uint64(at.UnixNano()))
	return append(out, key...)
}

// formatETag gives a quoted, opaque tag like Cosmos's; seq is unique in the
// container for the life of the file.
func formatETag(seq uint64) string {
	return `"` + strconv.FormatUint(seq, 16) + `"`
}

// withSystemProperties appends "_etag" and "_ts" to a stored body, as Cosmos
// returns them, into a new slice the caller owns.
func withSystemProperties(body []byte, e envelope) []byte {
	inner := bytes.TrimRight(body, " \t\r\n")
	inner = inner[:len(inner)-1] // the closing '}'
	out := make([]byte, 0, len(inner)+48+len(e.etag))
	out = append(out, inner...)
	if t := bytes.TrimRight(inner, " \t\r\n"); t[len(t)-1] != '{' {
		out = append(out, ',')
	}
	out = append(out, `"_etag":`...)
	out = strconv.AppendQuote(out, e.etag) // our ETags are printable ASCII: Go quoting is JSON quoting
	out = append(out, `,"_ts":`...)
	out = strconv.AppendInt(out, e.written.Unix(), 10)
	return append(out, '}')
}

// isSystemProperty: properties the store owns. Values a caller sends back (say,
// a body it read and modified) are dropped, as Cosmos does.
func isSystemProperty(name string) bool {
	switch name {
	case "_etag", "_ts", "_rid", "_self", "_attachments":
		return true
	}
	return false
}

// prepareBody checks a body is a JSON object whose "id" and partition key
// property match the call (Cosmos refuses a mismatch too), drops system
// properties, and in TTL containers stamps the default "ttl" when the body
// has none. It returns the body to store and its ttl in seconds (0: never).
func (c *container) prepareBody(pk, id string, body []byte) ([]byte, int64, error) {
	if err := checkKey(pk, id); err != nil {
		return nil, 0, fmt.Errorf("embedded: %s: %w", c.spec.Name, err)
	}
	if len(body) > maxBodyBytes {
		return nil, 0, fmt.Errorf("embedded: %s/%s: body of %d bytes exceeds the %d-byte document limit", c.spec.Name, id, len(body), maxBodyBytes)
	}
	if stored, ttl, ok := c.prepareCommonBody(pk, id, body); ok {
		return stored, ttl, nil
	}
	return c.prepareAnyBody(pk, id, body)
}

// prepareAnyBody is prepareBody for any body, decoding its properties.
func (c *container) prepareAnyBody(pk, id string, body []byte) ([]byte, int64, error) {
	var props map[string]json.RawMessage
	if err := json.Unmarshal(body, &props); err != nil || props == nil {
		return nil, 0, fmt.Errorf("embedded: %s/%s: body is not a JSON object: %v", c.spec.Name, id, err)
	}
	if got, ok := stringProp(props, "id"); !ok || got != id {
		return nil, 0, fmt.Errorf("embedded: %s/%s: body's \"id\" is %s, want %q", c.spec.Name, id, props["id"], id)
	}
	if got, ok := stringProp(props, c.spec.PartitionKey); !ok || got != pk {
		return nil, 0, fmt.Errorf("embedded: %s/%s: body's %q is %s, want the partition key %q",
			c.spec.Name, id, c.spec.PartitionKey, props[c.spec.PartitionKey], pk)
	}
	stripped := false
	for p := range props {
		if isSystemProperty(p) {
			delete(props, p)
			stripped = true
		}
	}
	if raw, ok := props["ttl"]; ok && c.ttlSeconds > 0 && string(bytes.TrimSpace(raw)) == "null" {
		// A null ttl (say, a nil *int field) means "the container's default".
		delete(props, "ttl")
		stripped = true
	}
	if stripped {
		var err error
		if body, err = json.Marshal(props); err != nil {
			return nil, 0, fmt.Errorf("embedded: %s/%s: re-encode body: %w", c.spec.Name, id, err)
		}
	}
	body = bytes.TrimRight(body, " \t\r\n")
	if c.ttlSeconds == 0 {
		// Without expiry on the container a document's ttl means nothing (as in Cosmos).
		return body, 0, nil
	}
	raw, has := props["ttl"]
	if !has {
		stamped := make([]byte, 0, len(body)+24)
		stamped = append(stamped, body[:len(body)-1]...)
		if len(props) > 0 {
			stamped = append(stamped, ',')
		}
		stamped = append(stamped, `"ttl":`...)
		stamped = strconv.AppendInt(stamped, c.ttlSeconds, 10)
		return append(stamped, '}'), c.ttlSeconds, nil
	}
	ttl, err := parseTTL(raw)
	if err != nil {
		return nil, 0, fmt.Errorf("embedded: %s/%s: %w", c.spec.Name, id, err)
	}
	return body, ttl, nil
}

// prepareCommonBody is prepareBody for the bodies writers send almost always
// (valid JSON objects naming the right id and partition key without
// escapes, no system properties, no null ttl): it reads the top-level
// properties in place instead of decoding every one into a map. ok false
// leaves the body to the general path, which also words the refusals.
func (c *container) prepareCommonBody(pk, id string, body []byte) (stored []byte, ttl int64, ok bool) {
	var idRaw, pkRaw, ttlRaw []byte
	n := 0
	ok = validObject(body, func(key, value []byte) bool {
		n++
		switch {
		case string(key) == "id":
			idRaw = value
		case string(key) == c.spec.PartitionKey:
			pkRaw = value
		case string(key) == "ttl":
			ttlRaw = value
		case len(key) > 0 && key[0] == '_' && isSystemProperty(string(key)):
			return false
		}
		return true
	})
	if !ok || !plainString(idRaw, id) || !plainString(pkRaw, pk) {
		return nil, 0, false
	}
	body = bytes.TrimRight(body, " \t\r\n")
	if c.ttlSeconds == 0 {
		return body, 0, true
	}
	if ttlRaw == nil {
		stamped := make([]byte, 0, len(body)+24)
		stamped = append(stamped, body[:len(body)-1]...)
		if n > 0 {
			stamped = append(stamped, ',')
		}
		stamped = append(stamped, `"ttl":`...)
		stamped = strconv.AppendInt(stamped, c.ttlSeconds, 10)
		return append(stamped, '}'), c.ttlSeconds, true
	}
	if string(ttlRaw) == "null" {
		return nil, 0, false
	}
	ttl, err := parseTTL(ttlRaw)
	if err != nil {
		return nil, 0, false
	}
	return body, ttl, true
}

// plainString reports whether raw is the JSON string want, written without
// escapes.
func plainString(raw []byte, want string) bool {
	return len(raw) == len(want)+2 && raw[0] == '"' && raw[len(raw)-1] == '"' &&
		string(raw[1:len(raw)-1]) == want && bytes.IndexByte(raw, '\\') < 0
}

// Cosmos DB's limits, enforced here too so code that works standalone works
// on Cosmos (and so bbolt never sees a key or value too large, which it
// would report as a storage failure).
const (
	maxIDBytes           = 1023
	maxPartitionKeyBytes = 2048
	maxBodyBytes         = 2 << 20
)

func checkKey(pk, id string) error {
	switch {
	case pk == "" || id == "":
		return fmt.Errorf("empty partition key or id (%q, %q)", pk, id)
	case len(id) > maxIDBytes:
		return fmt.Errorf("id of %d bytes exceeds %d", len(id), maxIDBytes)
	case len(pk) > maxPartitionKeyBytes:
		return fmt.Errorf("partition key of %d bytes exceeds %d", len(pk), maxPartitionKeyBytes)
	case strings.ContainsAny(id, `/\?#`):
		return fmt.Errorf("id %q contains one of / \\ ? # (Cosmos DB refuses them)", id)
	}
	return nil
}

// parseTTL accepts what Cosmos accepts: a positive whole number of seconds,
// or -1 for "never expires" (stored as 0).
func parseTTL(raw json.RawMessage) (int64, error) {
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || f != math.Trunc(f) || (f <= 0 && f != -1) || f > math.MaxInt32 {
		return 0, fmt.Errorf("\"ttl\" must be a positive whole number of seconds or -1, not %s", raw)
	}
	if f == -1 {
		return 0, nil
	}
	return int64(f), nil
}

func stringProp(props map[string]json.RawMessage, name string) (string, bool) {
	raw, ok := props[name]
	if !ok {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// continuation is the decoded page token: the last id returned, and for
// cross-partition queries its partition (ids repeat across partitions).
type continuation struct {
	After string `json:"after"`
	PK    string `json:"pk,omitempty"`
}

func encodeToken(t continuation) string {
	raw, _ := json.Marshal(t) // two strings: cannot fail
	return base64.RawURLEncoding.EncodeToString(raw)
}

func decodeToken(s string, crossPartition bool) (continuation, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return continuation{}, fmt.Errorf("%w: continuation token is not base64url", store.ErrInvalidQuery)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var t continuation
	if err := dec.Decode(&t); err != nil || dec.More() {
		return continuation{}, fmt.Errorf("%w: continuation token is malformed", store.ErrInvalidQuery)
	}
	if t.After == "" || (t.PK == "") == crossPartition {
		return continuation{}, fmt.Errorf("%w: continuation token does not belong to this kind of query", store.ErrInvalidQuery)
	}
	return t, nil
}

// matcher holds the normalised filters of a query.
type matcher []store.Filter

func newMatcher(filters []store.Filter) (matcher, error) {
	m := make(matcher, 0, len(filters))
	for _, f := range filters {
		if f.Field == "" {
			return nil, fmt.Errorf("%w: filter with an empty field name", store.ErrInvalidQuery)
		}
		v, err := normaliseValue(f.Value)
		if err != nil {
			return nil, fmt.Errorf("%w: filter on %q: %v", store.ErrInvalidQuery, f.Field, err)
		}
		m = append(m, store.Filter{Field: f.Field, Value: v})
	}
	return m, nil
}

// normaliseValue maps a filter value to what encoding/json decodes the same
// JSON into (numbers as float64), so equality is a plain comparison.
func normaliseValue(v any) (any, error) {
	switch x := v.(type) {
	case nil, string, bool, float64:
		return x, nil
	case float32:
		return float64(x), nil
	case int:
		return float64(x), nil
	case int8:
		return float64(x), nil
	case int16:
		return float64(x), nil
	case int32:
		return float64(x), nil
	case int64:
		return float64(x), nil
	case uint:
		return float64(x), nil
	case uint8:
		return float64(x), nil
	case uint16:
		return float64(x), nil
	case uint32:
		return float64(x), nil
	case uint64:
		return float64(x), nil
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return nil, err
		}
		return f, nil
	default:
		return nil, fmt.Errorf("value of type %T: only strings, bools, numbers and nil can be compared", v)
	}
}

// match reports whether body satisfies every filter. A property that is
// absent never matches, not even nil (Cosmos: undefined is not null).
func (m matcher) match(body []byte) (bool, error) {
	if len(m) == 0 {
		return true, nil
	}
	var props map[string]json.RawMessage
	if err := json.Unmarshal(body, &props); err != nil {
		return false, err
	}
	for _, f := range m {
		raw, ok := props[f.Field]
		if !ok {
			return false, nil
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return false, err
		}
		if v != f.Value {
			return false, nil
		}
	}
	return true, nil
}
