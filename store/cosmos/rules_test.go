package cosmos

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azruntime "github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"github.com/castiel/integration-manager/store"
)

func responseError(status int, header http.Header, body string) error {
	if header == nil {
		header = http.Header{}
	}
	resp := &http.Response{
		StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Header: header, Body: io.NopCloser(strings.NewReader(body)),
		Request: &http.Request{Method: http.MethodGet, URL: mustURL("https://acct.documents.azure.com/dbs/d/colls/c/docs/x")},
	}
	return azruntime.NewResponseErrorWithErrorCode(resp, resp.Status)
}

func TestClassify_MapsStatusesToStoreErrorsAndRetries(t *testing.T) {
	alive := context.Background()
	for _, tc := range []struct {
		name  string
		op    string
		err   error
		kind  error
		retry retryWhen
	}{
		{"404", opRead, responseError(404, nil, ""), store.ErrNotFound, retryNever},
		{"404 of a missing container", opRead, responseError(404, http.Header{"X-Ms-Substatus": {"1003"}}, ""), nil, retryNever},
		{"409", opCreate, responseError(409, nil, ""), store.ErrConflict, retryNever},
		{"412", opReplace, responseError(412, nil, ""), store.ErrPreconditionFailed, retryNever},
		{"429", opRead, responseError(429, nil, ""), store.ErrThrottled, retryAlways},
		{"503", opCreate, responseError(503, nil, ""), store.ErrUnavailable, retryAlways},
		{"449 retry-with", opReplace, responseError(449, nil, ""), store.ErrUnavailable, retryAlways},
		{"408", opRead, responseError(408, nil, ""), store.ErrUnavailable, retryIfRepeatable},
		{"500", opRead, responseError(500, nil, ""), store.ErrUnavailable, retryNever},
		{"502", opRead, responseError(502, nil, ""), store.ErrUnavailable, retryNever},
		{"400 on a query", opQuery, responseError(400, nil, ""), store.ErrInvalidQuery, retryNever},
		{"400 on a write", opCreate, responseError(400, nil, ""), nil, retryNever},
		{"401", opRead, responseError(401, nil, ""), nil, retryNever},
		{"attempt timeout", opRead, fmt.Errorf("wrapped: %w", context.DeadlineExceeded), store.ErrUnavailable, retryIfRepeatable},
		{"connection refused", opRead, fmt.Errorf("dial: %w", syscall.ECONNREFUSED), store.ErrUnavailable, retryNever},
		{"other", opRead, errors.New("boom"), nil, retryNever},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := classify(alive, tc.op, tc.err)
			if f.kind != tc.kind {
				t.Errorf("kind %v, want %v", f.kind, tc.kind)
			}
			if f.retry != tc.retry {
				t.Errorf("retry %v, want %v", f.retry, tc.retry)
			}
		})
	}
}

func TestClassify_CallerContext(t *testing.T) {
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if f := classify(expired, opRead, context.DeadlineExceeded); f.kind != store.ErrUnavailable || f.retry != retryNever {
		t.Errorf("caller deadline passed: %+v, want ErrUnavailable without retry", f)
	}
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if f := classify(cancelled, opRead, context.Canceled); f.kind != nil || f.retry != retryNever {
		t.Errorf("caller cancelled: %+v, want no store error and no retry", f)
	}
}

func TestRetryAfter_ReadsTheServiceHint(t *testing.T) {
	for _, tc := range []struct {
		header http.Header
		want   time.Duration
	}{
		{http.Header{"X-Ms-Retry-After-Ms": {"250"}}, 250 * time.Millisecond},
		{http.Header{"X-Ms-Retry-After-Ms": {"12.5"}}, 12500 * time.Microsecond},
		{http.Header{"Retry-After": {"2"}}, 2 * time.Second},
		{http.Header{"X-Ms-Retry-After-Ms": {"junk"}}, 0},
		{http.Header{}, 0},
	} {
		if got := retryAfter(&http.Response{Header: tc.header}); got != tc.want {
			t.Errorf("retryAfter(%v) = %v, want %v", tc.header, got, tc.want)
		}
	}
}

