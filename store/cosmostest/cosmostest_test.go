package cosmostest_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/cosmostest"
)

func TestStart_ServesASignedClient(t *testing.T) {
	em := cosmostest.Start(t)
	b := em.Open(t, []store.ContainerSpec{{Name: "things", PartitionKey: "tenantId"}})
	if err := b.Ping(t.Context()); err != nil {
		t.Fatalf("Ping of a store opened on the emulator at %s: %v", em.Endpoint, err)
	}
	c, err := b.Container("things")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(t.Context(), "t1", "a", []byte(`{"id":"a","tenantId":"t1"}`)); err != nil {
		t.Fatalf("Create on the emulator: %v", err)
	}
}

func TestStart_SecondStartReusesTheBuiltBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two emulators")
	}
	cosmostest.Start(t) // builds if needed
	begin := time.Now()
	cosmostest.Start(t)
	if d := time.Since(begin); d > 10*time.Second {
		t.Errorf("a second Start took %v: the emulator binary is rebuilt instead of reused from the cache", d)
	}
}

// A stopped emulator refuses its clients (a transient ErrUnavailable, as an
// outage of Cosmos DB is) and comes back on the same endpoint with its data,
// where the same client carries on.
func TestEmulator_StopAndRestartKeepTheData(t *testing.T) {
	em := cosmostest.Start(t)
	if !em.Stoppable() {
		t.Skip("a real Cosmos DB account (IM_TEST_COSMOS_ENDPOINT) cannot be stopped by a test")
	}
	b := em.Open(t, []store.ContainerSpec{{Name: "things", PartitionKey: "tenantId"}})
	c, err := b.Container("things")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(t.Context(), "t1", "a", []byte(`{"id":"a","tenantId":"t1","n":1}`)); err != nil {
		t.Fatal(err)
	}

	em.Stop(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	_, err = c.Read(ctx, "t1", "a")
	cancel()
	if err == nil || !store.IsTransient(err) {
		t.Fatalf("Read from a stopped emulator: %v, want a transient error", err)
	}

	em.Restart(t)
	item, err := c.Read(t.Context(), "t1", "a")
	if err != nil {
		t.Fatalf("Read after the restart with the same client: %v", err)
	}
	var doc struct{ N int }
	if err := json.Unmarshal(item.Body, &doc); err != nil || doc.N != 1 {
		t.Errorf("the document came back as %s (%v)", item.Body, err)
	}
	if _, err := c.Create(t.Context(), "t1", "b", []byte(`{"id":"b","tenantId":"t1"}`)); err != nil {
		t.Errorf("Create after the restart: %v", err)
	}
}
