// Package httpapi is the thin command API: it authenticates the caller,
// validates and authorises the request, writes configuration to the store and
// enqueues work through a CommandSender. It never calls an external system or
// a tenant endpoint itself; the workers do.
//
// Every route is declared once, in the route table (routes.go), which both
// registers the handler on a net/http ServeMux and generates /openapi.json, so
// the two cannot drift.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/auth"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// Authenticator turns a bearer token into the calling principal. Errors wrap
// auth.ErrUnauthenticated (401) or auth.ErrUnavailable (503).
type Authenticator interface {
	Authenticate(ctx context.Context, bearerToken string) (auth.Principal, error)
}

// CommandSender publishes a command for the workers. The wiring maps the
// command's CEType to its topic and publishes with broker confirms: a nil error
// means the command is durable, so only then does the API answer 202.
type CommandSender interface {
	Send(ctx context.Context, tenantID string, cmd domain.Message) error
}

// Secrets stores credentials and signing secrets outside the documents; the
// documents keep only the returned reference.
type Secrets interface {
	Put(ctx context.Context, tenantID string, value []byte) (ref string, err error)
	Get(ctx context.Context, tenantID, ref string) ([]byte, error)
	Replace(ctx context.Context, tenantID, ref string, value []byte) error
	Delete(ctx context.Context, tenantID, ref string) error
}

// PoisonQueue lists and re-publishes messages the workers gave up on.
// Implementations wrap store.ErrNotFound for an unknown id.
type PoisonQueue interface {
	ListPoison(ctx context.Context, cursor string, limit int) ([]PoisonMessage, string, error)
	RepublishPoison(ctx context.Context, id string) error
}

