package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestProblems_BadInputIsExplainedFieldByField(t *testing.T) {
	h := newHarness(t)
	huge := `{"type":"contact.updated","data":"` + strings.Repeat("x", 70<<10) + `"}`
	cases := []struct {
		name       string
		method     string
		path       string
		body       string
		header     []string
		wantStatus int
		wantType   string
		wantField  string // a field the errors list must name ("" when none is expected)
	}{
		{"unknown field", "POST", v1 + "/webhooks", `{"url":"https://hooks.example.com/x","eventTypes":["*"],"colour":"red"}`, nil, 400, ProblemMalformed, "colour"},
		{"tenant in body", "POST", v1 + "/events", `{"type":"a.b","data":{},"tenantId":"tenant-b"}`, nil, 400, ProblemMalformed, "tenantId"},
		{"plain http url", "POST", v1 + "/webhooks", `{"url":"http://hooks.example.com/x","eventTypes":["*"]}`, nil, 422, ProblemValidation, "url"},
		{"url with credentials", "POST", v1 + "/webhooks", `{"url":"https://u:p@hooks.example.com/x","eventTypes":["*"]}`, nil, 422, ProblemValidation, "url"},
		{"bad event filter", "POST", v1 + "/webhooks", `{"url":"https://hooks.example.com/x","eventTypes":["Contact Updated"]}`, nil, 422, ProblemValidation, "eventTypes[0]"},
		{"bad webhook secret", "POST", v1 + "/webhooks", `{"url":"https://hooks.example.com/x","eventTypes":["*"],"secret":"whsec_c2hvcnQ="}`, nil, 422, ProblemValidation, "secret"},
		{"bad event type", "POST", v1 + "/events", `{"type":"Contact.Updated!","data":{}}`, nil, 422, ProblemValidation, "type"},
		{"missing event data", "POST", v1 + "/events", `{"type":"contact.updated"}`, nil, 422, ProblemValidation, "data"},
		{"null event data", "POST", v1 + "/events", `{"type":"contact.updated","data":null}`, nil, 422, ProblemValidation, "data"},
		{"wrong JSON type", "POST", v1 + "/events", `{"type":42,"data":{}}`, nil, 400, ProblemMalformed, "type"},
		{"not JSON", "POST", v1 + "/events", `{"type":`, nil, 400, ProblemMalformed, "body"},
		{"two JSON values", "POST", v1 + "/events", `{"type":"a.b","data":{}} {}`, nil, 400, ProblemMalformed, "body"},
		{"empty body", "POST", v1 + "/events", ``, nil, 400, ProblemMalformed, "body"},
		{"too large", "POST", v1 + "/events", huge, nil, 413, ProblemTooLarge, ""},
		{"wrong content type", "POST", v1 + "/events", `{"type":"a.b","data":{}}`, []string{"Content-Type", "text/plain"}, 415, ProblemUnsupportedMedia, ""},
		{"limit out of range", "GET", v1 + "/webhooks?limit=5000", ``, nil, 400, ProblemMalformed, "limit"},
		{"bad cursor", "GET", v1 + "/webhooks?cursor=not-a-cursor", ``, nil, 400, ProblemMalformed, "cursor"},
		{"bad status filter", "GET", v1 + "/conflicts?status=open", ``, nil, 400, ProblemMalformed, "status"},
		{"bad sync task", "POST", v1 + "/sync-tasks", `{"integrationId":"nope","entity":"contacts","direction":"sideways","mode":"incremental","mapping":[{"source":"a"}],"conflictPolicy":{"strategy":"coin_flip"}}`, nil, 422, ProblemValidation, "conflictPolicy.strategy"},
		{"unknown route", "GET", v1 + "/nothing-here", ``, nil, 404, ProblemNotFound, ""},
		{"wrong method", "PATCH", v1 + "/events", `{}`, nil, 405, ProblemMethodNotAllowed, ""},
		{"bad idempotency key", "POST", v1 + "/events", `{"type":"a.b","data":{}}`, []string{HeaderIdempotencyKey, strings.Repeat("k", 300)}, 400, ProblemMalformed, HeaderIdempotencyKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.body != "" {
				body = tc.body
			}
			r := h.do(tc.method, tc.path, tokAdminA, body, tc.header...)
			if r.Code != tc.wantStatus {
				t.Fatalf("answered %d, want %d: %s", r.Code, tc.wantStatus, r.body)
			}
			p := r.problem(t)
			if p.Type != tc.wantType {
				t.Errorf("problem type %q, want %q", p.Type, tc.wantType)
			}
			if tc.wantField == "" {
				return
			}
			var fields []string
			for _, f := range p.Errors {
				fields = append(fields, f.Field)
				if f.Message == "" {
					t.Errorf("field %q has no message", f.Field)
				}
			}
			if !strings.Contains(","+strings.Join(fields, ",")+",", ","+tc.wantField+",") {
				t.Errorf("errors name %v, want %q among them: %s", fields, tc.wantField, r.body)
			}
		})
	}
	if n := h.sender.count(); n != 0 {
		t.Errorf("bad requests enqueued %d commands", n)
	}
}

func TestProblems_ErrorsNeverEchoTheSecretOrToken(t *testing.T) {
	h := newHarness(t)
	secret := "whsec_" + strings.Repeat("A", 10) // too short: rejected
	r := h.must(422, "POST", v1+"/webhooks", tokAdminA, map[string]any{"url": "https://hooks.example.com/x", "eventTypes": []string{"*"}, "secret": secret})
	if strings.Contains(r.body, secret) {
		t.Errorf("the problem quotes the rejected secret: %s", r.body)
	}
	r = h.must(401, "GET", v1+"/webhooks", "token-that-must-not-echo", nil)
	if strings.Contains(r.body, "token-that-must-not-echo") {
		t.Errorf("the 401 quotes the token: %s", r.body)
	}
	if strings.Contains(h.logs.String(), "token-that-must-not-echo") || strings.Contains(h.logs.String(), secret) {
		t.Errorf("the log holds the token or the secret:\n%s", h.logs.String())
	}
}

func TestProblems_PanicBecomes500Problem(t *testing.T) {
	h := newHarness(t)
	h.api.mux.HandleFunc("GET /boom", func(http.ResponseWriter, *http.Request) { panic("kaboom") })
	rec := httptest.NewRecorder()
	h.api.ServeHTTP(rec, httptest.NewRequest("GET", "/boom", nil))
	if rec.Code != 500 || rec.Header().Get("Content-Type") != problemContentType {
		t.Fatalf("panic answered %d %q, want a 500 problem", rec.Code, rec.Header().Get("Content-Type"))
	}
	if strings.Contains(rec.Body.String(), "kaboom") {
		t.Errorf("the panic value reached the caller: %s", rec.Body.String())
	}
	if !strings.Contains(h.logs.String(), "kaboom") {
		t.Errorf("the panic was not logged")
	}
}
