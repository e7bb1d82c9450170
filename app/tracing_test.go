package app_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/castiel/integration-manager/app"
	"github.com/castiel/integration-manager/config"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/telemetry"
)

// An upstream service's trace: trace 4bf92f3577b34da6a3ce929d0e0e4736, its span 00f067aa0ba902b7.
const (
	upstreamTraceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
	upstreamSpanID      = "00f067aa0ba902b7"
	upstreamTraceparent = "00-" + upstreamTraceID + "-" + upstreamSpanID + "-01"
)

// startTraced runs a process whose spans go to exp until the test ends.
func startTraced(t testing.TB, env []string, exp sdktrace.SpanExporter, parts ...app.Part) *started {
	t.Helper()
	return startWith(t, env, telemetry.New(sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))), parts...)
}

// startWith runs a process with the given tracing (nil: none wired) until the test ends.
func startWith(t testing.TB, env []string, tracing *telemetry.Tracing, parts ...app.Part) *started {
	t.Helper()
	cfg, err := config.Load(config.LoadOptions{Service: "test", DefaultProfile: config.ProfileStandalone, Environ: env})
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	trackDelayQueues(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	p, err := app.StartTraced(ctx, cfg, zerolog.New(io.Discard), tracing, parts...)
	if err != nil {
		cancel()
		t.Fatalf("start: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("process stopped with an error: %v", err)
		}
	})
	k, _ := cfg.DevelopmentKey()
	return &started{baseURL: "http://" + p.APIAddr, adminURL: "http://" + p.AdminAddr, key: k.Key.Reveal(), cfg: cfg}
}

// An event posted with an upstream traceparent is one trace from the API to
// the tenant's endpoint: the receiver gets a traceparent of the caller's
// trace, and the spans of every hop (API, fan-out making the first attempt,
// the outbound call, the result event) hang from one another in that trace
// (a retry's hops through the delivery queue: the next test), whether the
// messages cross the in-process broker or RabbitMQ (AMQP headers).
func TestTracing_FollowsAnEventFromTheAPIToTheWebhookReceiver(t *testing.T) {
	t.Parallel()
	for _, broker := range []string{"in-process", "rabbitmq"} {
		t.Run(broker, func(t *testing.T) {
			t.Parallel()
			env := environ(t)
			if broker == "rabbitmq" {
				env = environ(t, onRabbitMQ(t)...)
			}
			exp := tracetest.NewInMemoryExporter()
			s := startTraced(t, env, exp, app.PartAPI, app.PartDispatcher)
			rcv := newHookReceiver(t, always(204))
			subscribe(t, s, rcv.url)

			if code := s.do(t, "POST", "/api/v1/events", `{"type":"contact.updated","data":{"id":42}}`, nil,
				"traceparent", upstreamTraceparent); code != 202 {
				t.Fatalf("POST /api/v1/events: %d", code)
			}
			eventually(t, 10*time.Second, "the delivery", func() bool { return len(rcv.received()) == 1 })
			resultEvent := "send " + messaging.TopicEvtWebhookDelivered
			var spans map[string]tracetest.SpanStub
			eventually(t, 5*time.Second, "the result event's span", func() bool {
				spans = inTrace(exp.GetSpans(), upstreamTraceID)
				_, ok := spans[resultEvent]
				return ok
			})

			// Each hop's span and the span it must hang from, API first.
			hops := []struct{ name, parent string }{
				{"POST", ""},
				{"send " + messaging.TopicCmdEventPublish, "POST"},
				{"process " + messaging.TopicCmdEventPublish, "send " + messaging.TopicCmdEventPublish},
				// The fan-out makes the first attempt itself (inline).
				{"POST (outbound)", "process " + messaging.TopicCmdEventPublish},
				{resultEvent, "process " + messaging.TopicCmdEventPublish},
			}
			for _, h := range hops {
				span, ok := spans[h.name]
				if !ok {
					t.Fatalf("no span %q in the caller's trace; the trace has %v", h.name, names(spans))
				}
				wantParent := upstreamSpanID
				if h.parent != "" {
					wantParent = spans[h.parent].SpanContext.SpanID().String()
				}
				if got := span.Parent.SpanID().String(); got != wantParent {
					t.Errorf("span %q hangs from %s, want %q (%s)", h.name, got, h.parent, wantParent)
				}
			}
			got := rcv.received()[0].header.Get("traceparent")
			want := "00-" + upstreamTraceID + "-" + spans["POST (outbound)"].SpanContext.SpanID().String() + "-01"
			if got != want {
				t.Errorf("the webhook receiver got traceparent %q, want %q (the caller's trace, the delivery call's span)", got, want)
			}
		})
	}
}

