package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// The environment variables FromEnv reads itself. The OTLP exporter reads the
// rest of OTEL_EXPORTER_OTLP_* (headers, timeout, compression, certificates),
// the SDK reads OTEL_BSP_* and OTEL_SPAN_*_LIMIT, and the resource reads
// OTEL_RESOURCE_ATTRIBUTES, as the OpenTelemetry specification says.
const (
	envSDKDisabled       = "OTEL_SDK_DISABLED"
	envExporter          = "OTEL_TRACES_EXPORTER"
	envEndpoint          = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envTracesEndpoint    = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envProtocol          = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envTracesProtocol    = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	envSampler           = "OTEL_TRACES_SAMPLER"
	envSamplerArg        = "OTEL_TRACES_SAMPLER_ARG"
	envPropagators       = "OTEL_PROPAGATORS"
	envServiceName       = "OTEL_SERVICE_NAME"
	defaultServicePrefix = "integration-manager-"
)

// FromEnv builds the tracing the OTEL_* environment asks for, for the process
// of the given service (service.name defaults to "integration-manager-" +
// service; OTEL_SERVICE_NAME overrides it).
//
// Tracing is off (Off: no span, only pass-through of incoming trace context)
// unless OTEL_TRACES_EXPORTER names an exporter ("otlp", "console") or an
// OTLP endpoint is set, which implies "otlp". OTEL_TRACES_EXPORTER=none or
// OTEL_SDK_DISABLED=true keeps it off whatever else is set. OTLP is sent over
// HTTP (http/protobuf). A value FromEnv cannot use is an error naming the
// variable. Export errors are logged to logger, through OpenTelemetry's
// process-wide error handler.
func FromEnv(ctx context.Context, service string, logger zerolog.Logger) (*Tracing, error) {
	propagator, err := propagatorFromEnv()
	if err != nil {
		return nil, err
	}
	if disabled, _ := strconv.ParseBool(env(envSDKDisabled)); disabled {
		return off(propagator), nil
	}
	exporters, err := exporterNames()
	if err != nil || len(exporters) == 0 {
		return off(propagator), err
	}
	sampler, err := samplerFromEnv()
	if err != nil {
		return nil, err
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(defaultServicePrefix+service), semconv.ServiceNamespace("castiel")),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
		resource.WithTelemetrySDK(),
		resource.WithHost(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(sampler)}
	for _, name := range exporters {
		exp, err := newExporter(ctx, name)
		if err != nil {
			return nil, err
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Warn().Err(err).Msg("tracing: spans could not be exported")
	}))
	t := New(tp)
	t.setPropagator(propagator)
	logger.Info().Strs("exporters", exporters).Str("sampler", sampler.Description()).
		Str("serviceName", serviceName(res, service)).Msg("tracing on")
	return t, nil
}

func env(key string) string { return strings.TrimSpace(os.Getenv(key)) }

// exporterNames lists the exporters asked for; none means tracing is off.
func exporterNames() ([]string, error) {
	v := strings.ToLower(env(envExporter))
	if v == "" {
		if env(envEndpoint) != "" || env(envTracesEndpoint) != "" {
			return []string{"otlp"}, nil
		}
		return nil, nil
	}
	var names []string
	for _, name := range strings.Split(v, ",") {
		switch name = strings.TrimSpace(name); name {
		case "none":
			return nil, nil
		case "otlp", "console":
			names = append(names, name)
		default:
			return nil, fmt.Errorf("%s: unknown exporter %q (use otlp, console or none)", envExporter, name)
		}
	}
	return names, nil
}

func newExporter(ctx context.Context, name string) (sdktrace.SpanExporter, error) {
	if name == "console" {
		exp, err := stdouttrace.New(stdouttrace.WithWriter(os.Stdout))
		if err != nil {
			return nil, fmt.Errorf("%s=console: %w", envExporter, err)
		}
		return exp, nil
	}
	key, protocol := envTracesProtocol, env(envTracesProtocol)
	if protocol == "" {
		key, protocol = envProtocol, env(envProtocol)
	}
	if protocol != "" && protocol != "http/protobuf" {
		return nil, fmt.Errorf("%s: protocol %q is not supported; use http/protobuf (the collector's port 4318)", key, protocol)
	}
	// The exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS,
	// _TIMEOUT, _COMPRESSION and _CERTIFICATE itself.
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s=otlp: %w", envExporter, err)
	}
	return exp, nil
}

// samplerFromEnv is the SDK's reading of OTEL_TRACES_SAMPLER(_ARG), except
// that a value it cannot use stops start-up instead of being logged and
// replaced by the default.
func samplerFromEnv() (sdktrace.Sampler, error) {
	name := strings.ToLower(env(envSampler))
	arg := env(envSamplerArg)
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		v, err := strconv.ParseFloat(arg, 64)
		if err != nil || v < 0 || v > 1 {
			return 0, fmt.Errorf("%s: %q is not a ratio between 0 and 1", envSamplerArg, arg)
		}
		return v, nil
	}
	switch name {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "traceidratio", "parentbased_traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		if name == "traceidratio" {
			return sdktrace.TraceIDRatioBased(r), nil
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), nil
	}
	return nil, fmt.Errorf("%s: unknown sampler %q (use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio)", envSampler, name)
}

// propagatorFromEnv reads OTEL_PROPAGATORS. The default is W3C trace context
// alone, not the specification's "tracecontext,baggage": baggage would hand
// whatever an upstream service put in it to tenants' endpoints and external
// APIs, so it is sent only when asked for.
func propagatorFromEnv() (propagation.TextMapPropagator, error) {
	v := strings.ToLower(env(envPropagators))
	if v == "" {
		return propagation.TraceContext{}, nil
	}
	var ps []propagation.TextMapPropagator
	for _, name := range strings.Split(v, ",") {
		switch name = strings.TrimSpace(name); name {
		case "none":
			return propagation.NewCompositeTextMapPropagator(), nil
		case "tracecontext":
			ps = append(ps, propagation.TraceContext{})
		case "baggage":
			ps = append(ps, propagation.Baggage{})
		default:
			return nil, fmt.Errorf("%s: unknown propagator %q (use tracecontext, baggage or none)", envPropagators, name)
		}
	}
	if len(ps) == 1 {
		return ps[0], nil
	}
	return propagation.NewCompositeTextMapPropagator(ps...), nil
}

func serviceName(res *resource.Resource, service string) string {
	if v, ok := res.Set().Value(semconv.ServiceNameKey); ok {
		return v.AsString()
	}
	if v := env(envServiceName); v != "" {
		return v
	}
	return defaultServicePrefix + service
}
