package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/telemetry"
)

// BenchmarkHop is the per-message work tracing adds on a worker's hot path:
// a delivery arrives (router middleware), the handler calls the endpoint
// (outbound transport) and publishes its result event (publisher), and the
// API accepts a request (server handler). "before" is the same path without
// any wrapper (a nil *Tracing), "off" the default, "off+traceparent" off
// with an upstream trace to pass on, "on" spans to a discarding exporter.
// Compare each with "before" in the same run.
func BenchmarkHop(b *testing.B) {
	cases := []struct {
		name        string
		tracing     *telemetry.Tracing
		traceparent string
	}{
		{"before", nil, ""},
		{"off", telemetry.Off(), ""},
		{"off+traceparent", telemetry.Off(), upstream},
		{"on", telemetry.New(sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))), upstream},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			pub := c.tracing.Publisher(publisherFunc(func(string, ...*message.Message) error { return nil }), "rabbitmq")
			client := &http.Client{Transport: c.tracing.Transport(roundTripFunc(func(*http.Request) (*http.Response, error) {
				return &http.Response{StatusCode: http.StatusNoContent, Body: http.NoBody}, nil
			}))}
			handle := c.tracing.Middleware("rabbitmq")(func(msg *message.Message) ([]*message.Message, error) {
				req, _ := http.NewRequestWithContext(msg.Context(), http.MethodPost, "http://hooks.example/hook", strings.NewReader("{}"))
				resp, err := client.Do(req)
				if err != nil {
					return nil, err
				}
				resp.Body.Close()
				out, err := messaging.NewMessage(msg.Context(), "com.castiel.test.delivered.v1", "bench", "tenant-1", struct{}{})
				if err != nil {
					return nil, err
				}
				return nil, pub.Publish("integration.evt.webhook.delivered", out)
			})
			api := c.tracing.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) }))
			req := httptest.NewRequest(http.MethodPost, "/api/v1/events", nil)
			if c.traceparent != "" {
				req.Header.Set("traceparent", c.traceparent)
			}
			w := discardWriter{header: http.Header{}}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				msg := message.NewMessage("m-1", []byte(`{}`))
				msg.Metadata.Set(messaging.MetaTenantID, "tenant-1")
				if c.traceparent != "" {
					msg.Metadata.Set("traceparent", c.traceparent)
				}
				msg.SetContext(context.Background())
				if _, err := handle(msg); err != nil {
					b.Fatal(err)
				}
				api.ServeHTTP(w, req)
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type discardWriter struct{ header http.Header }

func (w discardWriter) Header() http.Header         { return w.header }
func (w discardWriter) Write(b []byte) (int, error) { return io.Discard.Write(b) }
func (w discardWriter) WriteHeader(int)             {}
