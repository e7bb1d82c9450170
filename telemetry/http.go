package telemetry

import (
	"context"
	"net/http"
	"slices"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/castiel/integration-manager/messaging"
)

// Handler wraps an HTTP server's handler: a request's trace starts here, or
// continues the caller's traceparent, in a server span named after the method
// whose context the handler gets (so the commands it enqueues carry the
// trace). Requests to the untraced paths (probes, metrics) make no span.
//
// Spans record the method, the path, the scheme and the status, never a
// header, a query string or a body.
func (t *Tracing) Handler(next http.Handler, untraced ...string) http.Handler {
	if t == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slices.Contains(untraced, r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		if !t.recording {
			if t.carriesTrace(r.Header) {
				r = r.WithContext(t.propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header)))
			}
			next.ServeHTTP(w, r)
			return
		}
		ctx := t.propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		method := knownMethod(r.Method)
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		ctx, span := t.tracer.Start(ctx, spanName(method),
			trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(
				semconv.HTTPRequestMethodKey.String(method),
				semconv.URLPath(r.URL.Path),
				semconv.URLScheme(scheme),
			))
		defer span.End()
		if sc := span.SpanContext(); sc.IsValid() {
			ctx = messaging.WithTraceparent(ctx, traceparent(sc))
		}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r.WithContext(ctx))
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
		if status >= 500 {
			span.SetStatus(codes.Error, "")
		}
	})
}

// carriesTrace reports whether h has any header the propagator reads.
func (t *Tracing) carriesTrace(h http.Header) bool {
	for _, k := range t.headers {
		if _, ok := h[k]; ok {
			return true
		}
	}
	return false
}

// statusWriter notes the status a handler answers with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Transport wraps an HTTP client's transport (nil: http.DefaultTransport):
// a request made from a context that carries a trace is sent with its
// traceparent and, with tracing on, in a client span named after the method
// that lasts until the response headers arrive. A request from a context
// without a trace (a background refresh) is sent as it is and makes no span.
//
// Spans record the method, the host, the port and the status, never the
// path or query (a tenant's webhook URL may hold a token there), a header or
// a body.
func (t *Tracing) Transport(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	if t == nil {
		return next
	}
	return &transport{next: next, t: t}
}

type transport struct {
	next http.RoundTripper
	t    *Tracing
}

func (tr *transport) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx := r.Context()
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return tr.next.RoundTrip(r)
	}
	if !tr.t.recording {
		return tr.next.RoundTrip(tr.t.withTraceHeaders(ctx, r))
	}
	method := knownMethod(r.Method)
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(method),
		semconv.ServerAddress(r.URL.Hostname()),
		semconv.URLScheme(r.URL.Scheme),
	}
	if port, err := strconv.Atoi(r.URL.Port()); err == nil {
		attrs = append(attrs, semconv.ServerPort(port))
	}
	ctx, span := tr.t.tracer.Start(ctx, spanName(method), trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	defer span.End()
	resp, err := tr.next.RoundTrip(tr.t.withTraceHeaders(ctx, r))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return resp, err
	}
	span.SetAttributes(semconv.HTTPResponseStatusCode(resp.StatusCode))
	if resp.StatusCode >= 400 {
		span.SetStatus(codes.Error, "")
	}
	return resp, nil
}

// CloseIdleConnections reaches the wrapped transport, so http.Client's
// CloseIdleConnections still works through the wrapper.
func (tr *transport) CloseIdleConnections() {
	if c, ok := tr.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// withTraceHeaders returns a copy of r (a RoundTripper must not change its
// request) carrying ctx's trace context in its headers.
func (t *Tracing) withTraceHeaders(ctx context.Context, r *http.Request) *http.Request {
	out := r.WithContext(ctx)
	out.Header = r.Header.Clone()
	if out.Header == nil {
		out.Header = make(http.Header)
	}
	out.Header.Del("Tracestate")
	t.propagator.Inject(ctx, propagation.HeaderCarrier(out.Header))
	return out
}

// knownMethod keeps span names and attributes to the standard methods.
func knownMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete,
		http.MethodHead, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

func spanName(method string) string {
	if method == "_OTHER" {
		return "HTTP"
	}
	return method
}
