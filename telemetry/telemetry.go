// Package telemetry sets up tracing with OpenTelemetry and carries a trace
// across every hop of the product: HTTP requests into the API, messages
// between the workers (W3C traceparent and tracestate in the message
// metadata, which RabbitMQ carries as headers), and HTTP calls out to tenant
// endpoints, external APIs and platform services.
//
// Tracing is off by default (FromEnv exports nothing unless the OTEL_*
// environment asks for it). Off, no span is made, but a traceparent that
// arrives on a request or a message is still passed on to the messages and
// calls it causes, so an upstream service's trace is not cut.
package telemetry

import (
	"context"
	"encoding/hex"
	"net/http"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// instrumentationName names the tracer of every span this package makes.
const instrumentationName = "github.com/castiel/integration-manager/telemetry"

// Tracing is a process's tracing: where spans go and how trace context
// travels. A nil *Tracing propagates nothing and makes no span; its wrappers
// return what they wrap.
type Tracing struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	// recording: a real tracer provider is configured, so spans are started.
	// Otherwise the wrappers only carry the context they find.
	recording bool
	shutdown  func(context.Context) error
	// headers are the propagator's fields as canonical HTTP header names, so
	// Handler can see that a request carries none without allocating.
	headers []string
}

// New traces with tp (typically an sdk/trace TracerProvider) and W3C trace
// context propagation. Shutdown calls tp's Shutdown when it has one.
func New(tp trace.TracerProvider) *Tracing {
	t := &Tracing{tracer: tp.Tracer(instrumentationName), recording: true}
	t.setPropagator(propagation.TraceContext{})
	if s, ok := tp.(interface{ Shutdown(context.Context) error }); ok {
		t.shutdown = s.Shutdown
	}
	return t
}

// Off makes no span and exports nothing, but still passes on the trace
// context that requests and messages carry in (W3C trace context).
func Off() *Tracing {
	return off(propagation.TraceContext{})
}

func off(p propagation.TextMapPropagator) *Tracing {
	t := &Tracing{tracer: noop.NewTracerProvider().Tracer(instrumentationName)}
	t.setPropagator(p)
	return t
}

func (t *Tracing) setPropagator(p propagation.TextMapPropagator) {
	t.propagator = p
	t.headers = t.headers[:0]
	for _, f := range p.Fields() {
		t.headers = append(t.headers, http.CanonicalHeaderKey(f))
	}
}

// Enabled reports whether spans are made and exported.
func (t *Tracing) Enabled() bool { return t != nil && t.recording }

// Shutdown flushes the spans not exported yet and stops the exporters; call
// it last, once nothing makes spans any more.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil || t.shutdown == nil {
		return nil
	}
	return t.shutdown(ctx)
}

// traceparent renders sc as a W3C traceparent header value.
func traceparent(sc trace.SpanContext) string {
	var b [55]byte // "00-" + 32 + "-" + 16 + "-" + 2
	tid, sid := sc.TraceID(), sc.SpanID()
	b[0], b[1], b[2] = '0', '0', '-'
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{byte(sc.TraceFlags())})
	return string(b[:])
}
