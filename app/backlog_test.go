package app_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/castiel/integration-manager/app"
)

// Standalone keeps its queues in memory, bounded by broker.gochannel.maxBacklog:
// while the only endpoint is too slow to keep up, events past the bound are refused
// with 503, a Retry-After and a problem+json body, instead of piling up in memory;
// every event that was accepted is delivered once the endpoint catches up.
func TestStandalone_AFullBacklogAnswers503AndLosesNothingAccepted(t *testing.T) {
	t.Parallel()
	var release atomic.Bool
	rcv := newHookReceiver(t, func(int) (int, map[string]string) {
		for !release.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		return http.StatusOK, nil
	})
	s := start(t, environ(t,
		"IM_BROKER_GOCHANNEL_MAXBACKLOG=4",
		"IM_BROKER_GOCHANNEL_PUBLISHTIMEOUT=100ms",
		"IM_WEBHOOKS_DISPATCHER_TIMEOUT=20s"),
		app.PartAPI, app.PartDispatcher)
	subscribe(t, s, rcv.url)

	accepted := 0
	var refused *http.Response
	var problem struct{ Type, Title, Detail string }
	for i := range 20 {
		req, _ := http.NewRequest("POST", s.baseURL+"/api/v1/events", strings.NewReader(fmt.Sprintf(`{"type":"contact.updated","data":{"seq":%d}}`, i)))
		req.Header.Set("Authorization", "Bearer "+s.key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		switch resp.StatusCode {
		case http.StatusAccepted:
			accepted++
		case http.StatusServiceUnavailable:
			if refused == nil {
				refused = resp
				_ = json.NewDecoder(resp.Body).Decode(&problem)
			}
		default:
			t.Errorf("event %d: status %d, want 202 or 503", i, resp.StatusCode)
		}
		resp.Body.Close()
	}
	if refused == nil {
		t.Fatalf("all %d events accepted while the endpoint held every delivery: the backlog is not bounded", accepted)
	}
	if ct := refused.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") || refused.Header.Get("Retry-After") == "" || problem.Detail == "" {
		t.Errorf("503 answer: Content-Type %q, Retry-After %q, problem %+v; want problem+json with a detail and a Retry-After", ct, refused.Header.Get("Retry-After"), problem)
	}
	if accepted == 0 {
		t.Fatal("no event accepted at all")
	}

	release.Store(true)
	eventually(t, 30*time.Second, fmt.Sprintf("the %d accepted events delivered", accepted), func() bool {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		return len(rcv.attempts) >= accepted
	})
	time.Sleep(300 * time.Millisecond)
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	seen := map[string]bool{}
	for _, a := range rcv.attempts {
		seen[a.header.Get("webhook-id")] = true
	}
	if len(seen) != accepted {
		t.Errorf("the endpoint got %d distinct deliveries, want the %d accepted events", len(seen), accepted)
	}
}
