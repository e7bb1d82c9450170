package shards

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// HTTP is the client of the fleet's Shard Manager service.
//
// The REST contract (JSON bodies; {tenantId}, {entity} and {key} are single
// path segments, percent-encoded, so a "/" in a key travels as %2F and a key
// "." or ".." as %2E or %2E%2E):
//
//	GET    {base}/api/v1/tenants/{tenantId}/entities/{entity}/records/{key}
//	       → 200 Record
//	PUT    {base}/api/v1/tenants/{tenantId}/entities/{entity}/records/{key}
//	       {"data": {...}} → 200 Record (the version written)
//	DELETE {base}/api/v1/tenants/{tenantId}/entities/{entity}/records/{key}
//	       → 204
//	GET    {base}/api/v1/tenants/{tenantId}/entities/{entity}/records?pageToken=&limit=
//	       → 200 {"records": [Record, ...], "nextPageToken": "..."}
//
// where Record is {"key", "data", "version", "modifiedAt" (RFC 3339),
// "deleted"}. The list holds every record in a stable order, tombstones of
// recently deleted records included (deleted: true, no data); nextPageToken is
// empty on the last page. GET and DELETE answer 404 for a record that is
// absent or deleted.
//
// Here, 404 becomes ErrNotFound; 408, 429, 5xx, timeouts and connection errors
// become ErrUnavailable; 400/413/422 become ErrInvalid. Every request is
// idempotent, so transient failures are retried (with exponential backoff,
// honouring Retry-After up to the backoff ceiling) before ErrUnavailable is
// returned.
type HTTP struct {
	base        string
	client      *http.Client
	maxAttempts int
	minBackoff  time.Duration
	maxBackoff  time.Duration
}

var _ Store = (*HTTP)(nil)

const (
	defaultHTTPTimeout = 10 * time.Second
	maxResponseBytes   = 2*MaxRecordBytes + MaxListLimit*1024 // a full page of keys and data fits
)

// HTTPOption adjusts NewHTTP.
type HTTPOption func(*HTTP)

// WithRetries sets how many times a request is tried in all (1: no retry)
// and the backoff between tries.
func WithRetries(attempts int, minBackoff, maxBackoff time.Duration) HTTPOption {
	return func(h *HTTP) {
		if attempts >= 1 {
			h.maxAttempts = attempts
		}
		if minBackoff > 0 {
			h.minBackoff = minBackoff
		}
		if maxBackoff >= h.minBackoff {
			h.maxBackoff = maxBackoff
		}
	}
}

// NewHTTP returns a client of the Shard Manager at baseURL
// (services.shardManager.url). A nil client means one with a 10 s timeout;
// by default a request is tried 3 times, 100 ms to 2 s apart.
func NewHTTP(baseURL string, client *http.Client, opts ...HTTPOption) (*HTTP, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("shards: Shard Manager URL %q must be an absolute http(s) URL", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("shards: Shard Manager URL %q must not carry a query or fragment", baseURL)
	}
	if client == nil {
		client = &http.Client{Timeout: defaultHTTPTimeout}
	}
	h := &HTTP{
		base:        strings.TrimRight(baseURL, "/") + "/api/v1/tenants/",
		client:      client,
		maxAttempts: 3,
		minBackoff:  100 * time.Millisecond,
		maxBackoff:  2 * time.Second,
	}
	for _, o := range opts {
		o(h)
	}
	return h, nil
}

func (h *HTTP) recordsURL(tenantID, entity string) string {
	return h.base + segment(tenantID) + "/entities/" + segment(entity) + "/records"
}

func (h *HTTP) recordURL(tenantID, entity, key string) string {
	return h.recordsURL(tenantID, entity) + "/" + segment(key)
}

// segment percent-encodes one path segment. "." and ".." are sent as %2E and
// %2E%2E, or clients and servers would resolve them as relative paths.
func segment(s string) string {
	if s == "." || s == ".." {
		return strings.Repeat("%2E", len(s))
	}
	return url.PathEscape(s)
}

// Get reads one live record.
func (h *HTTP) Get(ctx context.Context, tenantID, entity, key string) (Record, error) {
	if err := checkRef(tenantID, entity, key); err != nil {
		return Record{}, err
	}
	var rec Record
	if err := h.do(ctx, "get "+key, http.MethodGet, h.recordURL(tenantID, entity, key), nil, &rec, http.StatusOK); err != nil {
		return Record{}, err
	}
	return rec, checkAnswer("get", key, rec)
}

// Put writes one record.
func (h *HTTP) Put(ctx context.Context, tenantID, entity, key string, data map[string]any) (Record, error) {
	if err := checkRef(tenantID, entity, key); err != nil {
		return Record{}, err
	}
	if data == nil {
		data = map[string]any{}
	}
	body, err := json.Marshal(putBody{Data: data})
	if err != nil {
		return Record{}, fmt.Errorf("%w: record %s cannot be encoded as JSON: %v", ErrInvalid, key, err)
	}
	if len(body) > MaxRecordBytes+len(`{"data":}`) {
		return Record{}, fmt.Errorf("%w: record %s of %d bytes exceeds %d", ErrInvalid, key, len(body), MaxRecordBytes)
	}
	var rec Record
	if err := h.do(ctx, "put "+key, http.MethodPut, h.recordURL(tenantID, entity, key), body, &rec, http.StatusOK, http.StatusCreated); err != nil {
		return Record{}, err
	}
	return rec, checkAnswer("put", key, rec)
}

