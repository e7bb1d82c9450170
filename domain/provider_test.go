package domain

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestProvider_Validate(t *testing.T) {
	runFieldCases(t, validProvider, Provider.Validate, []fieldCase[Provider]{
		{"bad id", func(p *Provider) { p.ID = "a/b" }, "id"},
		{"missing category", func(p *Provider) { p.Category = "" }, "category"},
		{"upper-case category", func(p *Provider) { p.Category = "CRM" }, "category"},
		{"blank name", func(p *Provider) { p.Name = "  " }, "name"},
		{"long name", func(p *Provider) { p.Name = string(make([]rune, MaxNameLength+1)) }, "name"},
		{"relative base url", func(p *Provider) { p.BaseURL = "/api" }, "baseUrl"},
		{"base url with credentials", func(p *Provider) { p.BaseURL = "https://u:p@api.example.com" }, "baseUrl"},
		{"http base url is fine", func(p *Provider) { p.BaseURL = "http://127.0.0.1:9000" }, ""},
		{"unknown auth kind", func(p *Provider) { p.Auth.Kind = "magic" }, "auth.kind"},
		{"missing auth kind", func(p *Provider) { p.Auth.Kind = "" }, "auth.kind"},
		{"oauth without token url", func(p *Provider) { p.Auth.TokenURL = "" }, "auth.tokenUrl"},
		{"oauth scope with space", func(p *Provider) { p.Auth.Scopes = []string{"a b"} }, "auth.scopes[0]"},
		{"api key in header", func(p *Provider) { p.Auth = AuthSpec{Kind: AuthAPIKey, APIKeyHeader: "X-API-Key"} }, ""},
		{"api key in query", func(p *Provider) { p.Auth = AuthSpec{Kind: AuthAPIKey, APIKeyQueryParam: "api_key"} }, ""},
		{"api key nowhere", func(p *Provider) { p.Auth = AuthSpec{Kind: AuthAPIKey} }, "auth.apiKeyHeader"},
		{"api key in both", func(p *Provider) {
			p.Auth = AuthSpec{Kind: AuthAPIKey, APIKeyHeader: "X-Key", APIKeyQueryParam: "key"}
		}, "auth.apiKeyHeader"},
		{"api key bad header", func(p *Provider) { p.Auth = AuthSpec{Kind: AuthAPIKey, APIKeyHeader: "X Key"} }, "auth.apiKeyHeader"},
		{"bearer", func(p *Provider) { p.Auth = AuthSpec{Kind: AuthBearer} }, ""},
		{"none", func(p *Provider) { p.Auth = AuthSpec{Kind: AuthNone} }, ""},
		{"unknown pagination", func(p *Provider) { p.Pagination.Kind = "scroll" }, "pagination.kind"},
		{"cursor without param", func(p *Provider) { p.Pagination.Param = "" }, "pagination.param"},
		{"cursor without next path", func(p *Provider) { p.Pagination.NextCursorPath = "" }, "pagination.nextCursorPath"},
		{"page without param", func(p *Provider) { p.Pagination = PaginationSpec{Kind: PaginationPage} }, "pagination.param"},
		{"offset", func(p *Provider) {
			p.Pagination = PaginationSpec{Kind: PaginationOffset, Param: "offset", PageSize: 50}
		}, ""},
		{"link header", func(p *Provider) { p.Pagination = PaginationSpec{Kind: PaginationLinkHeader} }, ""},
		{"none pagination", func(p *Provider) { p.Pagination = PaginationSpec{Kind: PaginationNone} }, ""},
		{"page size too big", func(p *Provider) { p.Pagination.PageSize = MaxPageSize + 1 }, "pagination.pageSize"},
		{"negative page size", func(p *Provider) { p.Pagination.PageSize = -1 }, "pagination.pageSize"},
		{"bad items path", func(p *Provider) { p.Pagination.ItemsPath = "data..items" }, "pagination.itemsPath"},
		{"negative rate", func(p *Provider) { p.RateLimit.RequestsPerSecond = -1 }, "rateLimit.requestsPerSecond"},
		{"NaN rate", func(p *Provider) { p.RateLimit.RequestsPerSecond = math.NaN() }, "rateLimit.requestsPerSecond"},
		{"huge rate", func(p *Provider) { p.RateLimit.RequestsPerSecond = MaxProviderRatePerSecond + 1 }, "rateLimit.requestsPerSecond"},
		{"rate without burst", func(p *Provider) { p.RateLimit.Burst = 0 }, "rateLimit.burst"},
		{"no rate limit", func(p *Provider) { p.RateLimit = RateLimit{} }, ""},
		{"no entities", func(p *Provider) { p.Entities = nil }, "entities"},
		{"duplicate entity", func(p *Provider) { p.Entities[1].Name = "contacts" }, "entities[1].name"},
		{"bad entity name", func(p *Provider) { p.Entities[0].Name = "1contacts" }, "entities[0].name"},
		{"list path without slash", func(p *Provider) { p.Entities[0].ListPath = "contacts" }, "entities[0].listPath"},
		{"list path with query", func(p *Provider) { p.Entities[0].ListPath = "/contacts?x=1" }, "entities[0].listPath"},
		{"list path template", func(p *Provider) { p.Entities[0].ListPath = "/accounts/{accountId}/contacts" }, ""},
		{"unclosed template", func(p *Provider) { p.Entities[0].ListPath = "/a/{id" }, "entities[0].listPath"},
		{"empty placeholder", func(p *Provider) { p.Entities[0].ListPath = "/a/{}" }, "entities[0].listPath"},
		{"nested placeholder", func(p *Provider) { p.Entities[0].ListPath = "/a/{{id}}" }, "entities[0].listPath"},
		{"missing primary key", func(p *Provider) { p.Entities[0].PrimaryKey = "" }, "entities[0].primaryKey"},
		{"cursor param without field", func(p *Provider) { p.Entities[0].CursorField = "" }, "entities[0].cursorParam"},
		{"unknown cursor format", func(p *Provider) { p.Entities[0].CursorFormat = "iso" }, "entities[0].cursorFormat"},
		{"bad deleted flag", func(p *Provider) { p.Entities[0].DeletedFlagField = "a b" }, "entities[0].deletedFlagField"},
		{"GET is not a write", func(p *Provider) { p.Entities[0].Update.Method = "GET" }, "entities[0].update.method"},
		{"write without path", func(p *Provider) { p.Entities[0].Create.Path = "" }, "entities[0].create.path"},
		{"no get endpoint", func(p *Provider) { p.Entities[0].Get = nil }, ""},
		{"get must be a GET", func(p *Provider) { p.Entities[0].Get.Method = "POST" }, "entities[0].get.method"},
		{"get without method", func(p *Provider) { p.Entities[0].Get.Method = "" }, "entities[0].get.method"},
		{"get path without {id}", func(p *Provider) { p.Entities[0].Get.Path = "/crm/v3/objects/contacts" }, "entities[0].get.path"},
		{"get without path", func(p *Provider) { p.Entities[0].Get.Path = "" }, "entities[0].get.path"},
		{"get path with query", func(p *Provider) { p.Entities[0].Get.Path = "/contacts/{id}?full=1" }, "entities[0].get.path"},
		{"get path with other placeholders", func(p *Provider) { p.Entities[0].Get.Path = "/accounts/{accountId}/contacts/{id}" }, ""},
		{"no ingress", func(p *Provider) { p.Ingress = nil }, ""},
		{"ingress bad header", func(p *Provider) { p.Ingress.Header = "" }, "ingress.header"},
		{"ingress bad scheme", func(p *Provider) { p.Ingress.Scheme = "hmac-md5" }, "ingress.scheme"},
		{"ingress bad encoding", func(p *Provider) { p.Ingress.Encoding = "base32" }, "ingress.encoding"},
		{"ingress tolerance without timestamp", func(p *Provider) { p.Ingress.TimestampHeader = "" }, "ingress.tolerance"},
		{"ingress tolerance unparsable", func(p *Provider) { p.Ingress.Tolerance = "5 minutes" }, "ingress.tolerance"},
		{"ingress tolerance too long", func(p *Provider) { p.Ingress.Tolerance = "2h" }, "ingress.tolerance"},
		{"ingress default tolerance", func(p *Provider) { p.Ingress.Tolerance = "" }, ""},
		{"ftp base url", func(p *Provider) { p.BaseURL = "ftp://files.example.com" }, "baseUrl"},
		{"burst too big", func(p *Provider) { p.RateLimit.Burst = MaxBurst + 1 }, "rateLimit.burst"},
		{"primary key too long", func(p *Provider) { p.Entities[0].PrimaryKey = strings.Repeat("k", MaxPathLength+1) }, "entities[0].primaryKey"},
		{"invalid UTF-8 name", func(p *Provider) { p.Name = "bad\xff" }, "name"},
		{"ingress prefix with space", func(p *Provider) { p.Ingress.Prefix = "sha 256=" }, "ingress.prefix"},
	})
}

