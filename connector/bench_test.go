package connector_test

import (
	"context"
	"testing"

	"github.com/castiel/integration-manager/connector"
	"github.com/castiel/integration-manager/connector/fakeapi"
	"github.com/castiel/integration-manager/domain"
)

// Both benchmarks read the same 100,000 records in pages of 500 from the
// same kind of fake server (cursor pagination, API key header), so their
// records/s compare the connector with a plain paging loop.
const (
	benchRecords  = 100_000
	benchPageSize = 500
)

func benchServer(b *testing.B) *fakeapi.Server {
	b.Helper()
	srv := fakeapi.New(b, fakeapi.Options{Mode: fakeapi.Mode{
		Pagination: domain.PaginationCursor, Auth: fakeapi.AuthAPIKeyHeader, PageSize: benchPageSize,
	}})
	srv.SeedN("contacts", benchRecords)
	return srv
}

func BenchmarkListPages(b *testing.B) {
	srv := benchServer(b)
	store := newMemSecrets()
	store.put(b, connector.Credential{APIKey: fakeapi.APIKey})
	creds, err := connector.NewSecretCredentials(store, tenant, credRef, srv.Provider().Auth, connector.SecretCredentialsOptions{})
	if err != nil {
		b.Fatal(err)
	}
	c, err := connector.New(srv.Provider(), creds, connector.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		n := 0
		req := connector.PageRequest{}
		for {
			pg, err := c.ListPage(ctx, "contacts", req)
			if err != nil {
				b.Fatal(err)
			}
			n += len(pg.Records)
			if pg.NextPageToken == "" {
				break
			}
			req.PageToken = pg.NextPageToken
		}
		if n != benchRecords {
			b.Fatalf("read %d records, want %d", n, benchRecords)
		}
	}
	b.ReportMetric(float64(benchRecords*b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkRawPagedRead is the baseline: plain net/http and encoding/json
// paging the same API by hand.
func BenchmarkRawPagedRead(b *testing.B) {
	srv := benchServer(b)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		n, err := srv.RawPagedRead(500)
		if err != nil {
			b.Fatal(err)
		}
		if n != benchRecords {
			b.Fatalf("read %d records, want %d", n, benchRecords)
		}
	}
	b.ReportMetric(float64(benchRecords*b.N)/b.Elapsed().Seconds(), "records/s")
}
