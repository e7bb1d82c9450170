package connector

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/castiel/integration-manager/domain"
)

// PageRequest asks for one page of an entity.
type PageRequest struct {
	// PageToken is the NextPageToken of the previous page; "" asks for the
	// first page. It is safe to store (a checkpoint) and to resume from in
	// another process: it carries a position, never a credential.
	PageToken string
	// Since is the incremental cursor (the entity's cursorParam value, in its
	// cursorFormat), usually a previous run's MaxCursor; "" reads everything.
	Since string
}

// Page is one page of records.
type Page struct {
	Records       []map[string]any
	NextPageToken string // "" on the last page
	// MaxCursor is the highest cursorField value on this page, as the API
	// wrote it ("" when the entity has no cursor field or no record had one).
	MaxCursor string
}

// Page tokens are "<kind>:<position>" so a token saved under another
// pagination kind is refused instead of misread.
const (
	tokCursor = "c:"
	tokPage   = "p:"
	tokOffset = "o:"
	tokLink   = "l:"
)

// ListPage reads one page of entity's records.
func (c *Client) ListPage(ctx context.Context, entity string, req PageRequest) (Page, error) {
	e, err := c.entity(entity)
	if err != nil {
		return Page{}, err
	}
	return c.listPage(ctx, "list "+entity, e, e.ListPath, req)
}

// ListDeletedPage reads one page of the entity's deleted-records endpoint
// (deletedPath), paged and filtered like ListPage. ErrUnsupported when the
// provider has no such endpoint for the entity.
func (c *Client) ListDeletedPage(ctx context.Context, entity string, req PageRequest) (Page, error) {
	e, err := c.entity(entity)
	if err != nil {
		return Page{}, err
	}
	if e.DeletedPath == "" {
		return Page{}, fmt.Errorf("%w: entity %q has no deletedPath", ErrUnsupported, entity)
	}
	return c.listPage(ctx, "list deleted "+entity, e, e.DeletedPath, req)
}

// HasDeletedEndpoint reports whether ListDeletedPage can serve entity.
func (c *Client) HasDeletedEndpoint(entity string) bool {
	e, ok := c.p.Entity(entity)
	return ok && e.DeletedPath != ""
}

// IsDeleted reports whether rec carries the entity's deleted flag (true,
// "true", or a non-zero number at deletedFlagField).
func (c *Client) IsDeleted(entity string, rec map[string]any) bool {
	e, ok := c.p.Entity(entity)
	if !ok || e.DeletedFlagField == "" {
		return false
	}
	v, _ := lookup(rec, e.DeletedFlagField)
	switch v := v.(type) {
	case bool:
		return v
	case string:
		b, err := strconv.ParseBool(v)
		return err == nil && b
	case json.Number:
		f, err := v.Float64()
		return err == nil && f != 0
	case float64:
		return v != 0
	}
	return false
}

// RecordID returns the record's primary key as a string.
func (c *Client) RecordID(entity string, rec map[string]any) (string, error) {
	e, err := c.entity(entity)
	if err != nil {
		return "", err
	}
	v, ok := lookup(rec, e.PrimaryKey)
	if !ok || v == nil {
		return "", fmt.Errorf("connector: %s record has no %q (its primary key)", entity, e.PrimaryKey)
	}
	switch v := v.(type) {
	case string:
		if v == "" {
			return "", fmt.Errorf("connector: %s record has an empty %q (its primary key)", entity, e.PrimaryKey)
		}
		return v, nil
	case json.Number:
		return v.String(), nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case bool, map[string]any, []any:
		return "", fmt.Errorf("connector: %s record's %q is not a scalar id", entity, e.PrimaryKey)
	}
	return fmt.Sprint(v), nil
}

func (c *Client) entity(name string) (domain.EntityDef, error) {
	e, ok := c.p.Entity(name)
	if !ok {
		return domain.EntityDef{}, fmt.Errorf("%w: %q in provider %q", ErrUnknownEntity, name, c.p.ID)
	}
	return e, nil
}

