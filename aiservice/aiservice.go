// Package aiservice asks Castiel's AI Service for field mapping suggestions
// and falls back to the deterministic name/type matcher (domain.SuggestMapping)
// when the service is not configured or fails, so a tenant creating a sync
// task always gets a suggestion.
package aiservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/domain"
)

// Errors callers branch on with errors.Is. No error carries sample data.
var (
	// ErrUnavailable: the service could not be reached, timed out, or
	// answered 408/429/5xx.
	ErrUnavailable = errors.New("aiservice: AI Service unavailable")
	// ErrRejected: the service refused the request (another 4xx) or the
	// request was too large to send.
	ErrRejected = errors.New("aiservice: request rejected")
	// ErrBadAnswer: the answer is not the contract's JSON, or its mappings
	// do not validate.
	ErrBadAnswer = errors.New("aiservice: unusable answer")
)

// Defaults of HTTP.
const (
	DefaultTimeout   = 5 * time.Second
	maxRequestBytes  = domain.MaxPayloadBytes
	maxResponseBytes = 1 << 20
)

// HTTP is the client of the AI Service's mapping suggestions.
//
// The REST contract:
//
//	POST {base}/api/v1/mappings/suggest
//	     {"external": {sample external record}, "internal": {Castiel schema or sample}}
//	     → 200 {"mappings": [FieldMapping, ...]}
//
// where FieldMapping is the JSON of domain.FieldMapping ({"source", "target",
// "constant", "convert", "ignore"}). Every returned mapping must pass
// domain.FieldMapping.Validate, targets must be unique, and there may be at
// most domain.MaxMappings of them; otherwise the answer is ErrBadAnswer.
// There is no retry: a suggestion is interactive, and the matcher is a
// better answer than a slow one.
type HTTP struct {
	url     string
	client  *http.Client
	timeout time.Duration
}

// Option adjusts NewHTTP.
type Option func(*HTTP)

// WithTimeout bounds one suggestion request (default DefaultTimeout).
func WithTimeout(d time.Duration) Option {
	return func(h *HTTP) {
		if d > 0 {
			h.timeout = d
		}
	}
}

// NewHTTP returns a client of the AI Service at baseURL
// (services.aiService.url). A nil client means http.DefaultTransport with the
// request timeout as its only bound.
func NewHTTP(baseURL string, client *http.Client, opts ...Option) (*HTTP, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("aiservice: AI Service URL %q must be an absolute http(s) URL", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("aiservice: AI Service URL %q must not carry a query or fragment", baseURL)
	}
	if client == nil {
		client = &http.Client{}
	}
	h := &HTTP{url: strings.TrimRight(baseURL, "/") + "/api/v1/mappings/suggest", client: client, timeout: DefaultTimeout}
	for _, o := range opts {
		o(h)
	}
	return h, nil
}

type suggestRequest struct {
	External map[string]any `json:"external"`
	Internal map[string]any `json:"internal"`
}

type suggestResponse struct {
	Mappings []domain.FieldMapping `json:"mappings"`
}

// SuggestMapping asks the service for a mapping of externalSample onto
// internalSchema.
func (h *HTTP) SuggestMapping(ctx context.Context, externalSample, internalSchema map[string]any) ([]domain.FieldMapping, error) {
	body, err := json.Marshal(suggestRequest{External: nonNil(externalSample), Internal: nonNil(internalSchema)})
	if err != nil {
		return nil, fmt.Errorf("%w: the sample cannot be encoded as JSON", ErrRejected)
	}
	if len(body) > maxRequestBytes {
		return nil, fmt.Errorf("%w: sample and schema take %d bytes, more than %d", ErrRejected, len(body), maxRequestBytes)
	}
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("aiservice: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("aiservice: suggest: %w: %w", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		code := resp.StatusCode
		if code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500 {
			return nil, fmt.Errorf("aiservice: suggest: %w: AI Service answered %s", ErrUnavailable, resp.Status)
		}
		return nil, fmt.Errorf("aiservice: suggest: %w: AI Service answered %s", ErrRejected, resp.Status)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("aiservice: suggest: read answer: %w: %w", ErrUnavailable, err)
	}
	if len(raw) > maxResponseBytes {
		return nil, fmt.Errorf("aiservice: suggest: %w: answer larger than %d bytes", ErrBadAnswer, maxResponseBytes)
	}
	var out suggestResponse
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("aiservice: suggest: %w: not the contract's JSON", ErrBadAnswer)
	}
	if err := checkMappings(out.Mappings); err != nil {
		return nil, fmt.Errorf("aiservice: suggest: %w: %w", ErrBadAnswer, err)
	}
	return out.Mappings, nil
}

