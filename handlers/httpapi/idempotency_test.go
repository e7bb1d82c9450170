package httpapi

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestIdempotency_SameKeyAndBodyReplaysTheFirstAnswerAndEnqueuesOnce(t *testing.T) {
	h := newHarness(t)
	body := map[string]any{"type": "contact.updated", "data": map[string]any{"id": 42}}
	first := h.must(202, "POST", v1+"/events", tokAdminA, body, HeaderIdempotencyKey, "evt-key-1")
	second := h.must(202, "POST", v1+"/events", tokAdminA, body, HeaderIdempotencyKey, "evt-key-1")
	if first.body != second.body {
		t.Errorf("replay answered a different body:\nfirst  %s\nsecond %s", first.body, second.body)
	}
	if second.Header().Get(HeaderReplayed) != "true" {
		t.Errorf("replay lacks the %s header", HeaderReplayed)
	}
	if second.Header().Get("Content-Type") != "application/json" {
		t.Errorf("replay Content-Type %q, want application/json", second.Header().Get("Content-Type"))
	}
	if n := h.sender.count(); n != 1 {
		t.Fatalf("the event was enqueued %d times, want once", n)
	}

	// The same key with another body is a client bug: 422, nothing enqueued.
	other := map[string]any{"type": "contact.deleted", "data": map[string]any{"id": 42}}
	r := h.must(422, "POST", v1+"/events", tokAdminA, other, HeaderIdempotencyKey, "evt-key-1")
	if p := r.problem(t); p.Type != ProblemIdempotencyReused {
		t.Errorf("problem type %q, want %q", p.Type, ProblemIdempotencyReused)
	}
	if n := h.sender.count(); n != 1 {
		t.Fatalf("a reused key enqueued again (%d sends)", n)
	}

	// Keys are per tenant: tenant B's identical key is a new request.
	h.must(202, "POST", v1+"/events", tokAdminB, body, HeaderIdempotencyKey, "evt-key-1")
	if n := h.sender.count(); n != 2 {
		t.Fatalf("tenant B's request with the same key was not enqueued (%d sends)", n)
	}
}

func TestIdempotency_ReplayOfACreateShowsTheSameResourceAndSecret(t *testing.T) {
	h := newHarness(t)
	body := map[string]any{"url": "https://hooks.example.com/a", "eventTypes": []string{"*"}}
	var first, second webhookCreated
	h.must(201, "POST", v1+"/webhooks", tokAdminA, body, HeaderIdempotencyKey, "wh-1").json(t, &first)
	r := h.must(201, "POST", v1+"/webhooks", tokAdminA, body, HeaderIdempotencyKey, "wh-1")
	r.json(t, &second)
	if first.ID != second.ID || first.Secret != second.Secret || second.Secret == "" {
		t.Errorf("replay created or showed something else: first %s/%q, replay %s/%q", first.ID, first.Secret, second.ID, second.Secret)
	}
	if r.Header().Get("Location") != v1+"/webhooks/"+first.ID || r.Header().Get("ETag") == "" {
		t.Errorf("replay lost Location or ETag: %v", r.Header())
	}
	var list struct{ Items []map[string]any }
	h.must(200, "GET", v1+"/webhooks", tokAdminA, nil).json(t, &list)
	if len(list.Items) != 1 {
		t.Errorf("two POSTs with one key created %d webhooks, want 1", len(list.Items))
	}
	// The stored record must not hold the secret itself.
	rec, _, err := h.api.idempotencies.Get(t.Context(), tenantA, idempotencyRecordID(tenantA, "wh-1"))
	if err != nil {
		t.Fatalf("read the idempotency record: %v", err)
	}
	if bytes.Contains(rec.Body, []byte(first.Secret)) {
		t.Errorf("the idempotency record stores the webhook secret in clear")
	}
}

func TestIdempotency_FailedRequestReleasesTheKey(t *testing.T) {
	h := newHarness(t)
	body := map[string]any{"type": "contact.updated", "data": map[string]any{}}
	h.sender.err = errors.New("broker down")
	r := h.must(503, "POST", v1+"/events", tokAdminA, body, HeaderIdempotencyKey, "k-retry")
	if r.Header().Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After")
	}
	h.sender.mu.Lock()
	h.sender.err = nil
	h.sender.mu.Unlock()
	h.must(202, "POST", v1+"/events", tokAdminA, body, HeaderIdempotencyKey, "k-retry")
	if n := h.sender.count(); n != 1 {
		t.Errorf("retry after a broker failure sent %d commands, want 1", n)
	}
}

func TestIdempotency_ConcurrentDuplicateGets409(t *testing.T) {
	h := newHarness(t)
	gate := make(chan struct{})
	h.sender.gate = gate
	body := map[string]any{"type": "contact.updated", "data": map[string]any{}}

	var wg sync.WaitGroup
	var first response
	wg.Go(func() { first = h.do("POST", v1+"/events", tokAdminA, body, HeaderIdempotencyKey, "k-busy") })
	// Wait until the first request holds the claim.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, _, err := h.api.idempotencies.Get(t.Context(), tenantA, idempotencyRecordID(tenantA, "k-busy")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			close(gate)
			t.Fatal("the first request never claimed its key")
		}
		time.Sleep(2 * time.Millisecond)
	}
	r := h.do("POST", v1+"/events", tokAdminA, body, HeaderIdempotencyKey, "k-busy")
	close(gate)
	wg.Wait()
	if r.Code != 409 {
		t.Fatalf("duplicate while in flight answered %d, want 409: %s", r.Code, r.body)
	}
	if p := r.problem(t); p.Type != ProblemIdempotencyBusy {
		t.Errorf("problem type %q, want %q", p.Type, ProblemIdempotencyBusy)
	}
	if first.Code != 202 {
		t.Errorf("the first request answered %d, want 202", first.Code)
	}
	if n := h.sender.count(); n != 1 {
		t.Errorf("%d commands sent, want 1", n)
	}
}

func TestIdempotency_AbandonedClaimIsTakenOverAfterTheLease(t *testing.T) {
	h := newHarness(t)
	// A claim left behind by a request whose process died.
	if _, err := h.api.idempotencies.Create(t.Context(), idempotencyRecord{
		ID: idempotencyRecordID(tenantA, "k-dead"), TenantID: tenantA, State: idemInFlight, CreatedAt: h.clock(),
		Fingerprint: fingerprint("POST", v1+"/events", []byte(`{"type":"contact.updated","data":{}}`)),
	}); err != nil {
		t.Fatal(err)
	}
	body := `{"type":"contact.updated","data":{}}`
	h.must(409, "POST", v1+"/events", tokAdminA, body, HeaderIdempotencyKey, "k-dead")
	h.advance(2 * idempotencyLease)
	h.must(202, "POST", v1+"/events", tokAdminA, body, HeaderIdempotencyKey, "k-dead")
}
