// Package poison keeps the messages no handler could process, so operators can
// see why and re-publish them once the cause is fixed. Workers move such messages
// to the poison topic (messaging's router policy); Recorder stores each one, and
// Queue lists and re-publishes them.
package poison

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/store"
)

// Record is one poisoned message as stored in the integration_poison container,
// partitioned by the topic it failed on.
type Record struct {
	ID            string            `json:"id"` // the message id (ce-id): a redelivered poison message is stored once
	Topic         string            `json:"topic"`
	Handler       string            `json:"handler,omitempty"`
	Reason        string            `json:"reason"`
	TenantID      string            `json:"tenantId,omitempty"`
	CEType        string            `json:"ceType,omitempty"`
	Metadata      map[string]string `json:"metadata"`
	Payload       []byte            `json:"payload"` // as received: it may not even be JSON
	PoisonedAt    time.Time         `json:"poisonedAt"`
	RepublishedAt *time.Time        `json:"republishedAt,omitempty"`
}

// Key places the record in its topic's partition.
func (r Record) Key() (string, string) { return r.Topic, r.ID }

// Recorder stores poison messages; register Handle as the poison topic's consumer.
type Recorder struct {
	records *store.Repository[Record]
	now     func() time.Time
}

// NewRecorder stores records in c (the integration_poison container).
func NewRecorder(c store.Container, now func() time.Time) *Recorder {
	return &Recorder{records: store.NewRepository[Record](c), now: now}
}

// Handle stores msg once, however often it is delivered.
func (r *Recorder) Handle(msg *message.Message) error {
	rec := Record{
		ID:         msg.UUID,
		Topic:      msg.Metadata.Get(messaging.MetaPoisonTopic),
		Handler:    msg.Metadata.Get(messaging.MetaPoisonHandler),
		Reason:     msg.Metadata.Get(messaging.MetaPoisonReason),
		TenantID:   msg.Metadata.Get(messaging.MetaTenantID),
		CEType:     msg.Metadata.Get(messaging.MetaType),
		Metadata:   map[string]string(msg.Metadata),
		Payload:    msg.Payload,
		PoisonedAt: r.now().UTC(),
	}
	if rec.Topic == "" {
		rec.Topic = "unknown"
	}
	if _, err := r.records.Create(msg.Context(), rec); err != nil && !errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("record poison message %s: %w", msg.UUID, err)
	}
	return nil
}

// Queue is the operators' view of the poison records.
type Queue struct {
	records   *store.Repository[Record]
	publisher message.Publisher
	now       func() time.Time
}

// NewQueue lists records of c and re-publishes through publisher.
func NewQueue(c store.Container, publisher message.Publisher, now func() time.Time) *Queue {
	return &Queue{records: store.NewRepository[Record](c), publisher: publisher, now: now}
}

// List returns one page of records across topics, in id order.
func (q *Queue) List(ctx context.Context, cursor string, limit int) ([]Record, string, error) {
	return q.records.List(ctx, store.Query{Continuation: cursor, Limit: limit})
}

// Republish sends the original message back to its topic (same id, payload and
// metadata, without the poison annotations) and marks the record republished.
// It returns store.ErrNotFound for an unknown id.
func (q *Queue) Republish(ctx context.Context, id string) (Record, error) {
	recs, _, err := q.records.List(ctx, store.Query{Filters: []store.Filter{{Field: "id", Value: id}}, Limit: 1})
	if err != nil {
		return Record{}, err
	}
	if len(recs) == 0 {
		return Record{}, fmt.Errorf("poison message %s: %w", id, store.ErrNotFound)
	}
	rec := recs[0]
	msg := message.NewMessage(rec.ID, rec.Payload)
	for k, v := range rec.Metadata {
		switch k {
		case messaging.MetaPoisonReason, messaging.MetaPoisonTopic, messaging.MetaPoisonHandler, messaging.MetaPoisonStack:
		default:
			msg.Metadata.Set(k, v)
		}
	}
	if err := q.publisher.Publish(rec.Topic, msg); err != nil {
		return Record{}, fmt.Errorf("republish %s to %s: %w", id, rec.Topic, err)
	}
	updated, _, err := q.records.Update(ctx, rec.Topic, rec.ID, func(r *Record) error {
		at := q.now().UTC()
		r.RepublishedAt = &at
		return nil
	})
	if err != nil {
		return Record{}, fmt.Errorf("mark %s republished: %w", id, err)
	}
	return updated, nil
}