// A delivery retried through the delay queues (a 503, then a 204) stays in
// the caller's trace: each attempt's call carries it, from a span of its own.
func TestTracing_RetriedDeliveryStaysInTheTrace(t *testing.T) {
	t.Parallel()
	for _, broker := range []string{"in-process", "rabbitmq"} {
		t.Run(broker, func(t *testing.T) {
			t.Parallel()
			env := environ(t, shortSchedule)
			if broker == "rabbitmq" {
				env = environ(t, append(onRabbitMQ(t), shortSchedule)...)
			}
			exp := tracetest.NewInMemoryExporter()
			s := startTraced(t, env, exp, app.PartAPI, app.PartDispatcher)
			rcv := newHookReceiver(t, func(n int) (int, map[string]string) {
				if n == 1 {
					return 503, nil
				}
				return 204, nil
			})
			subscribe(t, s, rcv.url)
			if code := s.do(t, "POST", "/api/v1/events", `{"type":"contact.updated","data":{"id":42}}`, nil,
				"traceparent", upstreamTraceparent); code != 202 {
				t.Fatalf("POST /api/v1/events: %d", code)
			}
			eventually(t, 15*time.Second, "the retried delivery", func() bool { return len(rcv.received()) == 2 })
			first, second := rcv.received()[0].header.Get("traceparent"), rcv.received()[1].header.Get("traceparent")
			for i, tp := range []string{first, second} {
				if !strings.HasPrefix(tp, "00-"+upstreamTraceID+"-") {
					t.Errorf("attempt %d reached the receiver with traceparent %q, not in the caller's trace %s", i+1, tp, upstreamTraceID)
				}
			}
			if first == second {
				t.Errorf("both attempts carry the same span (%s): the retry is not a span of its own", first)
			}
		})
	}
}

// BenchmarkTracing_EndToEnd delivers events from the API to a receiver in one
// standalone process: "before" has no tracing wired at all, "off" is the
// default, "on" makes every span (exported to nowhere). Read deliveries/s of
// "off" against "before" in the same run.
func BenchmarkTracing_EndToEnd(b *testing.B) {
	for _, mode := range []struct {
		name    string
		tracing func() *telemetry.Tracing
	}{
		{"before", func() *telemetry.Tracing { return nil }}, // nothing wired: the process as it was
		{"off", telemetry.Off},
		{"on", func() *telemetry.Tracing {
			return telemetry.New(sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter())))
		}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			s := startWith(b, environ(b), mode.tracing(), app.PartAPI, app.PartDispatcher)
			rcv := newReceiver(b, 0)
			if code := s.do(b, "POST", "/api/v1/webhooks", `{"url":"`+rcv.url()+`","eventTypes":["contact.*"]}`, nil); code != 201 {
				b.Fatalf("create webhook: %d", code)
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			var failed atomic.Int64
			b.SetParallelism(benchParallelism)
			b.ResetTimer()
			begin := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest("POST", s.baseURL+"/api/v1/events", strings.NewReader(eventBody))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Authorization", "Bearer "+s.key)
					resp, err := client.Do(req)
					if err != nil || resp.StatusCode != http.StatusAccepted {
						failed.Add(1)
					}
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}
			})
			deadline := time.Now().Add(time.Minute)
			for rcv.count.Load() < int64(b.N)-failed.Load() && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			b.ReportMetric(float64(rcv.count.Load())/time.Since(begin).Seconds(), "deliveries/s")
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d of %d events were not accepted", n, b.N)
			}
		})
	}
}

// inTrace indexes the spans of one trace by name; the outbound HTTP call's
// client span is "POST (outbound)" so it does not clash with the API's.
func inTrace(all tracetest.SpanStubs, traceID string) map[string]tracetest.SpanStub {
	out := map[string]tracetest.SpanStub{}
	for _, s := range all {
		if s.SpanContext.TraceID().String() != traceID {
			continue
		}
		name := s.Name
		if s.SpanKind == trace.SpanKindClient {
			name += " (outbound)"
		}
		out[name] = s
	}
	return out
}

func names(spans map[string]tracetest.SpanStub) []string {
	var out []string
	for n := range spans {
		out = append(out, n)
	}
	return out
}