// checkMappings applies the rules a sync task's mapping must meet, so a
// suggestion can be saved as it is.
func checkMappings(ms []domain.FieldMapping) error {
	if len(ms) > domain.MaxMappings {
		return fmt.Errorf("%d mappings, more than %d", len(ms), domain.MaxMappings)
	}
	targets := map[string]int{}
	for i, m := range ms {
		if err := m.Validate(); err != nil {
			return fmt.Errorf("mappings[%d]: %w", i, err)
		}
		if m.Ignore || m.Target == "" {
			continue
		}
		if j, dup := targets[m.Target]; dup {
			return fmt.Errorf("mappings[%d] repeats the target of mappings[%d]", i, j)
		}
		targets[m.Target] = i
	}
	return nil
}

func nonNil(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// MappingSuggester is what Suggester needs of the AI Service (HTTP implements it).
type MappingSuggester interface {
	SuggestMapping(ctx context.Context, externalSample, internalSchema map[string]any) ([]domain.FieldMapping, error)
}

// Where a suggestion came from.
const (
	SourceAIService = "ai_service"
	SourceMatcher   = "matcher"
)

// Why the matcher answered although an AI Service is configured. Coarse on
// purpose: a suggestion goes back to a tenant, and raw errors name internal
// hosts. The full error is logged.
const (
	FallbackUnavailable = "ai_service_unavailable"
	FallbackRejected    = "ai_service_rejected"
	FallbackBadAnswer   = "ai_service_bad_answer"
	FallbackEmpty       = "ai_service_empty"
)

// Suggestion is a proposed mapping and where it came from. FallbackReason
// (one of the Fallback* constants) says why the matcher answered although an
// AI Service is configured.
type Suggestion struct {
	Mappings       []domain.FieldMapping `json:"mappings"`
	Source         string                `json:"source"`
	FallbackReason string                `json:"fallbackReason,omitempty"`
}

// Suggester proposes mappings: the AI Service when configured, otherwise
// (or when it fails or has nothing to say) the deterministic matcher.
type Suggester struct {
	ai  MappingSuggester // nil: matcher only
	log zerolog.Logger
}

// NewSuggester uses ai when it is not nil.
func NewSuggester(ai MappingSuggester, log zerolog.Logger) *Suggester {
	return &Suggester{ai: ai, log: log}
}

// NewSuggesterFromURL uses the AI Service at baseURL, or only the matcher when
// baseURL is empty (services.aiService.url unset: standalone).
func NewSuggesterFromURL(baseURL string, client *http.Client, log zerolog.Logger, opts ...Option) (*Suggester, error) {
	if baseURL == "" {
		return NewSuggester(nil, log), nil
	}
	h, err := NewHTTP(baseURL, client, opts...)
	if err != nil {
		return nil, err
	}
	return NewSuggester(h, log), nil
}

// Suggest always returns a suggestion; a failure of the AI Service is logged
// (without the sample, which may hold personal data) and answered by the
// matcher.
func (s *Suggester) Suggest(ctx context.Context, externalSample, internalSchema map[string]any) Suggestion {
	if s.ai == nil {
		return Suggestion{Mappings: domain.SuggestMapping(externalSample, internalSchema), Source: SourceMatcher}
	}
	ms, err := s.ai.SuggestMapping(ctx, externalSample, internalSchema)
	if err == nil && len(ms) == 0 {
		err = errEmpty
	}
	if err != nil {
		s.log.Warn().Err(err).Msg("AI Service mapping suggestion failed; answering with the name/type matcher")
		return Suggestion{
			Mappings:       domain.SuggestMapping(externalSample, internalSchema),
			Source:         SourceMatcher,
			FallbackReason: fallbackReason(err),
		}
	}
	return Suggestion{Mappings: ms, Source: SourceAIService}
}

var errEmpty = errors.New("aiservice: the AI Service suggested no mapping")

func fallbackReason(err error) string {
	switch {
	case errors.Is(err, errEmpty):
		return FallbackEmpty
	case errors.Is(err, ErrRejected):
		return FallbackRejected
	case errors.Is(err, ErrBadAnswer):
		return FallbackBadAnswer
	default:
		return FallbackUnavailable
	}
}
