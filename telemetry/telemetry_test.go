package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rs/zerolog"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/telemetry"
)

// upstream is a traceparent an upstream service sends: sampled, trace
// 4bf92f3577b34da6a3ce929d0e0e4736, parent span 00f067aa0ba902b7.
const (
	upstreamTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	upstreamSpanID  = "00f067aa0ba902b7"
	upstream        = "00-" + upstreamTraceID + "-" + upstreamSpanID + "-01"
)

// recorded returns tracing on an in-memory exporter and the exporter.
func recorded(t *testing.T) (*telemetry.Tracing, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tr := telemetry.New(sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)))
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	return tr, exp
}

func spanNamed(t *testing.T, spans tracetest.SpanStubs, name string) tracetest.SpanStub {
	t.Helper()
	for _, s := range spans {
		if s.Name == name {
			return s
		}
	}
	var names []string
	for _, s := range spans {
		names = append(names, s.Name)
	}
	t.Fatalf("no span %q among %v", name, names)
	return tracetest.SpanStub{}
}

func attr(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}

// remote is ctx continuing the upstream trace, as after a request that carried it.
func remote(t *testing.T) context.Context {
	t.Helper()
	tid, _ := trace.TraceIDFromHex(upstreamTraceID)
	sid, _ := trace.SpanIDFromHex(upstreamSpanID)
	return trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true,
	}))
}

// Two hops through the real router and in-process transport: a command
// published in a span, its handler publishing an event. Every span is in the
// caller's trace, each consumer span hangs from the producer span of the
// message it handles, and the spans say which topic, message and tenant.
func TestTracing_MessagesCarryTheTraceAcrossHops(t *testing.T) {
	tr, exp := recorded(t)
	log := zerolog.New(io.Discard)
	transport := messaging.NewInProcess(log)
	t.Cleanup(func() { _ = transport.Close() })
	pub := tr.Publisher(transport.Publisher(), "gochannel")
	router, err := messaging.NewRouter(log, messaging.Policy{}, pub)
	if err != nil {
		t.Fatal(err)
	}
	router.AddMiddleware(tr.Middleware("gochannel"))

	const cmdTopic, evtTopic = "trace.test.cmd", "trace.test.evt"
	done := make(chan string, 1)
	if err := messaging.AddConsumer(router, transport, "worker", cmdTopic, 1, func(msg *message.Message) error {
		out, err := messaging.NewMessage(msg.Context(), "com.castiel.test.done.v1", "test", "tenant-7", map[string]int{"n": 1})
		if err != nil {
			return err
		}
		return pub.Publish(evtTopic, out)
	}); err != nil {
		t.Fatal(err)
	}
	if err := messaging.AddConsumer(router, transport, "listener", evtTopic, 1, func(msg *message.Message) error {
		done <- msg.Metadata.Get("traceparent")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = router.Run(ctx) }()
	<-router.Running()
	t.Cleanup(func() { _ = router.Close() })

	msg, err := messaging.NewMessage(remote(t), "com.castiel.test.cmd.v1", "test", "tenant-7", map[string]int{"n": 0})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(cmdTopic, msg); err != nil {
		t.Fatal(err)
	}
	var eventTraceparent string
	select {
	case eventTraceparent = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the event never reached its consumer")
	}

	var spans tracetest.SpanStubs
	deadline := time.Now().Add(5 * time.Second)
	for len(spans) < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		spans = exp.GetSpans()
	}
	sendCmd := spanNamed(t, spans, "send "+cmdTopic)
	processCmd := spanNamed(t, spans, "process "+cmdTopic)
	sendEvt := spanNamed(t, spans, "send "+evtTopic)
	processEvt := spanNamed(t, spans, "process "+evtTopic)
	for _, s := range []tracetest.SpanStub{sendCmd, processCmd, sendEvt, processEvt} {
		if got := s.SpanContext.TraceID().String(); got != upstreamTraceID {
			t.Errorf("span %q is in trace %s, not the caller's %s", s.Name, got, upstreamTraceID)
		}
	}
	chain := []struct{ child, parent tracetest.SpanStub }{
		{processCmd, sendCmd}, {sendEvt, processCmd}, {processEvt, sendEvt},
	}
	for _, c := range chain {
		if c.child.Parent.SpanID() != c.parent.SpanContext.SpanID() {
			t.Errorf("span %q has parent %s, want %q (%s)", c.child.Name, c.child.Parent.SpanID(), c.parent.Name, c.parent.SpanContext.SpanID())
		}
	}
	if sendCmd.Parent.SpanID().String() != upstreamSpanID {
		t.Errorf("the first producer span's parent is %s, want the caller's span %s", sendCmd.Parent.SpanID(), upstreamSpanID)
	}
	if processCmd.SpanKind != trace.SpanKindConsumer || sendCmd.SpanKind != trace.SpanKindProducer {
		t.Errorf("span kinds: send %v, process %v", sendCmd.SpanKind, processCmd.SpanKind)
	}
	if got := attr(processCmd, "messaging.destination.name"); got != cmdTopic {
		t.Errorf("consumer span topic %q, want %q", got, cmdTopic)
	}
	if got := attr(processCmd, "messaging.message.id"); got != msg.UUID {
		t.Errorf("consumer span message id %q, want %q", got, msg.UUID)
	}
	if got := attr(processCmd, "tenant.id"); got != "tenant-7" {
		t.Errorf("consumer span tenant %q, want tenant-7", got)
	}
	if want := "00-" + upstreamTraceID + "-" + sendEvt.SpanContext.SpanID().String() + "-01"; eventTraceparent != want {
		t.Errorf("the event carries traceparent %q, want %q (its producer span)", eventTraceparent, want)
	}
}

