package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/config"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/handlers/httpapi"
	"github.com/castiel/integration-manager/handlers/poison"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/messaging/sender"
	"github.com/castiel/integration-manager/secrets"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/telemetry"
)

// RunAPI runs the command API (cmd/api) and the poison recorder.
func RunAPI(ctx context.Context, cfg *config.Config, logger zerolog.Logger) error {
	return startAndRun(ctx, cfg, logger, PartAPI)
}

func startAndRun(ctx context.Context, cfg *config.Config, logger zerolog.Logger, parts ...Part) error {
	p, err := Start(ctx, cfg, logger, parts...)
	if err != nil {
		return err
	}
	return p.Run(ctx)
}

// Part is one role a process can run on shared infrastructure.
type Part int

// The parts a process can run.
const (
	PartAPI Part = iota
	PartDispatcher
	PartSyncWorker
	PartScheduler
	PartConflictResolver
)

// Process is a started set of parts on one store and one broker connection.
type Process struct {
	cfg       *config.Config
	logger    zerolog.Logger
	backend   store.Backend
	transport *messaging.Transport
	router    *message.Router
	servers   []*httpServer
	closers   []func() error
	loops     []func(context.Context) error // run beside the router until ctx ends
	tracing   *telemetry.Tracing            // shut down (flushed) last

	// APIAddr is the address the API really listens on (with PartAPI).
	APIAddr string
	// AdminAddr serves /healthz, /readyz and /metrics.
	AdminAddr string
}

// Start opens the store and the broker once, declares every queue and builds
// the given parts, binding their ports. Run serves them. Tracing is what the
// OTEL_* environment asks for (off by default).
func Start(ctx context.Context, cfg *config.Config, logger zerolog.Logger, parts ...Part) (*Process, error) {
	return StartWith(ctx, cfg, logger, StartOptions{}, parts...)
}

// StartTraced is Start with the given tracing instead of the environment's
// (a test's in-memory exporter). The process shuts it down when it stops.
func StartTraced(ctx context.Context, cfg *config.Config, logger zerolog.Logger, tracing *telemetry.Tracing, parts ...Part) (*Process, error) {
	return StartWith(ctx, cfg, logger, StartOptions{Tracing: tracing}, parts...)
}

// StartOptions are what a caller may put around the process's own adapters.
type StartOptions struct {
	// Tracing replaces the environment's (nil: what the OTEL_* environment asks for).
	Tracing *telemetry.Tracing
	// WrapStore, when set, wraps the opened store before any part uses it: a
	// fault-injection test takes the standalone process's embedded store away
	// through it, as an outage takes Cosmos away from the fleet.
	WrapStore func(store.Backend) store.Backend
}

