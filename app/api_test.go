package app_test

import (
	"context"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/app"
	"github.com/castiel/integration-manager/config"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/messaging"
)

// A 202 from POST /api/v1/events means the command is on RabbitMQ: a
// dispatcher replica started afterwards receives it with the caller's
// correlation id and tenant.
func TestAPI_AcceptedEventIsOnTheBrokerForTheDispatcher(t *testing.T) {
	env := onRabbitMQ(t)
	s := start(t, environ(t, env...), app.PartAPI)

	var accepted struct{ ID string }
	if code := s.do(t, "POST", "/api/v1/events", `{"type":"contact.updated","data":{"id":42}}`, &accepted,
		"X-Correlation-ID", "corr-api-test"); code != 202 {
		t.Fatalf("POST /api/v1/events answered %d, want 202", code)
	}

	msg := receive(t, s.cfg, app.RoleWebhookDispatcher, messaging.TopicCmdEventPublish)
	if got := msg.Metadata.Get(messaging.MetaType); got != domain.TypePublishEvent {
		t.Errorf("ce-type %q, want %q", got, domain.TypePublishEvent)
	}
	if got := msg.Metadata.Get(messaging.MetaCorrelation); got != "corr-api-test" {
		t.Errorf("correlation id %q, want the request's corr-api-test", got)
	}
	var cmd domain.PublishEvent
	if err := json.Unmarshal(msg.Payload, &cmd); err != nil {
		t.Fatal(err)
	}
	if cmd.EventID != accepted.ID || cmd.TenantID != "dev-tenant" || cmd.Type != "contact.updated" {
		t.Errorf("command %+v does not match the accepted event %s of dev-tenant", cmd, accepted.ID)
	}
}

// Operators see a poisoned message with its reason through the API and can
// re-publish it to the topic it failed on.
func TestAPI_PoisonMessagesAreListedAndRepublished(t *testing.T) {
	env := onRabbitMQ(t)
	s := start(t, environ(t, env...), app.PartAPI)

	// What a worker's router does with a message it can never process.
	tr, err := app.OpenTransport(context.Background(), s.cfg, nil, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	bad := message.NewMessage("msg-poison-1", []byte(`{not json`))
	bad.Metadata.Set(messaging.MetaType, domain.TypeRunSync)
	bad.Metadata.Set(messaging.MetaTenantID, "dev-tenant")
	bad.Metadata.Set(messaging.MetaPoisonReason, "undecodable payload")
	bad.Metadata.Set(messaging.MetaPoisonTopic, messaging.TopicCmdSyncRun)
	if err := tr.Publisher().Publish(messaging.TopicPoison, bad); err != nil {
		t.Fatal(err)
	}

	var page struct {
		Items []struct {
			ID, Topic, Reason string
			Payload           json.RawMessage
		}
	}
	eventually(t, 10*time.Second, "the poison message listed by GET /api/v1/poison", func() bool {
		s.do(t, "GET", "/api/v1/poison", "", &page)
		return len(page.Items) == 1
	})
	got := page.Items[0]
	if got.ID != "msg-poison-1" || got.Topic != messaging.TopicCmdSyncRun || got.Reason != "undecodable payload" {
		t.Errorf("listed %+v, want id msg-poison-1 on %s with its reason", got, messaging.TopicCmdSyncRun)
	}
	if code := s.do(t, "POST", "/api/v1/poison/msg-poison-1/republish", "", nil); code/100 != 2 {
		t.Fatalf("republish answered %d", code)
	}
	msg := receive(t, s.cfg, app.RoleSyncWorker, messaging.TopicCmdSyncRun)
	if string(msg.Payload) != `{not json` || msg.Metadata.Get(messaging.MetaPoisonReason) != "" {
		t.Errorf("republished message: payload %q, poison reason %q; want the original payload without the annotation",
			msg.Payload, msg.Metadata.Get(messaging.MetaPoisonReason))
	}
}

// receive takes one message from the role's queue of topic, as a worker would.
func receive(t *testing.T, cfg *config.Config, role, topic string) *message.Message {
	t.Helper()
	tr, err := app.OpenTransport(context.Background(), cfg, nil, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	ch, err := tr.Subscriber(role).Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case msg := <-ch:
		msg.Ack()
		return msg
	case <-ctx.Done():
		t.Fatalf("nothing arrived on %s for %s", topic, role)
		return nil
	}
}
