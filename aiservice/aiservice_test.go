package aiservice_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/aiservice"
	"github.com/castiel/integration-manager/domain"
)

var (
	sampleExternal = map[string]any{"e_mail": "ada@example.com", "first_name": "Ada", "secret_note": "personal"}
	sampleInternal = map[string]any{"email": "string", "firstName": "string"}
)

// aiService is a stand-in AI Service implementing the contract; answer
// decides what it sends back.
type aiService struct {
	srv      *httptest.Server
	requests atomic.Int32
	lastBody atomic.Value // []byte
}

func newAIService(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) *aiService {
	t.Helper()
	a := &aiService{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/mappings/suggest", func(w http.ResponseWriter, r *http.Request) {
		a.requests.Add(1)
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(r.Body)
		a.lastBody.Store(buf.Bytes())
		if r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "want JSON", http.StatusUnsupportedMediaType)
			return
		}
		answer(w, r)
	})
	a.srv = httptest.NewServer(mux)
	t.Cleanup(a.srv.Close)
	return a
}

func answerJSON(status int, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

func TestHTTP_SendsSampleAndSchemaAndReturnsTheMappings(t *testing.T) {
	a := newAIService(t, answerJSON(200, `{"mappings":[{"source":"e_mail","target":"email"},{"source":"first_name","target":"firstName"},{"source":"secret_note","ignore":true}]}`))
	c, err := aiservice.NewHTTP(a.srv.URL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.SuggestMapping(t.Context(), sampleExternal, sampleInternal)
	if err != nil {
		t.Fatalf("SuggestMapping: %v", err)
	}
	want := []domain.FieldMapping{{Source: "e_mail", Target: "email"}, {Source: "first_name", Target: "firstName"}, {Source: "secret_note", Ignore: true}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mappings = %+v, want %+v", got, want)
	}
	var sent struct{ External, Internal map[string]any }
	if err := json.Unmarshal(a.lastBody.Load().([]byte), &sent); err != nil {
		t.Fatalf("request body: %v", err)
	}
	if !reflect.DeepEqual(sent.External, sampleExternal) || !reflect.DeepEqual(sent.Internal, sampleInternal) {
		t.Errorf("request carried %+v, want the sample and the schema", sent)
	}
}

func TestHTTP_ClassifiesFailures(t *testing.T) {
	cases := []struct {
		name   string
		answer func(http.ResponseWriter, *http.Request)
		want   error
	}{
		{"server error", answerJSON(500, `{}`), aiservice.ErrUnavailable},
		{"overloaded", answerJSON(429, `{}`), aiservice.ErrUnavailable},
		{"refused", answerJSON(400, `{"error":"too big"}`), aiservice.ErrRejected},
		{"not JSON", answerJSON(200, `<html>`), aiservice.ErrBadAnswer},
		{"invalid mapping", answerJSON(200, `{"mappings":[{"source":"a..b","target":"x"}]}`), aiservice.ErrBadAnswer},
		{"unknown conversion", answerJSON(200, `{"mappings":[{"source":"a","target":"x","convert":"magic"}]}`), aiservice.ErrBadAnswer},
		{"duplicate target", answerJSON(200, `{"mappings":[{"source":"a","target":"x"},{"source":"b","target":"x"}]}`), aiservice.ErrBadAnswer},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newAIService(t, tc.answer)
			c, err := aiservice.NewHTTP(a.srv.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.SuggestMapping(t.Context(), sampleExternal, sampleInternal)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error = %v, want %v", err, tc.want)
			}
			if strings.Contains(err.Error(), "ada@example.com") || strings.Contains(err.Error(), "personal") {
				t.Errorf("error %q quotes the sample", err)
			}
		})
	}
}

func TestHTTP_TimesOut(t *testing.T) {
	a := newAIService(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	})
	c, err := aiservice.NewHTTP(a.srv.URL, nil, aiservice.WithTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.SuggestMapping(t.Context(), sampleExternal, sampleInternal)
	if !errors.Is(err, aiservice.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error = %v, want ErrUnavailable after the deadline", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("a 100 ms timeout took %v", took)
	}
}

