// Package syncrun is the sync worker: it runs sync tasks between an external
// REST API (through the connector) and Castiel's shards, and turns ingress
// posts from external systems into runs of the affected tasks.
//
// A run (RunSync on TopicCmdSyncRun) holds the task's lease, so one run of a
// task proceeds at a time; a trigger arriving meanwhile is recorded as skipped
// (coalesced into the running one). The run pages the external API from the
// task's checkpoint, classifies every record against its sync state
// (domain.Classify), applies pulls to the shards and pushes to the API, stores
// conflicts for the resolver, then walks the shard for Castiel-side changes.
// A page's durable writes are grouped: its pulls go to the shard in one batch,
// then the records' states in store batches (a push's state goes out with the
// next group of states, right after its API write), never a state before the
// write it records. The next page is read and planned while one is being
// written (never a key of the page in flight, and never its pulls before that
// page is checkpointed). Its position is saved on the execution after
// every page, in order, so a run killed mid-way resumes on redelivery and
// writes nothing twice: a replayed record whose write was made but whose
// state was not finds both sides in agreement and only records that.
//
// The fate of a message: a finished run (completed, completed with errors,
// failed for a permanent reason, skipped) is acked; a transient failure (the
// store, the shards, the broker, an API that keeps failing after the
// connector's retries, shutdown) returns an error so the message comes back
// and the run resumes from its checkpoint.
package syncrun

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/connector"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/shards"
	"github.com/castiel/integration-manager/store"
)

// Role is the consumer role of the sync worker's queues.
const Role = "sync-worker"

// ClientSource builds the connector client of an integration;
// *integrations.Factory implements it.
type ClientSource interface {
	Client(ctx context.Context, tenantID, integrationID string) (*connector.Client, domain.Provider, error)
}

// Sender publishes domain messages (result events, and RunSync commands for
// ingress); *sender.Sender implements it.
type Sender interface {
	Send(ctx context.Context, tenantID string, msg domain.Message) error
}

// Deps are the worker's collaborators; all but Auditor are required.
type Deps struct {
	Store   store.Backend // sync tasks, executions, conflicts, sync state (and its leases)
	Clients ClientSource
	Shards  shards.Store
	Events  Sender
	Auditor Auditor // credential use and write-backs; nil: NopAuditor
	Logger  zerolog.Logger
	Metrics prometheus.Registerer // nil: metrics are kept but not exported
}

// Options tune the worker; zero values take the defaults listed.
type Options struct {
	// LeaseTTL is how long a run's lease outlives a worker that stopped
	// renewing it (a crash); it is renewed every third of it. Default 2 min.
	LeaseTTL time.Duration
	// RunSlice bounds how long one delivery works on a run. A run that is not
	// done by then saves its place and hands the message back to be resumed,
	// so no message stays unacked longer than the broker tolerates (RabbitMQ's
	// consumer timeout is 30 min by default). Default 20 min.
	//
	// A run ignores the router's per-attempt handler deadline (a sync run is
	// long by nature); cancellation, as at shutdown, still stops it at the
	// next record with its checkpoint saved.
	RunSlice time.Duration
	// MaxRunAge: a run still failing transiently this long after it started is
	// failed for good (and its message acked). Default 6 h.
	MaxRunAge time.Duration
	// Concurrency is how many records of a page are read, classified and
	// (pushes) written to the API at once (two pages are in hand at a time:
	// one planned while the other is written); their store and shard writes
	// are grouped per page whatever it is. Default 256.
	Concurrency int
	// MaxWrites bounds the writes to the external API in flight per run (the
	// provider's rate limit applies on top). Default 16.
	MaxWrites int
	// ShardPageSize is the page size of the walks over the shard and the sync
	// state. Default 1000 (the shard store's largest page).
	ShardPageSize int
	// RecordGrace is how long a record in flight may still take to finish
	// (its write and its state) after the run is cancelled. Default 15 s.
	RecordGrace time.Duration
	// PendingTTL: for ingress coalescing, a pending run older than this is
	// taken to be lost and no longer holds new triggers back. Default 15 min.
	PendingTTL time.Duration
	Now        func() time.Time
}

// Defaults of Options.
const (
	DefaultLeaseTTL      = 2 * time.Minute
	DefaultRunSlice      = 20 * time.Minute
	DefaultMaxRunAge     = 6 * time.Hour
	DefaultConcurrency   = 256
	DefaultMaxWrites     = 16
	DefaultShardPageSize = 1000
	DefaultPendingTTL    = 15 * time.Minute
	DefaultRecordGrace   = 15 * time.Second
)

