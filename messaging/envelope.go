package messaging

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
)

// Metadata keys of the envelope: CloudEvents attributes in binary mode (ce-*), plus
// our own. On RabbitMQ each is an AMQP header.
const (
	MetaID          = "ce-id"
	MetaType        = "ce-type"
	MetaSource      = "ce-source"
	MetaTime        = "ce-time"
	MetaSpecVersion = "ce-specversion"
	MetaTenantID    = "tenantid"
	MetaCorrelation = "correlationid"
	MetaTraceparent = "traceparent"

	// SpecVersion is the CloudEvents version we follow.
	SpecVersion = "1.0"
)

// ErrInvalidMessage is wrapped by NewMessage's argument errors.
var ErrInvalidMessage = errors.New("invalid message")

type ctxKey int

const (
	correlationKey ctxKey = iota
	traceparentKey
)

// WithCorrelationID returns ctx carrying a correlation id for every message built from it.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, correlationKey, id)
}

// CorrelationID returns the correlation id carried by ctx, or "".
func CorrelationID(ctx context.Context) string {
	id, _ := ctx.Value(correlationKey).(string)
	return id
}

// WithTraceparent returns ctx carrying a W3C traceparent for every message built from it.
func WithTraceparent(ctx context.Context, traceparent string) context.Context {
	return context.WithValue(ctx, traceparentKey, traceparent)
}

// Traceparent returns the W3C traceparent carried by ctx, or "".
func Traceparent(ctx context.Context) string {
	tp, _ := ctx.Value(traceparentKey).(string)
	return tp
}

// NewMessage builds a message with a JSON payload and the full envelope. The message
// UUID is the ce-id; the correlation id and traceparent come from ctx (inside a handler
// that is the incoming message's), a new correlation id is made when ctx has none.
// tenantID may be empty for messages that belong to no tenant.
func NewMessage(ctx context.Context, ceType, source, tenantID string, payload any) (*message.Message, error) {
	if ceType == "" || source == "" {
		return nil, fmt.Errorf("%w: ce-type and ce-source are required", ErrInvalidMessage)
	}
	data, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: encode %s payload: %v", ErrInvalidMessage, ceType, err)
	}
	id := uuid.NewString()
	msg := message.NewMessage(id, data)
	msg.Metadata.Set(MetaID, id)
	msg.Metadata.Set(MetaType, ceType)
	msg.Metadata.Set(MetaSource, source)
	msg.Metadata.Set(MetaTime, time.Now().UTC().Format(time.RFC3339Nano))
	msg.Metadata.Set(MetaSpecVersion, SpecVersion)
	if tenantID != "" {
		msg.Metadata.Set(MetaTenantID, tenantID)
	}
	propagate(ctx, msg)
	msg.SetContext(ctx)
	return msg, nil
}

// propagate fills the correlation id and traceparent a message does not have yet from
// ctx, and makes a new correlation id when ctx has none either.
func propagate(ctx context.Context, msg *message.Message) {
	if msg.Metadata.Get(MetaCorrelation) == "" {
		id := CorrelationID(ctx)
		if id == "" {
			id = uuid.NewString()
		}
		msg.Metadata.Set(MetaCorrelation, id)
	}
	if msg.Metadata.Get(MetaTraceparent) == "" {
		if tp := Traceparent(ctx); tp != "" {
			msg.Metadata.Set(MetaTraceparent, tp)
		}
	}
	if msg.Metadata.Get(MetaID) == "" {
		msg.Metadata.Set(MetaID, msg.UUID)
	}
}

// contextFromMessage returns ctx carrying the message's correlation id and traceparent,
// so that everything a handler publishes from it stays correlated. A message without a
// correlation id is correlated by its own id, which stays the same on redelivery.
func contextFromMessage(ctx context.Context, msg *message.Message) context.Context {
	id := msg.Metadata.Get(MetaCorrelation)
	if id == "" {
		id = msg.UUID
	}
	ctx = WithCorrelationID(ctx, id)
	if tp := msg.Metadata.Get(MetaTraceparent); tp != "" {
		ctx = WithTraceparent(ctx, tp)
	}
	return ctx
}

// propagatingPublisher stamps every outgoing message with the correlation id and
// traceparent of its context (msg.Context(), set by NewMessage or SetContext) when the
// message does not carry them already, and counts publishes once the Transport's
// metrics are registered. Close is a no-op: the Transport owns the underlying
// publisher, which handlers and routers must not close.
type propagatingPublisher struct {
	next    message.Publisher
	metrics *atomic.Pointer[publishMetrics]
}

func (p propagatingPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, msg := range msgs {
		propagate(msg.Context(), msg)
	}
	err := p.next.Publish(topic, msgs...)
	if p.metrics != nil && len(msgs) > 0 {
		p.metrics.Load().publishedTo(topic, len(msgs), err)
	}
	return err
}

func (propagatingPublisher) Close() error { return nil }
