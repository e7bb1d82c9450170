package domain

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDecideAttempt_AppliesTheOutcomeRules(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	policy := RetryPolicy{
		Schedule:      []time.Duration{0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute},
		RetryAfterCap: time.Hour,
	}
	cases := []struct {
		name    string
		result  AttemptResult
		attempt int
		want    AttemptDecision
	}{
		{"200 delivers", AttemptResult{StatusCode: 200}, 1, AttemptDecision{Status: ExecDelivered}},
		{"204 delivers", AttemptResult{StatusCode: 204}, 3, AttemptDecision{Status: ExecDelivered}},
		{"299 delivers", AttemptResult{StatusCode: 299}, 1, AttemptDecision{Status: ExecDelivered}},
		{"2xx on the last attempt delivers", AttemptResult{StatusCode: 200}, 4, AttemptDecision{Status: ExecDelivered}},
		{"500 retries after the next wait", AttemptResult{StatusCode: 500}, 1,
			AttemptDecision{Status: ExecFailedRetrying, ErrorClass: ErrorClassHTTPStatus, Delay: 5 * time.Second, EndpointFailed: true}},
		{"400 retries too", AttemptResult{StatusCode: 400}, 2,
			AttemptDecision{Status: ExecFailedRetrying, ErrorClass: ErrorClassHTTPStatus, Delay: 5 * time.Minute, EndpointFailed: true}},
		{"301 is a failed attempt (redirects are not followed)", AttemptResult{StatusCode: 301}, 1,
			AttemptDecision{Status: ExecFailedRetrying, ErrorClass: ErrorClassRedirect, Delay: 5 * time.Second, EndpointFailed: true}},
		{"410 disables and gives up", AttemptResult{StatusCode: 410}, 1,
			AttemptDecision{Status: ExecExhausted, ErrorClass: ErrorClassGone, DisableEndpoint: true, EndpointFailed: true}},
		{"timeout retries", AttemptResult{ErrorClass: ErrorClassTimeout}, 3,
			AttemptDecision{Status: ExecFailedRetrying, ErrorClass: ErrorClassTimeout, Delay: 30 * time.Minute, EndpointFailed: true}},
		{"connection error retries", AttemptResult{ErrorClass: ErrorClassConnection}, 1,
			AttemptDecision{Status: ExecFailedRetrying, ErrorClass: ErrorClassConnection, Delay: 5 * time.Second, EndpointFailed: true}},
		{"no response without a class is a connection error", AttemptResult{}, 1,
			AttemptDecision{Status: ExecFailedRetrying, ErrorClass: ErrorClassConnection, Delay: 5 * time.Second, EndpointFailed: true}},
		{"blocked address gives up at once", AttemptResult{ErrorClass: ErrorClassBlocked}, 1,
			AttemptDecision{Status: ExecExhausted, ErrorClass: ErrorClassBlocked, EndpointFailed: true}},
		{"last attempt exhausts", AttemptResult{StatusCode: 500}, 4,
			AttemptDecision{Status: ExecExhausted, ErrorClass: ErrorClassHTTPStatus, EndpointFailed: true}},
		{"a replayed attempt beyond the schedule exhausts", AttemptResult{StatusCode: 500}, 9,
			AttemptDecision{Status: ExecExhausted, ErrorClass: ErrorClassHTTPStatus, EndpointFailed: true}},
		{"429 with Retry-After seconds waits at least that", AttemptResult{StatusCode: 429, RetryAfter: "120"}, 1,
			AttemptDecision{Status: ExecFailedRetrying, ErrorClass: ErrorClassThrottled, Delay: 2 * time.Minute, NotBefore: true, EndpointFailed: true}},
		{"503 with an HTTP date waits until then", AttemptResult{StatusCode: 503, RetryAfter: now.Add(10 * time.Minute).Format("Mon, 02 Jan 2006 15:04:05 GMT")}, 1,
			AttemptDecision{Status: ExecFailedRetrying, ErrorClass: ErrorClassHTTPStatus, Delay: 10 * time.Minute, NotBefore: true, EndpointFailed: true}},
		{"Retry-After is capped", AttemptResult{StatusCode: 429, RetryAfter: "86400"}, 1,
			AttemptDecision{Status: ExecFailedRetrying, ErrorClass: ErrorClassThrottled, Delay: time.Hour, NotBefore: true, EndpointFailed: true}},
		{"a shorter Retry-After keeps the schedule's wait", AttemptResult{StatusCode: 429, RetryAfter: "1"}, 2,
			AttemptDecision{Status: ExecFailedRetrying, ErrorClass: ErrorClassThrottled, Delay: 5 * time.Minute, EndpointFailed: true}},
		{"a malformed Retry-After is ignored", AttemptResult{StatusCode: 503, RetryAfter: "soon"}, 1,
			AttemptDecision{Status: ExecFailedRetrying, ErrorClass: ErrorClassHTTPStatus, Delay: 5 * time.Second, EndpointFailed: true}},
		{"Retry-After on a 500 is ignored", AttemptResult{StatusCode: 500, RetryAfter: "600"}, 1,
			AttemptDecision{Status: ExecFailedRetrying, ErrorClass: ErrorClassHTTPStatus, Delay: 5 * time.Second, EndpointFailed: true}},
		{"429 on the last attempt exhausts anyway", AttemptResult{StatusCode: 429, RetryAfter: "5"}, 4,
			AttemptDecision{Status: ExecExhausted, ErrorClass: ErrorClassThrottled, EndpointFailed: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := DecideAttempt(tc.result, tc.attempt, policy, now); got != tc.want {
				t.Errorf("attempt %d with %+v:\n got  %+v\n want %+v", tc.attempt, tc.result, got, tc.want)
			}
		})
	}
}

