package telemetry

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/castiel/integration-manager/messaging"
)

// AttrTenantID is the span attribute of the tenant a message belongs to.
const AttrTenantID = attribute.Key("tenant.id")

// Middleware is a Watermill router middleware that continues the trace a
// message carries in its metadata: the handler runs in a consumer span
// ("process <topic>") whose parent is the span that published the message,
// and everything the handler publishes or calls from msg.Context() is a child
// of it. system names the broker (messaging.system: "rabbitmq", ...).
//
// Add it last (innermost), so each in-process attempt of a message is a span
// of its own, with the handler's own error.
func (t *Tracing) Middleware(system string) message.HandlerMiddleware {
	if t == nil {
		return func(h message.HandlerFunc) message.HandlerFunc { return h }
	}
	sys := semconv.MessagingSystemKey.String(system)
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ctx := msg.Context()
			parent := t.propagator.Extract(ctx, carrier(msg))
			if !t.recording {
				if parent != ctx {
					msg.SetContext(parent)
				}
				return h(msg)
			}
			topic := message.SubscribeTopicFromCtx(ctx)
			sctx, span := t.tracer.Start(parent, "process "+topic,
				trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(messageAttributes(sys, semconv.MessagingOperationTypeProcess, topic, msg)...))
			defer span.End()
			if sc := span.SpanContext(); sc.IsValid() {
				// What the handler delays (messaging.Transport.Delay) does not pass
				// through the publisher; it takes its traceparent from the context.
				sctx = messaging.WithTraceparent(sctx, traceparent(sc))
			}
			msg.SetContext(sctx)
			produced, err := h(msg)
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			return produced, err
		}
	}
}

// Publisher wraps next so that every message leaves with the trace context
// of its own context (msg.Context(), which messaging.NewMessage sets): its
// traceparent and tracestate are written to the metadata. With tracing on,
// each message gets a producer span ("send <topic>") that the consumer's span
// hangs from; a message published outside any span (a poisoned copy, a
// republished one) continues the trace its metadata already carries.
// system names the broker, as for Middleware.
func (t *Tracing) Publisher(next message.Publisher, system string) message.Publisher {
	if t == nil {
		return next
	}
	return &publisher{next: next, t: t, system: semconv.MessagingSystemKey.String(system)}
}

type publisher struct {
	next   message.Publisher
	t      *Tracing
	system attribute.KeyValue
}

func (p *publisher) Publish(topic string, msgs ...*message.Message) error {
	if !p.t.recording {
		for _, msg := range msgs {
			if ctx := msg.Context(); trace.SpanContextFromContext(ctx).IsValid() {
				p.t.inject(ctx, msg)
			}
		}
		return p.next.Publish(topic, msgs...)
	}
	var one [1]trace.Span
	spans := one[:0]
	if len(msgs) > 1 {
		spans = make([]trace.Span, 0, len(msgs))
	}
	for _, msg := range msgs {
		ctx := msg.Context()
		if !trace.SpanContextFromContext(ctx).IsValid() {
			ctx = p.t.propagator.Extract(ctx, carrier(msg))
		}
		ctx, span := p.t.tracer.Start(ctx, "send "+topic,
			trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(messageAttributes(p.system, semconv.MessagingOperationTypeSend, topic, msg)...))
		p.t.inject(ctx, msg)
		spans = append(spans, span)
	}
	err := p.next.Publish(topic, msgs...)
	for _, span := range spans {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
	return err
}

// Close closes the wrapped publisher (the Transport's is a no-op).
func (p *publisher) Close() error { return p.next.Close() }

// inject writes ctx's trace context over whatever msg carried.
func (t *Tracing) inject(ctx context.Context, msg *message.Message) {
	if msg.Metadata == nil {
		msg.Metadata = make(message.Metadata)
	}
	delete(msg.Metadata, "tracestate") // a stale one must not outlive its traceparent
	t.propagator.Inject(ctx, propagation.MapCarrier(msg.Metadata))
}

// carrier reads and writes the trace context in a message's metadata, which
// RabbitMQ carries as headers of the same names.
func carrier(msg *message.Message) propagation.MapCarrier {
	return propagation.MapCarrier(msg.Metadata)
}

func messageAttributes(system, operation attribute.KeyValue, topic string, msg *message.Message) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		system,
		operation,
		semconv.MessagingDestinationName(topic),
		semconv.MessagingMessageID(msg.UUID),
	}
	if v := msg.Metadata.Get(messaging.MetaTenantID); v != "" {
		attrs = append(attrs, AttrTenantID.String(v))
	}
	if v := msg.Metadata.Get(messaging.MetaCorrelation); v != "" {
		attrs = append(attrs, semconv.MessagingMessageConversationID(v))
	}
	if v := msg.Metadata.Get(messaging.MetaType); v != "" {
		attrs = append(attrs, semconv.CloudEventsEventType(v))
	}
	return attrs
}