func (c *Client) listPage(ctx context.Context, op string, e domain.EntityDef, pathTemplate string, req PageRequest) (Page, error) {
	pg := c.p.Pagination
	pos, err := decodePageToken(pg.Kind, req.PageToken)
	if err != nil {
		return Page{}, err
	}
	if req.Since != "" && !e.SupportsIncremental() {
		return Page{}, fmt.Errorf("%w: entity %q has no incremental cursor (cursorParam/cursorField)", ErrUnsupported, e.Name)
	}

	var u *url.URL
	if pg.Kind == domain.PaginationLinkHeader && pos != "" {
		// The API built this URL with every parameter it needs.
		if u, err = c.sameOrigin(pos); err != nil {
			return Page{}, err
		}
	} else {
		if u, err = c.endpoint(pathTemplate, nil); err != nil {
			return Page{}, err
		}
		q := u.Query()
		if req.Since != "" {
			q.Set(e.CursorParam, req.Since)
		}
		if pg.SizeParam != "" && pg.PageSize > 0 {
			q.Set(pg.SizeParam, strconv.Itoa(pg.PageSize))
		}
		switch pg.Kind {
		case domain.PaginationCursor:
			if pos != "" {
				q.Set(pg.Param, pos)
			}
		case domain.PaginationPage:
			q.Set(pg.Param, cmpOr(pos, "1"))
		case domain.PaginationOffset:
			q.Set(pg.Param, cmpOr(pos, "0"))
		}
		u.RawQuery = q.Encode()
	}

	resp, err := c.do(ctx, call{op: op, method: http.MethodGet, url: u})
	if err != nil {
		return Page{}, err
	}
	root, err := decodeJSON(resp.body)
	if err != nil {
		return Page{}, &Error{Op: op, Status: resp.status, Permanent: true, Msg: "response is not JSON: " + err.Error()}
	}
	items, err := itemsAt(root, pg.ItemsPath)
	if err != nil {
		return Page{}, &Error{Op: op, Status: resp.status, Permanent: true, Msg: err.Error()}
	}
	page := Page{Records: make([]map[string]any, 0, len(items))}
	var maxT time.Time
	for i, it := range items {
		rec, ok := it.(map[string]any)
		if !ok {
			return Page{}, &Error{Op: op, Status: resp.status, Permanent: true, Msg: fmt.Sprintf("item %d at %q is not an object", i, pg.ItemsPath)}
		}
		page.Records = append(page.Records, rec)
		if e.CursorField == "" {
			continue
		}
		if raw, t, ok := cursorValue(rec, e.CursorField, e.CursorFormat); ok && (page.MaxCursor == "" || t.After(maxT)) {
			page.MaxCursor, maxT = raw, t
		}
	}

	switch pg.Kind {
	case domain.PaginationCursor:
		next := scalarString(lookupAny(root, pg.NextCursorPath))
		if next != "" && next == pos {
			return Page{}, &Error{Op: op, Permanent: true, Msg: "the API returned the cursor it was given; refusing to loop"}
		}
		if next != "" {
			page.NextPageToken = tokCursor + next
		}
	case domain.PaginationPage:
		if !lastOfCounted(len(items), pg.PageSize) {
			n, _ := strconv.Atoi(cmpOr(pos, "1"))
			page.NextPageToken = tokPage + strconv.Itoa(n+1)
		}
	case domain.PaginationOffset:
		if !lastOfCounted(len(items), pg.PageSize) {
			n, _ := strconv.Atoi(cmpOr(pos, "0"))
			page.NextPageToken = tokOffset + strconv.Itoa(n+len(items))
		}
	case domain.PaginationLinkHeader:
		if next := nextLink(resp.header.Values("Link")); next != "" {
			ref, err := resp.url.Parse(next)
			if err != nil {
				return Page{}, &Error{Op: op, Permanent: true, Msg: "the Link header's next URL is malformed"}
			}
			if _, err := c.sameOrigin(ref.String()); err != nil {
				return Page{}, err
			}
			// The token is saved in checkpoints: an API that copies our
			// query into its links must not put the API key there.
			if qp := c.p.Auth.APIKeyQueryParam; c.p.Auth.Kind == domain.AuthAPIKey && qp != "" {
				q := ref.Query()
				if q.Has(qp) {
					q.Del(qp)
					ref.RawQuery = q.Encode()
				}
			}
			page.NextPageToken = tokLink + ref.String()
		}
	}
	return page, nil
}