// StartWith is Start with the given options.
func StartWith(ctx context.Context, cfg *config.Config, logger zerolog.Logger, opts StartOptions, parts ...Part) (_ *Process, err error) {
	tracing := opts.Tracing
	if tracing == nil {
		if tracing, err = telemetry.FromEnv(ctx, cfg.Service, logger); err != nil {
			return nil, err
		}
	}
	p := &Process{cfg: cfg, logger: logger, tracing: tracing}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if p.backend, err = OpenStore(ctx, cfg.Store, logger, StoreMetrics(registry)); err != nil {
		return nil, err
	}
	if opts.WrapStore != nil {
		p.backend = opts.WrapStore(p.backend)
	}
	if p.transport, err = OpenTransport(ctx, cfg, p.backend, logger); err != nil {
		return nil, err
	}
	for role, topics := range Consumption() {
		if err := p.transport.Declare(ctx, role, topics...); err != nil {
			return nil, fmt.Errorf("declare the queues of %s: %w", role, err)
		}
	}
	if err := p.transport.RegisterMetrics(registry); err != nil {
		return nil, err
	}
	policy := RouterPolicy(cfg)
	policy.Metrics = registry
	publisher := tracing.Publisher(p.transport.Publisher(), messagingSystem(cfg))
	if p.router, err = messaging.NewRouter(logger, policy, publisher); err != nil {
		return nil, err
	}
	p.router.AddMiddleware(tracing.Middleware(messagingSystem(cfg)))

	admin, err := listenHTTP("http.admin.addr", cfg.HTTP.Admin.Addr, adminHandler(registry, []check{
		{"store", p.backend.Ping}, {"broker", p.transport.Ping},
	}), 10*time.Second, 10*time.Second, logger)
	if err != nil {
		return nil, err
	}
	p.servers = append(p.servers, admin)
	p.AdminAddr = admin.Addr

	deps := &shared{cfg: cfg, backend: p.backend, logger: logger, tracing: tracing, publisher: publisher}
	for _, part := range parts {
		switch part {
		case PartAPI:
			srv, err := buildAPI(ctx, cfg, logger, p.backend, deps, p.transport, p.router, registry)
			if err != nil {
				return nil, err
			}
			p.servers = append(p.servers, srv)
			p.APIAddr = srv.Addr
		case PartDispatcher:
			d, err := buildDispatcher(cfg, logger, p.backend, deps, p.transport, p.router, registry)
			if err != nil {
				return nil, err
			}
			p.closers = append(p.closers, d.Close)
		case PartSyncWorker:
			closeAudit, err := buildSyncWorker(cfg, logger, p.backend, deps, p.transport, p.router, registry)
			if err != nil {
				return nil, err
			}
			p.closers = append(p.closers, closeAudit)
		case PartScheduler:
			loop, err := buildScheduler(cfg, logger, p.backend, deps)
			if err != nil {
				return nil, err
			}
			p.loops = append(p.loops, loop)
		case PartConflictResolver:
			if err := buildConflictResolver(cfg, logger, p.backend, deps, p.transport, p.router, registry); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

// Run serves until ctx ends, then shuts everything down in order.
func (p *Process) Run(ctx context.Context) error {
	defer p.close()
	return run(ctx, p.cfg, p.logger, p.router, p.servers, p.loops)
}

func (p *Process) close() {
	for _, c := range p.closers {
		_ = c()
	}
	for _, s := range p.servers {
		_ = s.ln.Close() // only matters when Run never started
	}
	if p.transport != nil {
		if err := p.transport.Close(); err != nil {
			p.logger.Warn().Err(err).Msg("close broker connection")
		}
	}
	if p.backend != nil {
		if err := p.backend.Close(); err != nil {
			p.logger.Warn().Err(err).Msg("close store")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.tracing.Shutdown(ctx); err != nil {
		p.logger.Warn().Err(err).Msg("flush traces")
	}
}

// buildAPI wires the command API and the poison recorder its operators read.
func buildAPI(ctx context.Context, cfg *config.Config, logger zerolog.Logger, backend store.Backend, deps *shared,
	transport *messaging.Transport, router *message.Router, registry *prometheus.Registry) (*httpServer, error) {
	authn, authReady, err := Authenticator(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	readiness := []httpapi.ReadinessCheck{{Name: "broker", Check: transport.Ping}}
	if authReady != nil {
		readiness = append(readiness, httpapi.ReadinessCheck{Name: "jwks", Check: authReady})
	}
	secretStore, err := deps.secrets()
	if err != nil {
		return nil, err
	}
	poisonC, err := backend.Container(store.PoisonContainer)
	if err != nil {
		return nil, err
	}
	recorder := poison.NewRecorder(poisonC, time.Now)
	if err := messaging.AddPoisonConsumer(router, transport, RolePoisonRecorder, 1, recorder.Handle); err != nil {
		return nil, fmt.Errorf("poison recorder: %w", err)
	}
	handler, err := httpapi.New(httpapi.Deps{
		Store:     backend,
		Auth:      authn,
		Commands:  sender.New(deps.publisher, "castiel/integration-manager/"+cfg.Service),
		Secrets:   secretsAdapter{secretStore},
		Poison:    poisonAdapter{poison.NewQueue(poisonC, deps.publisher, time.Now)},
		Readiness: readiness,
		Metrics:   registry,
	}, httpapi.Options{
		MaxBodyBytes:             cfg.HTTP.API.MaxBodyBytes,
		URLPolicy:                domain.URLPolicy{RequireHTTPS: cfg.Webhooks.RequireHTTPS, AllowedHTTPHosts: cfg.Webhooks.AllowedHTTPHosts},
		SecretRotationOverlap:    cfg.Webhooks.SecretRotationOverlap,
		Logger:                   logger,
		ContextWithCorrelationID: messaging.WithCorrelationID,
	})
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	handler = deps.tracing.Handler(handler, "/healthz", "/readyz", "/metrics")
	srv, err := listenHTTP("http.api.addr", cfg.HTTP.API.Addr, handler, cfg.HTTP.API.ReadTimeout, cfg.HTTP.API.WriteTimeout, logger)
	if err != nil {
		return nil, err
	}
	ev := logger.Info().Str("url", "http://"+displayAddr(srv.Addr))
	if k, ok := cfg.DevelopmentKey(); ok {
		// The shipped development key is public; printing it is what lets a newcomer call the API.
		ev = ev.Str("devApiKey", k.Key.Reveal()).Str("devTenant", k.TenantID)
	}
	ev.Msg("API listening")
	return srv, nil
}

// secretsAdapter makes an unknown secret reference a store.ErrNotFound for the API.
type secretsAdapter struct{ secrets.Store }

func (s secretsAdapter) Get(ctx context.Context, tenantID, ref string) ([]byte, error) {
	v, err := s.Store.Get(ctx, tenantID, ref)
	if errors.Is(err, secrets.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	return v, err
}

// poisonAdapter presents poison records in the API's view.
type poisonAdapter struct{ q *poison.Queue }

func (p poisonAdapter) ListPoison(ctx context.Context, cursor string, limit int) ([]httpapi.PoisonMessage, string, error) {
	recs, next, err := p.q.List(ctx, cursor, limit)
	if err != nil {
		return nil, "", err
	}
	out := make([]httpapi.PoisonMessage, 0, len(recs))
	for _, r := range recs {
		payload := json.RawMessage(r.Payload)
		if !json.Valid(payload) {
			// An undecodable payload is shown as a JSON string, as received.
			payload, _ = json.Marshal(string(r.Payload))
		}
		out = append(out, httpapi.PoisonMessage{
			ID: r.ID, Topic: r.Topic, Handler: r.Handler, Reason: r.Reason, TenantID: r.TenantID,
			CEType: r.CEType, PoisonedAt: r.PoisonedAt, RepublishedAt: r.RepublishedAt,
			Metadata: r.Metadata, Payload: payload,
		})
	}
	return out, next, nil
}

func (p poisonAdapter) RepublishPoison(ctx context.Context, id string) error {
	_, err := p.q.Republish(ctx, id)
	return err
}
