package poison_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/castiel/integration-manager/handlers/poison"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/embedded"
)

// A poison message the broker delivers twice (at-least-once) is listed once.
func TestRecorder_RedeliveredPoisonMessageIsStoredOnce(t *testing.T) {
	b, err := embedded.Open(filepath.Join(t.TempDir(), "db"), store.Containers(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	c, err := b.Container(store.PoisonContainer)
	if err != nil {
		t.Fatal(err)
	}
	rec := poison.NewRecorder(c, time.Now)
	for range 2 {
		msg := message.NewMessage("msg-1", []byte(`{"broken"`))
		msg.Metadata.Set(messaging.MetaPoisonTopic, messaging.TopicCmdSyncRun)
		msg.Metadata.Set(messaging.MetaPoisonReason, "undecodable")
		msg.Metadata.Set(messaging.MetaTenantID, "t-1")
		if err := rec.Handle(msg); err != nil {
			t.Fatalf("Handle: %v", err)
		}
	}
	recs, _, err := poison.NewQueue(c, nil, time.Now).List(t.Context(), "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("%d records after two deliveries of one message, want 1", len(recs))
	}
	if r := recs[0]; r.Topic != messaging.TopicCmdSyncRun || r.Reason != "undecodable" || r.TenantID != "t-1" || string(r.Payload) != `{"broken"` {
		t.Errorf("record %+v does not keep the topic, reason, tenant and original payload", r)
	}
}