func TestProvider_EntityLooksUpByName(t *testing.T) {
	p := validProvider()
	if e, ok := p.Entity("companies"); !ok || e.Name != "companies" {
		t.Fatalf("Entity(companies) = %v, %v", e, ok)
	}
	if _, ok := p.Entity("deals"); ok {
		t.Fatal("Entity found an entity the provider does not define")
	}
}

func TestTimeFormat_RoundTripsCursorTimes(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 890_000_000, time.UTC)
	cases := []struct {
		format TimeFormat
		text   string
		back   time.Time
	}{
		{TimeRFC3339, "2025-03-04T05:06:07.89Z", at},
		{"", "2025-03-04T05:06:07.89Z", at},
		{TimeUnix, "1741064767", at.Truncate(time.Second)},
		{TimeUnixMillis, "1741064767890", at},
	}
	for _, tc := range cases {
		if got := tc.format.Format(at); got != tc.text {
			t.Errorf("%q.Format = %q, want %q", tc.format, got, tc.text)
		}
		back, err := tc.format.Parse(tc.text)
		if err != nil || !back.Equal(tc.back) {
			t.Errorf("%q.Parse(%q) = %v, %v; want %v", tc.format, tc.text, back, err, tc.back)
		}
	}
	if _, err := TimeUnix.Parse("yesterday"); err == nil {
		t.Error("TimeUnix.Parse accepted a non-number")
	}
	if _, err := TimeRFC3339.Parse("2025-03-04"); err == nil {
		t.Error("TimeRFC3339.Parse accepted a date without time")
	}
}