// PoisonMessage is the operator's view of one poisoned message.
type PoisonMessage struct {
	ID            string            `json:"id"`
	Topic         string            `json:"topic"`
	Handler       string            `json:"handler"`
	Reason        string            `json:"reason"`
	TenantID      string            `json:"tenantId,omitempty"`
	CEType        string            `json:"ceType,omitempty"`
	PoisonedAt    time.Time         `json:"poisonedAt"`
	RepublishedAt *time.Time        `json:"republishedAt,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	Payload       json.RawMessage   `json:"payload,omitempty"`
}

// ReadinessCheck is one dependency /readyz checks; Name appears in the 503
// answer when Check fails.
type ReadinessCheck struct {
	Name  string
	Check func(ctx context.Context) error
}

// Deps are the collaborators of the API. All but Readiness and Metrics are required.
type Deps struct {
	Store     store.Backend
	Auth      Authenticator
	Commands  CommandSender
	Secrets   Secrets
	Poison    PoisonQueue
	Readiness []ReadinessCheck // the store's Ping is always checked as "store"
	// Metrics receives http_requests_total and http_request_duration_seconds
	// and is what /metrics serves; nil means a private registry.
	Metrics *prometheus.Registry
}

// Options tune the API; zero values take the documented defaults.
type Options struct {
	MaxBodyBytes          int64            // request body limit; default 1 MiB
	URLPolicy             domain.URLPolicy // which webhook URLs are accepted
	SecretRotationOverlap time.Duration    // how long a rotated webhook secret keeps signing; default 24h
	Now                   func() time.Time // clock for stored times and signature checks; default time.Now
	Logger                zerolog.Logger   // one line per request; never bodies, tokens or secrets
	// ContextWithCorrelationID, when set, is applied to every request's
	// context so the CommandSender can carry the correlation id (e.g.
	// messaging.WithCorrelationID). CorrelationID(ctx) works without it.
	ContextWithCorrelationID func(ctx context.Context, id string) context.Context
}

// Defaults applied by New.
const (
	DefaultMaxBodyBytes          = 1 << 20
	DefaultSecretRotationOverlap = 24 * time.Hour
)

// api holds the dependencies and the repositories built from the store.
type api struct {
	deps    Deps
	opts    Options
	log     zerolog.Logger
	mux     *http.ServeMux
	metrics *httpMetrics
	// patterns lists every pattern registered on mux, in registration order;
	// the OpenAPI test compares it with the document.
	patterns    []string
	document    []byte       // /openapi.json, generated once from the route table
	metricsHTTP http.Handler // /metrics

	providers     *store.Repository[domain.Provider]
	catalog       *store.Repository[domain.CatalogEntry]
	visibility    *store.Repository[domain.Visibility]
	integrations  *store.Repository[domain.Integration]
	connections   *store.Repository[domain.Connection]
	webhooks      *store.Repository[domain.WebhookEndpoint]
	syncTasks     *store.Repository[domain.SyncTask]
	executions    *store.Repository[domain.Execution]
	deliveries    *store.Repository[domain.DeliveryAttempt] // executions with what only replay reads
	conflicts     *store.Repository[domain.Conflict]
	idempotencies *store.Repository[idempotencyRecord]
}

// New builds the API handler. It refuses missing dependencies so a wiring
// mistake stops start-up instead of failing the first request.
func New(deps Deps, opts Options) (http.Handler, error) {
	a, err := newAPI(deps, opts)
	if err != nil {
		return nil, err
	}
	return a, nil
}

func newAPI(deps Deps, opts Options) (*api, error) {
	var missing []string
	if deps.Store == nil {
		missing = append(missing, "Store")
	}
	if deps.Auth == nil {
		missing = append(missing, "Auth")
	}
	if deps.Commands == nil {
		missing = append(missing, "Commands")
	}
	if deps.Secrets == nil {
		missing = append(missing, "Secrets")
	}
	if deps.Poison == nil {
		missing = append(missing, "Poison")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("httpapi: missing dependencies: %v", missing)
	}
	for i, c := range deps.Readiness {
		if c.Name == "" || c.Check == nil {
			return nil, fmt.Errorf("httpapi: readiness check %d needs a name and a function", i)
		}
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.SecretRotationOverlap <= 0 {
		opts.SecretRotationOverlap = DefaultSecretRotationOverlap
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if deps.Metrics == nil {
		deps.Metrics = prometheus.NewRegistry()
	}
	metrics, err := newHTTPMetrics(deps.Metrics)
	if err != nil {
		return nil, err
	}
	a := &api{deps: deps, opts: opts, log: opts.Logger, mux: http.NewServeMux(), metrics: metrics}
	if err := a.openRepositories(); err != nil {
		return nil, err
	}
	routes := a.routes()
	for _, rt := range routes {
		a.register(rt)
	}
	if a.document, err = openAPIDocument(routes); err != nil {
		return nil, err
	}
	a.metricsHTTP = promhttp.HandlerFor(deps.Metrics, promhttp.HandlerOpts{})
	return a, nil
}

func (a *api) openRepositories() error {
	var errs []error
	open := func(name string) store.Container {
		c, err := a.deps.Store.Container(name)
		if err != nil {
			errs = append(errs, err)
		}
		return c
	}
	a.providers = store.NewRepository[domain.Provider](open(domain.ContainerProviders))
	a.catalog = store.NewRepository[domain.CatalogEntry](open(domain.ContainerCatalog))
	a.visibility = store.NewRepository[domain.Visibility](open(domain.ContainerVisibility))
	a.integrations = store.NewRepository[domain.Integration](open(domain.ContainerIntegrations))
	a.connections = store.NewRepository[domain.Connection](open(domain.ContainerConnections))
	a.webhooks = store.NewRepository[domain.WebhookEndpoint](open(domain.ContainerWebhooks))
	a.syncTasks = store.NewRepository[domain.SyncTask](open(domain.ContainerSyncTasks))
	a.executions = store.NewRepository[domain.Execution](open(domain.ContainerExecutions))
	a.deliveries = store.NewRepository[domain.DeliveryAttempt](open(domain.ContainerExecutions))
	a.conflicts = store.NewRepository[domain.Conflict](open(domain.ContainerConflicts))
	a.idempotencies = store.NewRepository[idempotencyRecord](open(store.IdempotencyContainer))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("httpapi: open containers: %w", err)
	}
	return nil
}

func (a *api) now() time.Time { return a.opts.Now().UTC() }