func TestRetryable_OnlyRepeatableCallsRetryAmbiguousFailures(t *testing.T) {
	f := failure{retry: retryIfRepeatable}
	if !f.retryable(call{repeatable: true}) || f.retryable(call{repeatable: false}) {
		t.Error("an ambiguous failure must be retried for repeatable calls only")
	}
	if !(failure{retry: retryAlways}).retryable(call{}) {
		t.Error("429/503 must be retried for every call")
	}
}

func TestHintedBackOff_PrefersTheServiceHintAndCapsIt(t *testing.T) {
	h := &hintedBackOff{BackOff: constant(time.Millisecond)}
	h.hint = 300 * time.Millisecond
	if got := h.NextBackOff(); got != 300*time.Millisecond {
		t.Errorf("with a hint: %v, want 300ms", got)
	}
	if got := h.NextBackOff(); got != time.Millisecond {
		t.Errorf("the hint must apply once: %v, want the backoff's 1ms", got)
	}
	h.hint = time.Hour
	if got := h.NextBackOff(); got != maxRetryAfter {
		t.Errorf("a huge hint: %v, want the cap %v", got, maxRetryAfter)
	}
}

type constant time.Duration

func (c constant) NextBackOff() time.Duration { return time.Duration(c) }
func (constant) Reset()                       {}