// A handler's error is the consumer span's status, so a failing hop shows in
// the trace.
func TestTracing_HandlerErrorMarksTheConsumerSpan(t *testing.T) {
	tr, exp := recorded(t)
	h := tr.Middleware("gochannel")(func(msg *message.Message) ([]*message.Message, error) {
		return nil, messaging.Permanent(io.ErrUnexpectedEOF)
	})
	msg := message.NewMessage("m-1", []byte("{}"))
	msg.Metadata.Set("traceparent", upstream)
	if _, err := h(msg); err == nil {
		t.Fatal("the middleware swallowed the handler's error")
	}
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Status.Code.String() != "Error" || !strings.Contains(spans[0].Status.Description, "unexpected EOF") {
		t.Fatalf("want one consumer span with the error status, got %+v", spans)
	}
	if got := spans[0].SpanContext.TraceID().String(); got != upstreamTraceID {
		t.Errorf("the consumer span is in trace %s, not the message's %s", got, upstreamTraceID)
	}
}

// The API's server span continues the caller's traceparent, and the
// handler's context carries it for the messages it builds; probes make no
// span.
func TestTracing_HandlerContinuesTheCallersTrace(t *testing.T) {
	tr, exp := recorded(t)
	var inHandler string
	srv := httptest.NewServer(tr.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			inHandler = messaging.Traceparent(r.Context())
		}
		w.WriteHeader(http.StatusAccepted)
	}), "/healthz"))
	t.Cleanup(srv.Close)

	for _, path := range []string{"/api/v1/events", "/healthz"} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path+"?token=secret", nil)
		req.Header.Set("traceparent", upstream)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("want one server span (none for /healthz), got %d", len(spans))
	}
	s := spans[0]
	if s.Name != "POST" || s.SpanKind != trace.SpanKindServer {
		t.Errorf("span %q kind %v, want a server span POST", s.Name, s.SpanKind)
	}
	if s.SpanContext.TraceID().String() != upstreamTraceID || s.Parent.SpanID().String() != upstreamSpanID {
		t.Errorf("server span %s/%s does not continue the caller's %s/%s", s.SpanContext.TraceID(), s.Parent.SpanID(), upstreamTraceID, upstreamSpanID)
	}
	if got := attr(s, "http.response.status_code"); got != "202" {
		t.Errorf("status attribute %q, want 202", got)
	}
	for _, a := range s.Attributes {
		if strings.Contains(a.Value.Emit(), "secret") {
			t.Errorf("attribute %s records the query string: %s", a.Key, a.Value.Emit())
		}
	}
	if want := "00-" + upstreamTraceID + "-" + s.SpanContext.SpanID().String() + "-01"; inHandler != want {
		t.Errorf("messages built in the handler would carry %q, want the server span's %q", inHandler, want)
	}
}

