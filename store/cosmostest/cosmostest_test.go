package cosmostest_test

import (
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