func TestPrepare_StampsTTLAndChecksTheKeys(t *testing.T) {
	withTTL := &container{spec: store.ContainerSpec{Name: "runs", PartitionKey: "tenantId", TTL: time.Hour}, ttlSeconds: 3600}
	noTTL := &container{spec: store.ContainerSpec{Name: "hooks", PartitionKey: "tenantId"}}
	for _, tc := range []struct {
		name    string
		c       *container
		body    string
		want    string // "" means an error is expected
		wantErr string
	}{
		{"stamps ttl", withTTL, `{"id":"a","tenantId":"t"}`, `{"id":"a","tenantId":"t","ttl":3600}`, ""},
		{"stamps after trailing space", withTTL, "{\"id\":\"a\",\"tenantId\":\"t\"} \n", `{"id":"a","tenantId":"t","ttl":3600}`, ""},
		{"keeps the document's ttl", withTTL, `{"id":"a","tenantId":"t","ttl":5}`, `{"id":"a","tenantId":"t","ttl":5}`, ""},
		{"keeps an explicit never-expire", withTTL, `{"id":"a","tenantId":"t","ttl":-1}`, `{"id":"a","tenantId":"t","ttl":-1}`, ""},
		{"no ttl container leaves the body alone", noTTL, `{"id":"a","tenantId":"t"}`, `{"id":"a","tenantId":"t"}`, ""},
		{"other id", noTTL, `{"id":"b","tenantId":"t"}`, "", `"id" is "b"`},
		{"missing id", noTTL, `{"tenantId":"t"}`, "", `"id" is missing`},
		{"other partition", noTTL, `{"id":"a","tenantId":"u"}`, "", `"tenantId" is "u"`},
		{"array", noTTL, `[1]`, "", "not a JSON object"},
		{"null", noTTL, `null`, "", "not a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.c.prepare(call{op: opCreate, container: tc.c.spec.Name, id: "a"}, "t", "a", []byte(tc.body))
			if tc.want == "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %s, %v; want an error mentioning %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("prepare: %v", err)
			}
			if string(got) != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestNewContainer_RoundsTTLUpToWholeSeconds(t *testing.T) {
	for ttl, want := range map[time.Duration]int64{time.Hour: 3600, 1500 * time.Millisecond: 2, time.Millisecond: 1, 0: 0} {
		if got := newContainer(nil, store.ContainerSpec{TTL: ttl}, nil).ttlSeconds; got != want {
			t.Errorf("TTL %v: %d s, want %d", ttl, got, want)
		}
	}
}

func TestTokens_RoundTripAndRejectForgeries(t *testing.T) {
	for _, tok := range []pageToken{{After: "p-10"}, {After: "id with spaces/ü", PK: "crm"}} {
		got, err := decodeToken(encodeToken(tok))
		if err != nil || *got != tok {
			t.Errorf("round trip of %+v: %+v, %v", tok, got, err)
		}
	}
	for _, bad := range []string{"not a token", "%%%", "eyJ0cnVuY2F0ZWQ", encodeTokenRaw(`{"after":""}`), encodeTokenRaw(`[]`)} {
		if _, err := decodeToken(bad); err == nil {
			t.Errorf("decodeToken(%q) accepted a token this store never issued", bad)
		}
	}
}

func encodeTokenRaw(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func TestPastToken_OrdersByIDThenPartition(t *testing.T) {
	tok := pageToken{After: "b", PK: "m"}
	for _, tc := range []struct {
		id, pk    string
		asc, desc bool
	}{
		{"a", "z", false, true},
		{"b", "a", false, true},
		{"b", "m", false, false}, // the token's own item is on the previous page
		{"b", "z", true, false},
		{"c", "a", true, false},
	} {
		it := store.Item{ID: tc.id, PartitionKey: tc.pk}
		if got := pastToken(it, tok, false); got != tc.asc {
			t.Errorf("ascending: (%s,%s) past (b,m) = %v, want %v", tc.id, tc.pk, got, tc.asc)
		}
		if got := pastToken(it, tok, true); got != tc.desc {
			t.Errorf("descending: (%s,%s) past (b,m) = %v, want %v", tc.id, tc.pk, got, tc.desc)
		}
	}
}

func TestCut_IssuesATokenOnlyWhenMoreWereFound(t *testing.T) {
	items := []store.Item{{ID: "a"}, {ID: "b"}, {ID: "c"}}
	if p := cut(items, 3, false); len(p.Items) != 3 || p.Continuation != "" {
		t.Errorf("exactly limit items: %d items, token %q; want 3 and no token", len(p.Items), p.Continuation)
	}
	p := cut(items, 2, false)
	tok, err := decodeToken(p.Continuation)
	if len(p.Items) != 2 || err != nil || tok.After != "b" {
		t.Errorf("limit+1 items: %d items, token %+v (%v); want 2 and a token after b", len(p.Items), tok, err)
	}
}

func TestFilterConditions_QuoteNamesAndParameteriseValues(t *testing.T) {
	conds, params, err := filterConditions([]store.Filter{{Field: "name", Value: "x"}, {Field: "value", Value: int64(3)}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{`c["name"] = @f0`, `c["value"] = @f1`}; strings.Join(conds, "|") != strings.Join(want, "|") {
		t.Errorf("conditions %q, want %q", conds, want)
	}
	if len(params) != 2 || params[0].Name != "@f0" || params[0].Value != "x" || params[1].Value != int64(3) {
		t.Errorf("parameters %+v", params)
	}
	for _, f := range []store.Filter{
		{Field: "1abc", Value: 1}, {Field: "a-b", Value: 1}, {Field: "ü", Value: 1},
		{Field: "a", Value: []int{1}}, {Field: "a", Value: struct{}{}},
	} {
		if _, _, err := filterConditions([]store.Filter{f}); err == nil {
			t.Errorf("filter %+v was accepted", f)
		}
	}
}

func TestOpError_IsOneLineAndUnwrapsToBothErrors(t *testing.T) {
	cause := responseError(http.StatusConflict, nil, `{"code":"Conflict","message":"Entity with the specified id already exists in the system.\r\nActivityId: 1"}`)
	b := &Backend{}
	err := b.failure(context.Background(), call{op: opCreate, container: "hooks", id: "h1"}, cause)
	want := `cosmos create hooks/h1: store: document already exists: HTTP 409 Conflict: Entity with the specified id already exists in the system. ActivityId: 1`
	if err.Error() != want {
		t.Errorf("error text\n got %q\nwant %q", err.Error(), want)
	}
	var re *azcore.ResponseError
	if !errors.Is(err, store.ErrConflict) || !errors.As(err, &re) || re.StatusCode != 409 {
		t.Errorf("the error must unwrap to store.ErrConflict and to azcore's ResponseError")
	}
}

func TestConfig_PrintingHidesTheKey(t *testing.T) {
	cfg := Config{Endpoint: "https://a/", Key: "c2VjcmV0LWtleQ==", Database: "d"}
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%v", &cfg)} {
		if strings.Contains(s, cfg.Key) {
			t.Errorf("printed Config contains the key: %s", s)
		}
	}
}
