package app_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/app"
	"github.com/castiel/integration-manager/config"
)

// A fleet process started before Cosmos DB answers waits for it instead of
// exiting (a crash loop would need someone to notice).
func TestOpenStore_WaitsForAnUnreachableCosmos(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now

	cfg, err := config.Load(config.LoadOptions{Service: "test", DefaultProfile: config.ProfileStandalone, Environ: []string{
		"IM_STORE_KIND=cosmos",
		"IM_STORE_COSMOS_ENDPOINT=https://" + addr + "/",
		"IM_STORE_COSMOS_KEY=C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==",
		"IM_STORE_COSMOS_MAXRETRIES=0",
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	begin := time.Now()
	b, err := app.OpenStore(ctx, cfg.Store, zerolog.New(io.Discard))
	if err == nil {
		b.Close()
		t.Fatal("opened a store on an endpoint nobody listens on")
	}
	if waited := time.Since(begin); waited < 1500*time.Millisecond {
		t.Fatalf("gave up after %v (%v); want it to keep trying until the context ends", waited, err)
	}
}