// WithDefaults returns o with every unset field given its default.
func (o Options) WithDefaults() Options {
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.RunSlice == 0 {
		o.RunSlice = DefaultRunSlice
	}
	if o.MaxRunAge == 0 {
		o.MaxRunAge = DefaultMaxRunAge
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.MaxWrites == 0 {
		o.MaxWrites = DefaultMaxWrites
	}
	if o.ShardPageSize == 0 {
		o.ShardPageSize = DefaultShardPageSize
	}
	if o.PendingTTL == 0 {
		o.PendingTTL = DefaultPendingTTL
	}
	if o.RecordGrace == 0 {
		o.RecordGrace = DefaultRecordGrace
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Validate reports the first unusable value, naming the option.
func (o Options) Validate() error {
	switch {
	case o.LeaseTTL < 3*time.Millisecond:
		return errors.New("syncrun: LeaseTTL must be at least 3ms")
	case o.RunSlice <= 0:
		return errors.New("syncrun: RunSlice must be > 0")
	case o.MaxRunAge <= 0:
		return errors.New("syncrun: MaxRunAge must be > 0")
	case o.Concurrency < 1:
		return errors.New("syncrun: Concurrency must be >= 1")
	case o.MaxWrites < 1:
		return errors.New("syncrun: MaxWrites must be >= 1")
	case o.ShardPageSize < 1 || o.ShardPageSize > shards.MaxListLimit:
		return fmt.Errorf("syncrun: ShardPageSize must be between 1 and %d", shards.MaxListLimit)
	case o.PendingTTL <= 0:
		return errors.New("syncrun: PendingTTL must be > 0")
	case o.RecordGrace < 0:
		return errors.New("syncrun: RecordGrace must be >= 0")
	}
	return nil
}

// Handler holds the sync-run and ingress handlers.
type Handler struct {
	opts    Options
	log     zerolog.Logger
	clients ClientSource
	shards  shards.Store
	events  Sender
	audit   Auditor
	metrics *metrics
	owner   string // this handler's id in the leases it holds

	runningMu sync.Mutex
	running   map[string]bool // executions this handler is handling now (see claim)

	tasks     *store.Repository[domain.SyncTask]
	execs     *store.Repository[domain.Execution]
	conflicts *store.Repository[domain.Conflict]
	states    *store.Repository[domain.RecordState]
	stateC    store.Container // the states' container also holds leases and seen-key pages
	leases    *store.Repository[leaseDoc]
	seen      *store.Repository[seenDoc]
}

// New builds the handler; it refuses missing dependencies and bad options.
func New(deps Deps, opts Options) (*Handler, error) {
	var missing []string
	if deps.Store == nil {
		missing = append(missing, "Store")
	}
	if deps.Clients == nil {
		missing = append(missing, "Clients")
	}
	if deps.Shards == nil {
		missing = append(missing, "Shards")
	}
	if deps.Events == nil {
		missing = append(missing, "Events")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("syncrun: missing dependencies: %v", missing)
	}
	opts = opts.WithDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	containers := map[string]store.Container{}
	for _, name := range []string{domain.ContainerSyncTasks, domain.ContainerExecutions, domain.ContainerConflicts, store.SyncStateContainer} {
		c, err := deps.Store.Container(name)
		if err != nil {
			return nil, fmt.Errorf("syncrun: %w", err)
		}
		containers[name] = c
	}
	if deps.Auditor == nil {
		deps.Auditor = NopAuditor{}
	}
	m, err := newMetrics(deps.Metrics)
	if err != nil {
		return nil, err
	}
	owner := make([]byte, 8)
	_, _ = rand.Read(owner)
	stateC := containers[store.SyncStateContainer]
	return &Handler{
		opts:      opts,
		log:       deps.Logger.With().Str("component", Role).Logger(),
		clients:   deps.Clients,
		shards:    deps.Shards,
		events:    deps.Events,
		audit:     deps.Auditor,
		metrics:   m,
		owner:     hex.EncodeToString(owner),
		running:   map[string]bool{},
		tasks:     store.NewRepository[domain.SyncTask](containers[domain.ContainerSyncTasks]),
		execs:     store.NewRepository[domain.Execution](containers[domain.ContainerExecutions]),
		conflicts: store.NewRepository[domain.Conflict](containers[domain.ContainerConflicts]),
		states:    store.NewRepository[domain.RecordState](stateC),
		stateC:    stateC,
		leases:    store.NewRepository[leaseDoc](stateC),
		seen:      store.NewRepository[seenDoc](stateC),
	}, nil
}

// Register adds the worker's consumers to the router: run consumers of
// TopicCmdSyncRun and ingress consumers of TopicIngressReceived (n <= 0: the
// transport's ConsumersPerQueue). Each run consumer works on one run at a
// time, so run is the number of concurrent runs per process.
func (h *Handler) Register(r *message.Router, t *messaging.Transport, run, ingress int) error {
	if err := messaging.AddConsumer(r, t, Role, messaging.TopicCmdSyncRun, run, h.HandleRunSync); err != nil {
		return err
	}
	return messaging.AddConsumer(r, t, Role, messaging.TopicIngressReceived, ingress, h.HandleIngress)
}

// Topics are the topics the worker consumes, for queue declaration.
func Topics() []string {
	return []string{messaging.TopicCmdSyncRun, messaging.TopicIngressReceived}
}

// HandleRunSync is the consumer of TopicCmdSyncRun.
func (h *Handler) HandleRunSync(msg *message.Message) error {
	cmd, err := messaging.Decode[domain.RunSync](msg, domain.TypeRunSync)
	if err != nil {
		return err
	}
	if err := cmd.Validate(); err != nil {
		return messaging.Permanent(err)
	}
	return h.Run(msg.Context(), cmd)
}

// HandleIngress is the consumer of TopicIngressReceived.
func (h *Handler) HandleIngress(msg *message.Message) error {
	cmd, err := messaging.Decode[domain.IngressReceived](msg, domain.TypeIngressReceived)
	if err != nil {
		return err
	}
	if err := cmd.Validate(); err != nil {
		return messaging.Permanent(err)
	}
	return h.Ingress(msg.Context(), cmd)
}

func (h *Handler) now() time.Time { return h.opts.Now().UTC() }
