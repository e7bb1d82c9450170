package shards_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/castiel/integration-manager/shards"
)

// flakyShardManager serves the contract over a real Local store, with
// switches to make it fail and a log of the raw request paths.
type flakyShardManager struct {
	srv        *httptest.Server
	failFirst  atomic.Int32 // answer this many requests with failStatus first
	failStatus atomic.Int32
	retryAfter atomic.Value // string; Retry-After on failures
	delay      atomic.Int64 // nanoseconds before answering
	requests   atomic.Int32

	mu    sync.Mutex
	paths []string
}

func newFlaky(t *testing.T) *flakyShardManager { return newFlakyAt(t, "") }

// newFlakyAt serves the contract under a base path.
func newFlakyAt(t *testing.T, prefix string) *flakyShardManager {
	t.Helper()
	h, err := shards.NewHandler(newLocal(t, openEmbedded(t)))
	if err != nil {
		t.Fatal(err)
	}
	if prefix != "" {
		h = http.StripPrefix(prefix, h)
	}
	f := &flakyShardManager{}
	f.retryAfter.Store("")
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		f.mu.Lock()
		f.paths = append(f.paths, r.Method+" "+r.URL.EscapedPath())
		f.mu.Unlock()
		if d := time.Duration(f.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		if f.failFirst.Add(-1) >= 0 {
			if ra := f.retryAfter.Load().(string); ra != "" {
				w.Header().Set("Retry-After", ra)
			}
			w.WriteHeader(int(f.failStatus.Load()))
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *flakyShardManager) failNext(n int, status int) {
	f.failStatus.Store(int32(status))
	f.failFirst.Store(int32(n))
}

func fastRetries(attempts int) shards.HTTPOption {
	return shards.WithRetries(attempts, time.Millisecond, 5*time.Millisecond)
}

func TestHTTP_RetriesTransientFailuresThenSucceeds(t *testing.T) {
	for _, status := range []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusRequestTimeout} {
		f := newFlaky(t)
		c := newHTTP(t, f.srv.URL, fastRetries(3))
		f.failNext(2, status)
		if _, err := c.Put(t.Context(), "t1", "contacts", "k", map[string]any{"a": 1.0}); err != nil {
			t.Errorf("status %d twice, then success: Put failed: %v", status, err)
		}
		if n := f.requests.Load(); n != 3 {
			t.Errorf("status %d: %d requests, want 3", status, n)
		}
	}
}

func TestHTTP_PersistentFailureIsUnavailableAfterAllAttempts(t *testing.T) {
	f := newFlaky(t)
	c := newHTTP(t, f.srv.URL, fastRetries(3))
	f.failNext(100, http.StatusServiceUnavailable)
	_, err := c.Get(t.Context(), "t1", "contacts", "k")
	if !errors.Is(err, shards.ErrUnavailable) || !shards.IsTransient(err) {
		t.Fatalf("error = %v, want ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), "3 attempts") || f.requests.Load() != 3 {
		t.Errorf("error %q after %d requests, want 3 attempts", err, f.requests.Load())
	}
}

func TestHTTP_PermanentAnswersAreNotRetried(t *testing.T) {
	cases := []struct {
		status int
		want   error
	}{
		{http.StatusNotFound, shards.ErrNotFound},
		{http.StatusBadRequest, shards.ErrInvalid},
		{http.StatusUnprocessableEntity, shards.ErrInvalid},
		{http.StatusRequestEntityTooLarge, shards.ErrInvalid},
		{http.StatusForbidden, nil},
	}
	for _, tc := range cases {
		f := newFlaky(t)
		c := newHTTP(t, f.srv.URL, fastRetries(3))
		f.failNext(1, tc.status)
		err := c.Delete(t.Context(), "t1", "contacts", "k")
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || shards.IsTransient(err) {
			t.Errorf("status %d: error = %v, want %v and not transient", tc.status, err, tc.want)
		}
		if n := f.requests.Load(); n != 1 {
			t.Errorf("status %d was retried: %d requests", tc.status, n)
		}
	}
}

func TestHTTP_HonoursRetryAfterUpToTheBackoffCeiling(t *testing.T) {
	f := newFlaky(t)
	c := newHTTP(t, f.srv.URL, shards.WithRetries(2, time.Millisecond, 300*time.Millisecond))
	f.retryAfter.Store("1") // one second, capped at 300 ms
	f.failNext(1, http.StatusTooManyRequests)
	start := time.Now()
	if _, err := c.Put(t.Context(), "t1", "contacts", "k", nil); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 250*time.Millisecond || took > 900*time.Millisecond {
		t.Errorf("retry after a 429 with Retry-After: 1 took %v, want about the 300 ms ceiling", took)
	}
}

func TestHTTP_TimeoutIsUnavailable(t *testing.T) {
	f := newFlaky(t)
	f.delay.Store(int64(time.Second))
	c, err := shards.NewHTTP(f.srv.URL, &http.Client{Timeout: 50 * time.Millisecond}, fastRetries(2))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.Get(t.Context(), "t1", "contacts", "k")
	if !errors.Is(err, shards.ErrUnavailable) {
		t.Fatalf("error = %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > 800*time.Millisecond {
		t.Errorf("two timed-out attempts took %v", took)
	}
}

func TestHTTP_UnreachableIsUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c := newHTTP(t, "http://"+addr, fastRetries(2))
	if _, _, err := c.List(t.Context(), "t1", "contacts", "", 10); !errors.Is(err, shards.ErrUnavailable) {
		t.Fatalf("error = %v, want ErrUnavailable", err)
	}
}

func TestHTTP_CancelStopsRetrying(t *testing.T) {
	f := newFlaky(t)
	c := newHTTP(t, f.srv.URL, shards.WithRetries(10, time.Second, time.Second))
	f.failNext(100, http.StatusServiceUnavailable)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Get(ctx, "t1", "contacts", "k")
	if !errors.Is(err, shards.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error = %v, want ErrUnavailable and the deadline", err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("cancelled call returned after %v", took)
	}
}

func TestHTTP_PathsFollowTheContract(t *testing.T) {
	f := newFlakyAt(t, "/shard-manager")
	c := newHTTP(t, f.srv.URL+"/shard-manager/", fastRetries(1))
	ctx := t.Context()
	mustPut(t, c, "t1", "contacts", "a/b c", map[string]any{})
	if _, err := c.Get(ctx, "t1", "contacts", ".."); !errors.Is(err, shards.ErrNotFound) {
		t.Errorf("Get ..: %v", err)
	}
	if _, _, err := c.List(ctx, "t1", "contacts", "tok en", 7); !errors.Is(err, shards.ErrInvalid) {
		t.Errorf("List with a bad token: %v", err)
	}
	want := []string{
		"PUT /shard-manager/api/v1/tenants/t1/entities/contacts/records/a%2Fb%20c",
		"GET /shard-manager/api/v1/tenants/t1/entities/contacts/records/%2E%2E",
		"GET /shard-manager/api/v1/tenants/t1/entities/contacts/records",
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.paths) != len(want) {
		t.Fatalf("requests %v, want %v", f.paths, want)
	}
	for i := range want {
		if f.paths[i] != want[i] {
			t.Errorf("request %d = %s, want %s", i, f.paths[i], want[i])
		}
	}
}

func TestNewHTTP_RefusesBadURLs(t *testing.T) {
	for _, u := range []string{"", "shards.local", "ftp://x", "http://", "http://x/?a=1", "http://x/#f"} {
		if _, err := shards.NewHTTP(u, nil); err == nil {
			t.Errorf("NewHTTP(%q) succeeded", u)
		}
	}
}