// lastOfCounted: page and offset APIs say nothing about a next page, so a
// short page ends the walk; with an unknown page size only an empty one does.
func lastOfCounted(n, pageSize int) bool {
	return n == 0 || (pageSize > 0 && n < pageSize)
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func decodePageToken(kind domain.PaginationKind, tok string) (string, error) {
	if tok == "" {
		return "", nil
	}
	prefix := map[domain.PaginationKind]string{
		domain.PaginationCursor: tokCursor, domain.PaginationPage: tokPage,
		domain.PaginationOffset: tokOffset, domain.PaginationLinkHeader: tokLink,
	}[kind]
	pos, ok := strings.CutPrefix(tok, prefix)
	if prefix == "" || !ok || pos == "" {
		return "", fmt.Errorf("%w (pagination kind %q)", ErrBadPageToken, kind)
	}
	if kind == domain.PaginationPage || kind == domain.PaginationOffset {
		if n, err := strconv.Atoi(pos); err != nil || n < 0 {
			return "", fmt.Errorf("%w: %q is not a %s position", ErrBadPageToken, pos, kind)
		}
	}
	return pos, nil
}

// endpoint joins the base URL and a path template filled from PathVars and vars.
func (c *Client) endpoint(template string, vars map[string]string) (*url.URL, error) {
	all := make(map[string]string, len(c.opts.PathVars)+len(vars))
	for k, v := range c.opts.PathVars {
		all[k] = v
	}
	for k, v := range vars {
		all[k] = v
	}
	p, err := domain.ExpandPath(template, all)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	u := *c.base
	u.Path = strings.TrimRight(c.base.Path, "/") + p
	u.RawPath = ""
	if c.base.RawPath != "" || strings.Contains(p, "%") {
		u.RawPath = strings.TrimRight(c.base.EscapedPath(), "/") + p
	}
	return &u, nil
}

// sameOrigin parses a URL handed to us by the API and refuses one on another
// scheme or host: the client would present the connection's credentials there.
func (c *Client) sameOrigin(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != c.base.Scheme || u.Host != c.base.Host {
		return nil, &Error{Op: "follow next link", Permanent: true, Msg: "the next-page URL is not on the provider's base URL host; refusing to send credentials there"}
	}
	return u, nil
}

func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

func itemsAt(root any, path string) ([]any, error) {
	v := root
	if path != "" {
		var ok bool
		if v, ok = lookupAny(root, path); !ok {
			return nil, fmt.Errorf("response has no %q (the provider's itemsPath)", path)
		}
	}
	switch v := v.(type) {
	case []any:
		return v, nil
	case nil:
		return nil, nil // some APIs send null for an empty page
	}
	if path == "" {
		return nil, fmt.Errorf("response is not a JSON array (the provider's itemsPath is empty)")
	}
	return nil, fmt.Errorf("response's %q is not an array", path)
}

// lookup walks a dotted path through nested objects.
func lookup(m map[string]any, path string) (any, bool) { return lookupAny(m, path) }

func lookupAny(v any, path string) (any, bool) {
	for path != "" {
		var key string
		key, path, _ = strings.Cut(path, ".")
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[key]; !ok {
			return nil, false
		}
	}
	return v, true
}

// scalarString renders a cursor-like scalar; "" for null, absent or composite.
func scalarString(v any, ok bool) string {
	if !ok {
		return ""
	}
	switch v := v.(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return ""
}

// cursorValue reads rec's cursor field and its time.
func cursorValue(rec map[string]any, field string, f domain.TimeFormat) (string, time.Time, bool) {
	raw := scalarString(lookup(rec, field))
	if raw == "" {
		return "", time.Time{}, false
	}
	t, err := f.Parse(raw)
	if err != nil {
		return "", time.Time{}, false
	}
	return raw, t, true
}

// nextLink finds the rel="next" target in Link header values (RFC 8288).
func nextLink(values []string) string {
	for _, v := range values {
		for rest := v; rest != ""; {
			open := strings.IndexByte(rest, '<')
			if open < 0 {
				break
			}
			end := strings.IndexByte(rest[open:], '>')
			if end < 0 {
				break
			}
			target := rest[open+1 : open+end]
			rest = rest[open+end+1:]
			// Parameters run to the next link (a ',' outside quotes).
			params, after := splitLinkParams(rest)
			rest = after
			for _, p := range strings.Split(params, ";") {
				name, val, ok := strings.Cut(strings.TrimSpace(p), "=")
				if !ok || !strings.EqualFold(strings.TrimSpace(name), "rel") {
					continue
				}
				for _, rel := range strings.Fields(strings.Trim(strings.TrimSpace(val), `"`)) {
					if strings.EqualFold(rel, "next") {
						return target
					}
				}
			}
		}
	}
	return ""
}

func splitLinkParams(s string) (params, rest string) {
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				return s[:i], s[i+1:]
			}
		}
	}
	return s, ""
}