// An outbound call made inside a trace carries the traceparent of its client
// span, which records where it went but never the path or query; a call
// outside any trace is sent untouched.
func TestTracing_TransportSendsTheTraceToTheServer(t *testing.T) {
	tr, exp := recorded(t)
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("traceparent"))
		mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	client := &http.Client{Transport: tr.Transport(nil)}

	req, _ := http.NewRequestWithContext(remote(t), http.MethodPost, srv.URL+"/hooks/T000/B000/XXXXsecret", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if req.Header.Get("traceparent") != "" {
		t.Error("the transport changed the caller's request")
	}
	bare, _ := http.NewRequest(http.MethodGet, srv.URL+"/jwks", nil)
	if resp, err = client.Do(bare); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("want one client span (none for the call outside a trace), got %d", len(spans))
	}
	s := spans[0]
	if s.SpanKind != trace.SpanKindClient || s.SpanContext.TraceID().String() != upstreamTraceID || s.Parent.SpanID().String() != upstreamSpanID {
		t.Errorf("client span %q kind %v trace %s parent %s: not a child of the caller's span", s.Name, s.SpanKind, s.SpanContext.TraceID(), s.Parent.SpanID())
	}
	if s.Status.Code.String() != "Error" || attr(s, "http.response.status_code") != "503" {
		t.Errorf("a 503 answer: status %v, code attribute %q", s.Status.Code, attr(s, "http.response.status_code"))
	}
	for _, a := range s.Attributes {
		if strings.Contains(a.Value.Emit(), "secret") || strings.Contains(a.Value.Emit(), "/hooks") {
			t.Errorf("attribute %s records the URL path: %s", a.Key, a.Value.Emit())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := "00-" + upstreamTraceID + "-" + s.SpanContext.SpanID().String() + "-01"; len(got) != 2 || got[0] != want || got[1] != "" {
		t.Errorf("the server received traceparents %q, want [%q, \"\"]", got, want)
	}
}

// Off (the default) makes no span but still passes an upstream trace on,
// unchanged, from the request to the message and from the message to the
// outbound call.
func TestTracing_OffPassesTheTraceContextThrough(t *testing.T) {
	tr := telemetry.Off()
	if tr.Enabled() {
		t.Fatal("Off is enabled")
	}
	var inHandler context.Context
	h := tr.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { inHandler = r.Context() }))
	req := httptest.NewRequest(http.MethodPost, "/api/v1/events", nil)
	req.Header.Set("traceparent", upstream)
	h.ServeHTTP(httptest.NewRecorder(), req)

	msg, err := messaging.NewMessage(inHandler, "com.castiel.test.v1", "test", "t", 1)
	if err != nil {
		t.Fatal(err)
	}
	var published *message.Message
	pub := tr.Publisher(publisherFunc(func(_ string, msgs ...*message.Message) error { published = msgs[0]; return nil }), "gochannel")
	if err := pub.Publish("topic", msg); err != nil {
		t.Fatal(err)
	}
	if got := published.Metadata.Get("traceparent"); got != upstream {
		t.Fatalf("the message carries traceparent %q, want the caller's %q", got, upstream)
	}

	var outbound string
	consumer := message.NewMessage("m", nil)
	consumer.Metadata = published.Metadata
	handle := tr.Middleware("gochannel")(func(m *message.Message) ([]*message.Message, error) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { outbound = r.Header.Get("traceparent") }))
		defer srv.Close()
		req, _ := http.NewRequestWithContext(m.Context(), http.MethodPost, srv.URL, nil)
		resp, err := (&http.Client{Transport: tr.Transport(nil)}).Do(req)
		if err != nil {
			return nil, err
		}
		return nil, resp.Body.Close()
	})
	if _, err := handle(consumer); err != nil {
		t.Fatal(err)
	}
	if outbound != upstream {
		t.Errorf("the outbound call carries traceparent %q, want the caller's %q", outbound, upstream)
	}
}

type publisherFunc func(topic string, msgs ...*message.Message) error

func (f publisherFunc) Publish(topic string, msgs ...*message.Message) error {
	return f(topic, msgs...)
}
func (publisherFunc) Close() error { return nil }