func TestExpandPath_FillsAndEscapesPlaceholders(t *testing.T) {
	cases := []struct {
		name, template string
		vars           map[string]string
		want           string
		wantErr        bool
	}{
		{"no placeholder", "/contacts", nil, "/contacts", false},
		{"one", "/contacts/{id}", map[string]string{"id": "42"}, "/contacts/42", false},
		{"two", "/a/{account}/c/{id}", map[string]string{"account": "x", "id": "y"}, "/a/x/c/y", false},
		{"escaped slash", "/contacts/{id}", map[string]string{"id": "a/b"}, "/contacts/a%2Fb", false},
		{"escaped traversal", "/contacts/{id}", map[string]string{"id": "../admin"}, "/contacts/..%2Fadmin", false},
		{"missing value", "/contacts/{id}", map[string]string{}, "", true},
		{"unclosed", "/contacts/{id", map[string]string{"id": "1"}, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ExpandPath(tc.template, tc.vars)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("ExpandPath(%q) = %q, %v; want %q, error %v", tc.template, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestSignatureSpec_VerifiesWhatSignProduces(t *testing.T) {
	secret := []byte("s3cr3t")
	body := []byte(`{"id":42}`)
	now := time.Unix(1_700_000_000, 0)
	withTS := SignatureSpec{Header: "X-Signature", Scheme: SchemeHMACSHA256, Encoding: EncodingHex, Prefix: "sha256=", TimestampHeader: "X-Timestamp", Tolerance: "5m"}
	plain := SignatureSpec{Header: "X-Hub-Signature", Scheme: SchemeHMACSHA256, Encoding: EncodingBase64}

	// Known-answer check: HMAC-SHA256("s3cr3t", "1700000000.{\"id\":42}") computed independently.
	if got := withTS.Sign(secret, body, now)["X-Signature"]; got != "sha256=de5c5266ba6626ed6b07a6bf8b1aff5af74ab694ee6d4fa79988947b6a0daae0" {
		t.Errorf("Sign = %q, want the pinned value", got)
	}

	cases := []struct {
		name    string
		spec    SignatureSpec
		headers func() map[string]string
		body    []byte
		now     time.Time
		wantErr bool
	}{
		{"valid with timestamp", withTS, func() map[string]string { return withTS.Sign(secret, body, now) }, body, now, false},
		{"valid base64 without timestamp", plain, func() map[string]string { return plain.Sign(secret, body, now) }, body, now, false},
		{"header names are case-insensitive", withTS, func() map[string]string {
			h := withTS.Sign(secret, body, now)
			return map[string]string{"x-signature": h["X-Signature"], "x-timestamp": h["X-Timestamp"]}
		}, body, now, false},
		{"default tolerance is five minutes", SignatureSpec{Header: "X-Sig", Scheme: SchemeHMACSHA256, Encoding: EncodingHex, TimestampHeader: "X-Ts"},
			func() map[string]string {
				s := SignatureSpec{Header: "X-Sig", Scheme: SchemeHMACSHA256, Encoding: EncodingHex, TimestampHeader: "X-Ts"}
				return s.Sign(secret, body, now.Add(-6*time.Minute))
			}, body, now, true},
		{"within tolerance", withTS, func() map[string]string { return withTS.Sign(secret, body, now.Add(-4*time.Minute)) }, body, now, false},
		{"too old", withTS, func() map[string]string { return withTS.Sign(secret, body, now.Add(-6*time.Minute)) }, body, now, true},
		{"from the future", withTS, func() map[string]string { return withTS.Sign(secret, body, now.Add(6*time.Minute)) }, body, now, true},
		{"tampered body", withTS, func() map[string]string { return withTS.Sign(secret, body, now) }, []byte(`{"id":43}`), now, true},
		{"wrong secret", withTS, func() map[string]string { return withTS.Sign([]byte("other"), body, now) }, body, now, true},
		{"missing signature", withTS, func() map[string]string { return map[string]string{"X-Timestamp": "1700000000"} }, body, now, true},
		{"missing timestamp", withTS, func() map[string]string {
			return map[string]string{"X-Signature": withTS.Sign(secret, body, now)["X-Signature"]}
		}, body, now, true},
		{"missing prefix", withTS, func() map[string]string {
			h := withTS.Sign(secret, body, now)
			h["X-Signature"] = h["X-Signature"][len("sha256="):]
			return h
		}, body, now, true},
		{"not hex", withTS, func() map[string]string {
			return map[string]string{"X-Signature": "sha256=zz", "X-Timestamp": "1700000000"}
		}, body, now, true},
		{"timestamp not a number", withTS, func() map[string]string {
			h := withTS.Sign(secret, body, now)
			h["X-Timestamp"] = "soon"
			return h
		}, body, now, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.Verify(secret, tc.headers(), tc.body, tc.now)
			if tc.wantErr {
				if !errors.Is(err, ErrBadSignature) {
					t.Fatalf("want ErrBadSignature, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("a correctly signed post was rejected: %v", err)
			}
		})
	}
}