// Delete removes one record.
func (h *HTTP) Delete(ctx context.Context, tenantID, entity, key string) error {
	if err := checkRef(tenantID, entity, key); err != nil {
		return err
	}
	return h.do(ctx, "delete "+key, http.MethodDelete, h.recordURL(tenantID, entity, key), nil, nil, http.StatusNoContent, http.StatusOK)
}

// httpBatchConcurrency bounds the requests one WriteBatch has in flight.
const httpBatchConcurrency = 16

// WriteBatch sends one request per write (the Shard Manager's contract has
// no batch request), up to httpBatchConcurrency at a time.
func (h *HTTP) WriteBatch(ctx context.Context, tenantID, entity string, writes []Write) ([]WriteResult, error) {
	if err := checkWrites(tenantID, entity, writes); err != nil {
		return nil, err
	}
	results := make([]WriteResult, len(writes))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(httpBatchConcurrency, len(writes)) {
		wg.Go(func() {
			for i := range next {
				w := writes[i]
				if w.Delete {
					results[i].Err = h.Delete(ctx, tenantID, entity, w.Key)
				} else {
					results[i].Record, results[i].Err = h.Put(ctx, tenantID, entity, w.Key, w.Data)
				}
			}
		})
	}
	for i := range writes {
		next <- i
	}
	close(next)
	wg.Wait()
	return results, nil
}

// List reads one page of records.
func (h *HTTP) List(ctx context.Context, tenantID, entity, pageToken string, limit int) ([]Record, string, error) {
	if err := checkTenantEntity(tenantID, entity); err != nil {
		return nil, "", err
	}
	q := url.Values{}
	if pageToken != "" {
		q.Set("pageToken", pageToken)
	}
	q.Set("limit", strconv.Itoa(listLimit(limit)))
	var page listBody
	if err := h.do(ctx, "list "+entity, http.MethodGet, h.recordsURL(tenantID, entity)+"?"+q.Encode(), nil, &page, http.StatusOK); err != nil {
		return nil, "", err
	}
	for _, r := range page.Records {
		if err := checkAnswer("list", entity, r); err != nil {
			return nil, "", err
		}
	}
	if page.Records == nil {
		page.Records = []Record{}
	}
	return page.Records, page.NextPageToken, nil
}

type putBody struct {
	Data map[string]any `json:"data"`
}

type listBody struct {
	Records       []Record `json:"records"`
	NextPageToken string   `json:"nextPageToken,omitempty"`
}

func checkAnswer(op, what string, r Record) error {
	if r.Key == "" {
		return fmt.Errorf("shards: %s %s: the Shard Manager answered a record without a key", op, what)
	}
	return nil
}

// do sends a request, retrying transient failures, and decodes a JSON answer
// into out (if not nil).
func (h *HTTP) do(ctx context.Context, what, method, target string, body []byte, out any, okStatus ...int) error {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(h.minBackoff),
		backoff.WithMaxInterval(h.maxBackoff),
		backoff.WithMaxElapsedTime(0),
	)
	for attempt := 1; ; attempt++ {
		wait, err := h.once(ctx, what, method, target, body, out, okStatus)
		switch {
		case err == nil:
			return nil
		case !IsTransient(err) || ctx.Err() != nil:
			return err
		case attempt >= h.maxAttempts:
			if attempt > 1 {
				return fmt.Errorf("%w (after %d attempts)", err, attempt)
			}
			return err
		}
		d := b.NextBackOff()
		if wait > d {
			d = min(wait, h.maxBackoff)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (retry abandoned: %w)", err, ctx.Err())
		case <-t.C:
		}
	}
}

// once sends one request; wait is the server's Retry-After, if any.
func (h *HTTP) once(ctx context.Context, what, method, target string, body []byte, out any, okStatus []int) (wait time.Duration, err error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return 0, fmt.Errorf("shards: %s: %w", what, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.client.Do(req)
	if err != nil {
		// Connection refused, reset, timeout, cancelled context: all transient.
		return 0, fmt.Errorf("shards: %s: %w: %w", what, ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if !slices.Contains(okStatus, resp.StatusCode) {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return retryAfter(resp), statusErr(what, resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return 0, nil
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return 0, fmt.Errorf("shards: %s: read answer: %w: %w", what, ErrUnavailable, err)
	}
	if len(raw) > maxResponseBytes {
		return 0, fmt.Errorf("shards: %s: answer larger than %d bytes", what, maxResponseBytes)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return 0, fmt.Errorf("shards: %s: answer (%s) is not the expected JSON: %w", what, resp.Header.Get("Content-Type"), err)
	}
	return 0, nil
}

func retryAfter(resp *http.Response) time.Duration {
	v := resp.Header.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t)
	}
	return 0
}

func statusErr(what string, resp *http.Response) error {
	code := resp.StatusCode
	switch {
	case code == http.StatusNotFound:
		return fmt.Errorf("%w: %s", ErrNotFound, what)
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500:
		return fmt.Errorf("shards: %s: %w: Shard Manager answered %s", what, ErrUnavailable, resp.Status)
	case code == http.StatusBadRequest, code == http.StatusRequestEntityTooLarge, code == http.StatusUnprocessableEntity:
		return fmt.Errorf("shards: %s: %w: Shard Manager answered %s", what, ErrInvalid, resp.Status)
	default:
		return fmt.Errorf("shards: %s: Shard Manager answered %s", what, resp.Status)
	}
}
