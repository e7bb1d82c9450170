package secrets

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/castiel/integration-manager/domain"
)

// HTTP is the client of the fleet's Secret Management service.
//
// The REST contract (JSON bodies, values base64-encoded with the standard
// alphabet, refs opaque strings chosen by the service):
//
//	POST   {base}/api/v1/secrets                       {"tenantId": "...", "value": "<base64>"}
//	       → 201 {"ref": "..."}
//	GET    {base}/api/v1/secrets/{ref}?tenantId=...    → 200 {"value": "<base64>"}
//	PUT    {base}/api/v1/secrets/{ref}?tenantId=...    {"value": "<base64>"} → 204 (or 200)
//	DELETE {base}/api/v1/secrets/{ref}?tenantId=...    → 204 (or 200)
//
// {ref} is one path segment, percent-encoded (a "/" in the ref travels as
// %2F). The service answers 404 for a ref that does not exist or belongs to
// another tenant; 400/413/422 for a request it refuses. Here, 404 becomes
// ErrNotFound; 408, 429, 5xx, timeouts and connection errors become
// ErrUnavailable; 400/413/422 become ErrInvalid. Errors name the operation,
// the ref and the status, never a value or a response body.
type HTTP struct {
	base   string
	client *http.Client
}

var _ Store = (*HTTP)(nil)

const (
	defaultHTTPTimeout = 10 * time.Second
	maxResponseBytes   = 1 << 20
)

// NewHTTP returns a client of the Secret Management service at baseURL
// (services.secretManagement.url). A nil client means one with a 10 s timeout.
func NewHTTP(baseURL string, client *http.Client) (*HTTP, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("secrets: Secret Management URL %q must be an absolute http(s) URL", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("secrets: Secret Management URL %q must not carry a query or fragment", baseURL)
	}
	if client == nil {
		client = &http.Client{Timeout: defaultHTTPTimeout}
	}
	return &HTTP{base: strings.TrimRight(baseURL, "/") + "/api/v1/secrets", client: client}, nil
}

type putRequest struct {
	TenantID string `json:"tenantId,omitempty"`
	Value    string `json:"value"`
}

// Put stores value with the service and returns the service's reference.
func (h *HTTP) Put(ctx context.Context, tenantID string, value []byte) (string, error) {
	if err := checkPut(tenantID, value); err != nil {
		return "", err
	}
	body := putRequest{TenantID: tenantID, Value: base64.StdEncoding.EncodeToString(value)}
	var out struct {
		Ref string `json:"ref"`
	}
	if err := h.do(ctx, "put", "", http.MethodPost, h.base, body, &out, http.StatusCreated, http.StatusOK); err != nil {
		return "", err
	}
	if out.Ref == "" || len(out.Ref) > domain.MaxSecretRefLength {
		return "", fmt.Errorf("secrets: put: Secret Management answered no ref or one longer than %d bytes", domain.MaxSecretRefLength)
	}
	return out.Ref, nil
}

// Get fetches the value behind ref.
func (h *HTTP) Get(ctx context.Context, tenantID, ref string) ([]byte, error) {
	target, err := h.refURL(tenantID, ref)
	if err != nil {
		return nil, err
	}
	var out struct {
		Value *string `json:"value"`
	}
	if err := h.do(ctx, "get", ref, http.MethodGet, target, nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	if out.Value == nil {
		return nil, fmt.Errorf("secrets: get %s: Secret Management answered without a value", ref)
	}
	value, err := base64.StdEncoding.DecodeString(*out.Value)
	if err != nil {
		// Not wrapped: the decoder's error could quote part of the value.
		return nil, fmt.Errorf("secrets: get %s: Secret Management answered a value that is not base64", ref)
	}
	return value, nil
}

// Replace overwrites the value behind ref.
func (h *HTTP) Replace(ctx context.Context, tenantID, ref string, value []byte) error {
	if err := checkPut(tenantID, value); err != nil {
		return err
	}
	target, err := h.refURL(tenantID, ref)
	if err != nil {
		return err
	}
	body := putRequest{Value: base64.StdEncoding.EncodeToString(value)}
	return h.do(ctx, "replace", ref, http.MethodPut, target, body, nil, http.StatusNoContent, http.StatusOK)
}

// Delete removes the value behind ref.
func (h *HTTP) Delete(ctx context.Context, tenantID, ref string) error {
	target, err := h.refURL(tenantID, ref)
	if err != nil {
		return err
	}
	return h.do(ctx, "delete", ref, http.MethodDelete, target, nil, nil, http.StatusNoContent, http.StatusOK)
}

func (h *HTTP) refURL(tenantID, ref string) (string, error) {
	if err := checkTenant(tenantID); err != nil {
		return "", err
	}
	if ref == "" {
		return "", fmt.Errorf("%w: empty reference", ErrNotFound)
	}
	return h.base + "/" + url.PathEscape(ref) + "?tenantId=" + url.QueryEscape(tenantID), nil
}

// do sends one request and decodes a JSON answer into out (if not nil).
func (h *HTTP) do(ctx context.Context, op, ref, method, target string, in, out any, okStatus ...int) error {
	what := op
	if ref != "" {
		what += " " + ref
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("secrets: %s: encode request: %w", what, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return fmt.Errorf("secrets: %s: %w", what, err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.client.Do(req)
	if err != nil {
		// Connection refused, reset, timeout, cancelled context: all transient.
		return fmt.Errorf("secrets: %s: %w: %w", what, ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if !slices.Contains(okStatus, resp.StatusCode) {
		// Drain (bounded) so the connection can be reused; the body is never
		// quoted, it might echo the request.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
		return statusErr(what, resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
		return nil
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("secrets: %s: read answer: %w: %w", what, ErrUnavailable, err)
	}
	if len(raw) > maxResponseBytes {
		return fmt.Errorf("secrets: %s: answer larger than %d bytes", what, maxResponseBytes)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		// Not wrapped: a syntax error may quote bytes of the answer.
		return fmt.Errorf("secrets: %s: answer (%s) is not the expected JSON", what, resp.Header.Get("Content-Type"))
	}
	return nil
}

func statusErr(what string, resp *http.Response) error {
	code := resp.StatusCode
	switch {
	case code == http.StatusNotFound:
		return fmt.Errorf("%w: %s", ErrNotFound, what)
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500:
		return fmt.Errorf("secrets: %s: %w: Secret Management answered %s", what, ErrUnavailable, resp.Status)
	case code == http.StatusBadRequest, code == http.StatusRequestEntityTooLarge, code == http.StatusUnprocessableEntity:
		return fmt.Errorf("secrets: %s: %w: Secret Management answered %s", what, ErrInvalid, resp.Status)
	default:
		return fmt.Errorf("secrets: %s: Secret Management answered %s", what, resp.Status)
	}
}
