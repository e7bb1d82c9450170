// Package sender publishes domain commands and events on their topics. Its route
// table is the one place that says which message type travels on which topic;
// the API, the workers and the AsyncAPI document all follow it.
package sender

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/messaging"
)

// Route binds a message type (ce-type) to the topic it is published on.
type Route struct {
	CEType string
	Topic  string
}

// Routes lists every command and event with its topic.
func Routes() []Route {
	return []Route{
		{domain.TypePublishEvent, messaging.TopicCmdEventPublish},
		{domain.TypeDeliverWebhook, messaging.TopicCmdWebhookDeliver},
		{domain.TypeRunSync, messaging.TopicCmdSyncRun},
		{domain.TypeResolveConflict, messaging.TopicCmdConflictResolve},
		{domain.TypeIngressReceived, messaging.TopicIngressReceived},
		{domain.TypeWebhookDelivered, messaging.TopicEvtWebhookDelivered},
		{domain.TypeWebhookAttemptFailed, messaging.TopicEvtWebhookAttemptFailed},
		{domain.TypeWebhookExhausted, messaging.TopicEvtWebhookExhausted},
		{domain.TypeWebhookEndpointDisabled, messaging.TopicEvtWebhookEndpointDisabled},
		{domain.TypeSyncStarted, messaging.TopicEvtSyncStarted},
		{domain.TypeSyncCompleted, messaging.TopicEvtSyncCompleted},
		{domain.TypeSyncFailed, messaging.TopicEvtSyncFailed},
		{domain.TypeConflictDetected, messaging.TopicEvtConflictDetected},
		{domain.TypeConflictResolved, messaging.TopicEvtConflictResolved},
		{domain.TypeConflictEscalated, messaging.TopicEvtConflictEscalated},
	}
}

// TopicOf returns the topic of a message type.
func TopicOf(ceType string) (string, bool) {
	for _, r := range Routes() {
		if r.CEType == ceType {
			return r.Topic, true
		}
	}
	return "", false
}

// Sender validates and publishes domain messages. With a confirming publisher
// (RabbitMQ) a nil error means the broker has the message durably.
type Sender struct {
	publisher message.Publisher
	source    string
	topics    map[string]string
}

// New publishes through publisher with ce-source source (e.g. "castiel/integration-manager/api").
func New(publisher message.Publisher, source string) *Sender {
	topics := make(map[string]string)
	for _, r := range Routes() {
		topics[r.CEType] = r.Topic
	}
	return &Sender{publisher: publisher, source: source, topics: topics}
}

// Send publishes msg for tenantID on its topic, carrying the correlation id and
// traceparent of ctx.
func (s *Sender) Send(ctx context.Context, tenantID string, msg domain.Message) error {
	ceType := msg.CEType()
	topic, ok := s.topics[ceType]
	if !ok {
		return fmt.Errorf("send %s: no topic is routed for this message type", ceType)
	}
	if err := msg.Validate(); err != nil {
		return fmt.Errorf("send %s: %w", ceType, err)
	}
	m, err := messaging.NewMessage(ctx, ceType, s.source, tenantID, msg)
	if err != nil {
		return fmt.Errorf("send %s: %w", ceType, err)
	}
	if err := s.publisher.Publish(topic, m); err != nil {
		return fmt.Errorf("send %s to %s: %w", ceType, topic, err)
	}
	return nil
}