func TestHTTP_RefusesOversizedSamplesWithoutSending(t *testing.T) {
	a := newAIService(t, answerJSON(200, `{"mappings":[]}`))
	c, _ := aiservice.NewHTTP(a.srv.URL, nil)
	big := map[string]any{"blob": strings.Repeat("x", domain.MaxPayloadBytes)}
	if _, err := c.SuggestMapping(t.Context(), big, nil); !errors.Is(err, aiservice.ErrRejected) {
		t.Errorf("error = %v, want ErrRejected", err)
	}
	if a.requests.Load() != 0 {
		t.Error("an oversized sample was sent")
	}
}

func TestNewHTTP_RefusesBadURLs(t *testing.T) {
	for _, u := range []string{"", "ai.local", "ftp://x", "http://x/?q=1"} {
		if _, err := aiservice.NewHTTP(u, nil); err == nil {
			t.Errorf("NewHTTP(%q) succeeded", u)
		}
	}
}

func TestSuggester_UsesTheAIServiceWhenItAnswers(t *testing.T) {
	a := newAIService(t, answerJSON(200, `{"mappings":[{"source":"e_mail","target":"email"}]}`))
	var logs bytes.Buffer
	s, err := aiservice.NewSuggesterFromURL(a.srv.URL, nil, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	got := s.Suggest(t.Context(), sampleExternal, sampleInternal)
	if got.Source != aiservice.SourceAIService || len(got.Mappings) != 1 || got.FallbackReason != "" {
		t.Errorf("suggestion = %+v, want the AI Service's one mapping", got)
	}
	if logs.Len() != 0 {
		t.Errorf("a successful suggestion logged: %s", logs.String())
	}
}

func TestSuggester_FallsBackToTheMatcher(t *testing.T) {
	matcher := domain.SuggestMapping(sampleExternal, sampleInternal)
	unreachable := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return "http://" + ln.Addr().String()
	}()
	cases := []struct {
		name       string
		url        func(t *testing.T) string
		wantReason string
	}{
		{"no AI Service configured", func(*testing.T) string { return "" }, ""},
		{"AI Service down", func(*testing.T) string { return unreachable }, aiservice.FallbackUnavailable},
		{"AI Service errors", func(t *testing.T) string { return newAIService(t, answerJSON(503, `{}`)).srv.URL }, aiservice.FallbackUnavailable},
		{"AI Service refuses", func(t *testing.T) string { return newAIService(t, answerJSON(422, `{}`)).srv.URL }, aiservice.FallbackRejected},
		{"AI Service talks nonsense", func(t *testing.T) string {
			return newAIService(t, answerJSON(200, `{"mappings":[{"target":""}]}`)).srv.URL
		}, aiservice.FallbackBadAnswer},
		{"AI Service has nothing to say", func(t *testing.T) string {
			return newAIService(t, answerJSON(200, `{"mappings":[]}`)).srv.URL
		}, aiservice.FallbackEmpty},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			s, err := aiservice.NewSuggesterFromURL(tc.url(t), nil, zerolog.New(&logs), aiservice.WithTimeout(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			got := s.Suggest(t.Context(), sampleExternal, sampleInternal)
			if got.Source != aiservice.SourceMatcher || got.FallbackReason != tc.wantReason {
				t.Errorf("suggestion from %s (reason %q), want the matcher (reason %q)", got.Source, got.FallbackReason, tc.wantReason)
			}
			if !reflect.DeepEqual(got.Mappings, matcher) {
				t.Errorf("mappings = %+v, want the matcher's %+v", got.Mappings, matcher)
			}
			if tc.wantReason != "" && !strings.Contains(logs.String(), "matcher") {
				t.Errorf("the fallback was not logged: %q", logs.String())
			}
			if strings.Contains(logs.String(), "ada@example.com") {
				t.Errorf("the log quotes the sample: %s", logs.String())
			}
			if strings.Contains(got.FallbackReason, "127.0.0.1") {
				t.Errorf("the reason names an internal host: %q", got.FallbackReason)
			}
		})
	}
}
