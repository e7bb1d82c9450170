package syncrun_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/castiel/integration-manager/handlers/syncrun"
)

func TestHTTPAuditor_DeliversEveryEventInBatchesAndRetriesServerErrors(t *testing.T) {
	var mu sync.Mutex
	var got []syncrun.AuditEvent
	var batches, failures int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if failures == 0 {
			failures++
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var body struct {
			Events []syncrun.AuditEvent `json:"events"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		batches++
		got = append(got, body.Events...)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()

	a, err := syncrun.NewHTTPAuditor(srv.URL, syncrun.HTTPAuditorOptions{BatchSize: 100, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 250 {
		ev := syncrun.AuditEvent{TenantID: "t", IntegrationID: "i", Action: syncrun.AuditWriteBack, RecordKey: string(rune('a' + i%26)), Outcome: "ok", At: time.Now()}
		if err := a.Record(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 250 {
		t.Fatalf("the Logging Service received %d events, want all 250 (one batch failed once and was retried)", len(got))
	}
	if batches < 3 {
		t.Errorf("%d batches, want at most 100 events per POST", batches)
	}
	if got[0].Actor != syncrun.Role {
		t.Errorf("actor %q, want %q", got[0].Actor, syncrun.Role)
	}
}
