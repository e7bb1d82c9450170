package secrets_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/castiel/integration-manager/secrets"
)

// secretService implements the REST contract documented on secrets.HTTP,
// backed by a real Local store, with switches to make it fail.
type secretService struct {
	backend secrets.Store
	srv     *httptest.Server

	failWith atomic.Int32 // answer every request with this status when non-zero
	delay    atomic.Int64 // nanoseconds to wait before answering

	mu       sync.Mutex
	requests []string // "METHOD escaped-path?query", for assertions on the wire format
}

func newSecretService(t *testing.T) *secretService {
	t.Helper()
	_, c := openEmbedded(t)
	s := &secretService{backend: newLocal(t, c, testKey(9))}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/secrets", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ TenantID, Value string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		value, err := base64.StdEncoding.DecodeString(in.Value)
		if err != nil {
			http.Error(w, "value is not base64", http.StatusBadRequest)
			return
		}
		ref, err := s.backend.Put(r.Context(), in.TenantID, value)
		if err != nil {
			writeErr(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]string{"ref": ref})
	})
	mux.HandleFunc("GET /api/v1/secrets/{ref}", func(w http.ResponseWriter, r *http.Request) {
		value, err := s.backend.Get(r.Context(), r.URL.Query().Get("tenantId"), r.PathValue("ref"))
		if err != nil {
			writeErr(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"value": base64.StdEncoding.EncodeToString(value)})
	})
	mux.HandleFunc("PUT /api/v1/secrets/{ref}", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Value string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		value, err := base64.StdEncoding.DecodeString(in.Value)
		if err != nil {
			http.Error(w, "value is not base64", http.StatusBadRequest)
			return
		}
		if err := s.backend.Replace(r.Context(), r.URL.Query().Get("tenantId"), r.PathValue("ref"), value); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE /api/v1/secrets/{ref}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.backend.Delete(r.Context(), r.URL.Query().Get("tenantId"), r.PathValue("ref")); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests = append(s.requests, r.Method+" "+r.URL.RequestURI())
		s.mu.Unlock()
		// Read the body first: only then does the server notice a client
		// that hung up, and end r.Context().
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if d := time.Duration(s.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		if code := s.failWith.Load(); code != 0 {
			// A careless service echoing the request must not leak through the client's errors.
			http.Error(w, "failure while handling "+r.URL.String(), int(code))
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func writeErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, secrets.ErrNotFound):
		http.Error(w, "not found", http.StatusNotFound)
	case errors.Is(err, secrets.ErrInvalid):
		http.Error(w, "invalid", http.StatusBadRequest)
	default:
		http.Error(w, "internal error", http.StatusInternalServerError)
	}
}

func (s *secretService) client(t *testing.T) *secrets.HTTP {
	t.Helper()
	h, err := secrets.NewHTTP(s.srv.URL+"/", s.srv.Client())
	if err != nil {
		t.Fatalf("NewHTTP: %v", err)
	}
	return h
}

func (s *secretService) lastRequest() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.requests) == 0 {
		return ""
	}
	return s.requests[len(s.requests)-1]
}

func TestHTTP_Contract(t *testing.T) {
	runContract(t, func(t *testing.T) secrets.Store {
		return newSecretService(t).client(t)
	})
}

func TestHTTP_RefTravelsAsOneEscapedPathSegment(t *testing.T) {
	svc := newSecretService(t)
	h := svc.client(t)
	ref, err := h.Put(t.Context(), "tenant-a", []byte(plaintext))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if svc.lastRequest() != "POST /api/v1/secrets" {
		t.Fatalf("Put sent %q, want POST /api/v1/secrets", svc.lastRequest())
	}
	if _, err := h.Get(t.Context(), "tenant-a", ref); err != nil {
		t.Fatalf("Get: %v", err)
	}
	_, id := localID(t, ref)
	want := "GET /api/v1/secrets/secret:%2F%2Flocal%2Ftenant-a%2F" + id + "?tenantId=tenant-a"
	if got := svc.lastRequest(); got != want {
		t.Fatalf("Get sent\n  %s\nwant\n  %s", got, want)
	}
}