func TestDecideAttempt_StopsAtMaxAttempts(t *testing.T) {
	schedule := make([]time.Duration, MaxAttempts+5)
	got := DecideAttempt(AttemptResult{StatusCode: 500}, MaxAttempts, RetryPolicy{Schedule: schedule}, time.Now())
	if got.Status != ExecExhausted {
		t.Errorf("attempt %d of a longer schedule: status %s, want exhausted (commands cannot carry a higher attempt)", MaxAttempts, got.Status)
	}
}

func TestParseRetryAfter_ReadsSecondsAndDates(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"0", 0, true},
		{"30", 30 * time.Second, true},
		{" 30 ", 30 * time.Second, true},
		{"Sun, 01 Mar 2026 12:05:00 GMT", 5 * time.Minute, true},
		{"Sunday, 01-Mar-26 12:00:30 GMT", 30 * time.Second, true},
		{"Sun Mar  1 12:01:00 2026", time.Minute, true},
		{"Sun, 01 Mar 2026 11:00:00 GMT", 0, true}, // in the past: no wait
		{"", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"tomorrow", 0, false},
		{"2026-03-01T12:05:00Z", 0, false},
	}
	for _, tc := range cases {
		got, ok := ParseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.wantOK)
		}
	}
}

func TestNextEndpointHealth_WritesOnlyOnTransitions(t *testing.T) {
	now := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
	recent, old := now.Add(-time.Hour), now.Add(-6*24*time.Hour)
	disableAfter := 120 * time.Hour
	healthy := WebhookEndpoint{Status: WebhookActive, LastSuccessAt: &recent}
	never := WebhookEndpoint{Status: WebhookActive}
	failing := WebhookEndpoint{Status: WebhookActive, FailingSince: &recent, LastSuccessAt: &old}
	failingLong := WebhookEndpoint{Status: WebhookActive, FailingSince: &old}
	disabled := WebhookEndpoint{Status: WebhookDisabled, FailingSince: &old}

	cases := []struct {
		name   string
		ep     WebhookEndpoint
		failed bool
		limit  time.Duration
		want   EndpointHealth
	}{
		{"success on a healthy endpoint writes nothing", healthy, false, disableAfter, EndpointHealth{}},
		{"first success ever is recorded", never, false, disableAfter, EndpointHealth{Recovered: true}},
		{"first success after failures recovers", failing, false, disableAfter, EndpointHealth{Recovered: true}},
		{"first failure starts the failing period", healthy, true, disableAfter, EndpointHealth{StartFailing: true}},
		{"further failures write nothing", failing, true, disableAfter, EndpointHealth{}},
		{"failing longer than the limit disables", failingLong, true, disableAfter, EndpointHealth{Disable: true}},
		{"a limit of 0 never disables", failingLong, true, 0, EndpointHealth{}},
		{"an endpoint already disabled is not disabled again", disabled, true, disableAfter, EndpointHealth{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := NextEndpointHealth(tc.ep, tc.failed, now, tc.limit)
			got.Reason = "" // checked below
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}

	h := NextEndpointHealth(failingLong, true, now, disableAfter)
	if !strings.Contains(h.Reason, old.Format(time.RFC3339)) || !strings.Contains(h.Reason, "120h") {
		t.Errorf("disable reason %q should name when the failures began and the limit", h.Reason)
	}
}

func TestEndpointHealth_ApplyIsIdempotent(t *testing.T) {
	now := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
	ep := WebhookEndpoint{Status: WebhookActive}
	if !(EndpointHealth{StartFailing: true}).Apply(&ep, now) || ep.FailingSince == nil || !ep.FailingSince.Equal(now) {
		t.Fatalf("StartFailing did not set failingSince: %+v", ep)
	}
	if (EndpointHealth{StartFailing: true}).Apply(&ep, now.Add(time.Minute)) {
		t.Errorf("a second StartFailing changed the endpoint; failingSince must keep the first failure")
	}
	if !(EndpointHealth{Recovered: true}).Apply(&ep, now.Add(time.Hour)) || ep.FailingSince != nil || ep.LastSuccessAt == nil {
		t.Errorf("Recovered did not clear failingSince and set lastSuccessAt: %+v", ep)
	}
	if !(EndpointHealth{Disable: true, Reason: "x"}).Apply(&ep, now) || ep.Status != WebhookDisabled || ep.DisabledReason != "x" {
		t.Errorf("Disable did not disable: %+v", ep)
	}
	if (EndpointHealth{Disable: true, Reason: "y"}).Apply(&ep, now) || ep.DisabledReason != "x" {
		t.Errorf("disabling a disabled endpoint changed it: %+v", ep)
	}
}

func TestSigningSecretRefs_SignsWithBothDuringTheOverlap(t *testing.T) {
	now := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
	later, earlier := now.Add(time.Hour), now.Add(-time.Second)
	cases := []struct {
		name string
		ep   WebhookEndpoint
		want []string
	}{
		{"current only", WebhookEndpoint{SecretRef: "new"}, []string{"new"}},
		{"previous within the overlap", WebhookEndpoint{SecretRef: "new", PreviousSecretRef: "old", PreviousSecretExpiresAt: &later}, []string{"new", "old"}},
		{"previous after the overlap", WebhookEndpoint{SecretRef: "new", PreviousSecretRef: "old", PreviousSecretExpiresAt: &earlier}, []string{"new"}},
		{"previous expiring exactly now", WebhookEndpoint{SecretRef: "new", PreviousSecretRef: "old", PreviousSecretExpiresAt: &now}, []string{"new"}},
		{"previous without an expiry", WebhookEndpoint{SecretRef: "new", PreviousSecretRef: "old"}, []string{"new"}},
	}
	for _, tc := range cases {
		if got := SigningSecretRefs(tc.ep, now); strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s: signs with %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestDeliveryPayload_IsTheStandardWebhooksShapeAndStable(t *testing.T) {
	occurred := time.Date(2026, 3, 1, 12, 0, 0, 123000000, time.FixedZone("x", 3600))
	d := DeliverWebhook{DeliveryID: "dlv_1", EventType: "contact.updated", Data: json.RawMessage(`{ "id": 7 }`),
		OccurredAt: occurred, FirstAttemptAt: occurred.Add(time.Minute)}
	body, err := DeliveryPayload(d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"contact.updated","timestamp":"2026-03-01T11:00:00.123Z","data":{"id":7}}`
	if string(body) != want {
		t.Errorf("payload\n got  %s\n want %s", body, want)
	}
	d.Attempt = 5
	again, _ := DeliveryPayload(d)
	if string(again) != string(body) {
		t.Errorf("a later attempt sends different bytes: %s", again)
	}
	d.OccurredAt = time.Time{}
	noTime, _ := DeliveryPayload(d)
	if !strings.Contains(string(noTime), `"timestamp":"2026-03-01T11:01:00.123Z"`) {
		t.Errorf("without an event time the first attempt's time is the timestamp: %s", noTime)
	}
}

func TestDeliveryAttempt_DecodesAsAnExecutionWithoutTheEvent(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a := DeliveryAttempt{
		Execution: Execution{ID: "att_1", TenantID: "t1", Kind: ExecutionWebhookDelivery, Status: ExecDelivered, Attempt: 1, StartedAt: now},
		Event:     &DeliveredEvent{Data: json.RawMessage(`{"secretish":"payload"}`), OccurredAt: now, FirstAttemptAt: now},
	}
	raw, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"id":"att_1"`) || !strings.Contains(string(raw), `"event":{`) {
		t.Fatalf("the document does not hold the execution fields and the event at the top level: %s", raw)
	}
	var e Execution
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatal(err)
	}
	back, _ := json.Marshal(e)
	if strings.Contains(string(back), "payload") {
		t.Errorf("an Execution decoded from an attempt document still carries the event: %s", back)
	}
	if pk, id := a.Key(); pk != "t1" || id != "att_1" || a.Container() != ContainerExecutions {
		t.Errorf("Key/Container = %s/%s in %s", pk, id, a.Container())
	}
}

func TestReplayDelivery_ContinuesAfterTheLastAttempt(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	exec := func(attempt int) Execution {
		return Execution{ID: AttemptExecutionID("dlv_1", attempt), TenantID: "t1", Kind: ExecutionWebhookDelivery,
			Status: ExecFailedRetrying, WebhookID: "wh_1", DeliveryID: "dlv_1", EventID: "evt_1",
			EventType: "contact.updated", Attempt: attempt, StartedAt: now.Add(time.Duration(attempt) * time.Minute)}
	}
	first := DeliveryAttempt{Execution: exec(1), Event: &DeliveredEvent{Data: json.RawMessage(`{"a":1}`), OccurredAt: now, FirstAttemptAt: now}}

	cmd, err := ReplayDelivery([]DeliveryAttempt{{Execution: exec(3)}, first, {Execution: exec(2)}})
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Attempt != 4 || cmd.DeliveryID != "dlv_1" || cmd.WebhookID != "wh_1" || cmd.EventID != "evt_1" ||
		string(cmd.Data) != `{"a":1}` || !cmd.OccurredAt.Equal(now) || !cmd.FirstAttemptAt.Equal(now) {
		t.Errorf("replay command %+v: want attempt 4 of dlv_1 with the first attempt's event", cmd)
	}

	if _, err := ReplayDelivery([]DeliveryAttempt{{Execution: exec(2)}}); !errors.Is(err, ErrEventExpired) {
		t.Errorf("without the first attempt's record: %v, want ErrEventExpired", err)
	}
	if _, err := ReplayDelivery([]DeliveryAttempt{first, {Execution: exec(MaxAttempts)}}); !errors.Is(err, ErrAttemptsUsedUp) {
		t.Errorf("after %d attempts: %v, want ErrAttemptsUsedUp", MaxAttempts, err)
	}
	latest, ok := LatestAttempt([]DeliveryAttempt{{Execution: exec(2)}, first, {Execution: exec(5)}, {Execution: exec(3)}})
	if !ok || latest.Attempt != 5 {
		t.Errorf("LatestAttempt = %d, want 5", latest.Attempt)
	}
}

func TestNoMatchExecutionID_IsDeterministicAndValid(t *testing.T) {
	a, b := NoMatchExecutionID("evt_1"), NoMatchExecutionID("evt_1")
	if a != b || !IsValidID(a) || a == NoMatchExecutionID("evt_2") {
		t.Errorf("NoMatchExecutionID: %q, %q", a, b)
	}
}