func TestHTTP_StatusesMapToSentinels(t *testing.T) {
	tests := []struct {
		status int
		want   error
	}{
		{http.StatusNotFound, secrets.ErrNotFound},
		{http.StatusServiceUnavailable, secrets.ErrUnavailable},
		{http.StatusInternalServerError, secrets.ErrUnavailable},
		{http.StatusBadGateway, secrets.ErrUnavailable},
		{http.StatusTooManyRequests, secrets.ErrUnavailable},
		{http.StatusBadRequest, secrets.ErrInvalid},
		{http.StatusForbidden, nil}, // permanent, none of the sentinels
	}
	svc := newSecretService(t)
	h := svc.client(t)
	ref, err := h.Put(t.Context(), "tenant-a", []byte(plaintext))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			svc.failWith.Store(int32(tt.status))
			defer svc.failWith.Store(0)
			calls := map[string]error{}
			_, calls["put"] = h.Put(t.Context(), "tenant-a", []byte(plaintext))
			_, calls["get"] = h.Get(t.Context(), "tenant-a", ref)
			calls["replace"] = h.Replace(t.Context(), "tenant-a", ref, []byte(plaintext))
			calls["delete"] = h.Delete(t.Context(), "tenant-a", ref)
			for op, err := range calls {
				if err == nil {
					t.Fatalf("%s succeeded although the service answered %d", op, tt.status)
				}
				if tt.want != nil && !errors.Is(err, tt.want) {
					t.Errorf("%s on %d: error %v, want %v", op, tt.status, err, tt.want)
				}
				if tt.want == nil && (errors.Is(err, secrets.ErrNotFound) || errors.Is(err, secrets.ErrUnavailable)) {
					t.Errorf("%s on %d: error %v should be permanent, not found or unavailable", op, tt.status, err)
				}
				if got := secrets.IsTransient(err); got != (tt.want == secrets.ErrUnavailable) {
					t.Errorf("%s on %d: IsTransient = %v", op, tt.status, got)
				}
				for _, leak := range []string{plaintext, base64.StdEncoding.EncodeToString([]byte(plaintext)), "failure while handling"} {
					if strings.Contains(err.Error(), leak) {
						t.Errorf("%s on %d: error %q leaks the value or the response body", op, tt.status, err)
					}
				}
			}
		})
	}
	if got, err := h.Get(t.Context(), "tenant-a", ref); err != nil || string(got) != plaintext {
		t.Fatalf("after the service recovered: %q, %v", got, err)
	}
}

func TestHTTP_ConnectionErrorsAndTimeoutsAreUnavailable(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		svc := newSecretService(t)
		h := svc.client(t)
		svc.srv.Close()
		_, err := h.Put(t.Context(), "tenant-a", []byte(plaintext))
		if !errors.Is(err, secrets.ErrUnavailable) {
			t.Fatalf("Put to a closed server: error %v, want ErrUnavailable", err)
		}
		if strings.Contains(err.Error(), plaintext) {
			t.Fatalf("error %q leaks the value", err)
		}
	})

	t.Run("deadline of the caller's context", func(t *testing.T) {
		svc := newSecretService(t)
		h := svc.client(t)
		ref, err := h.Put(t.Context(), "tenant-a", []byte(plaintext))
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		svc.delay.Store(int64(2 * time.Second))
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = h.Get(ctx, "tenant-a", ref)
		if !errors.Is(err, secrets.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Get past its deadline: error %v, want ErrUnavailable wrapping context.DeadlineExceeded", err)
		}
		if waited := time.Since(start); waited > time.Second {
			t.Fatalf("Get ignored the context deadline and waited %s", waited)
		}
	})

	t.Run("client timeout", func(t *testing.T) {
		svc := newSecretService(t)
		svc.delay.Store(int64(2 * time.Second))
		h, err := secrets.NewHTTP(svc.srv.URL, &http.Client{Timeout: 50 * time.Millisecond})
		if err != nil {
			t.Fatalf("NewHTTP: %v", err)
		}
		if _, err := h.Put(t.Context(), "tenant-a", []byte(plaintext)); !errors.Is(err, secrets.ErrUnavailable) {
			t.Fatalf("Put that timed out: error %v, want ErrUnavailable", err)
		}
	})
}

func TestNewHTTP_RefusesABadBaseURL(t *testing.T) {
	for _, base := range []string{"", "secret-management:8080", "/api", "ftp://sm.test", "https://sm.test/?x=1"} {
		if _, err := secrets.NewHTTP(base, nil); err == nil {
			t.Errorf("NewHTTP(%q) accepted a base URL that is not an absolute http(s) URL", base)
		}
	}
	if _, err := secrets.NewHTTP("http://secret-management.castiel.svc:8080", nil); err != nil {
		t.Errorf("NewHTTP refused a plain service URL: %v", err)
	}
}
