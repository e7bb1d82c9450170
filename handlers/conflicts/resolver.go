// Package conflicts is the conflict resolver: it decides the conflicts sync
// runs detect (domain.Resolve with the task's policy) or applies a person's
// decision (domain.ApplyManual), writes the winning version to whichever
// side lost, records the record's new agreement in its sync state, and
// records every resolution in integration_sync_conflicts.
//
// # Exactly-once effect
//
// Every attempt to resolve a conflict is one resolution record, numbered by a
// generation: generation 1 has the conflict's id (domain.ConflictResolution),
// generation n > 1 has ResolutionID(conflictID, n). An attempt claims its
// generation by creating that record (create-if-absent) before it writes to
// either side, so of two resolvers racing for a conflict exactly one applies
// it; the other looks at what the winner recorded and acks:
//
//   - in_progress: the winner is still applying; the loser returns a transient
//     error (retried, then nacked), so that if the winner dies the work is not
//     lost: after Options.ClaimLease the claim is taken over by the next
//     generation (the handler bounds its own work to half the lease).
//   - applied or superseded: the conflict is closed; the loser acks, logs it
//     and counts it (conflict_resolution_lost_total). A person's decision that
//     lost is also recorded, under its own id, with outcome superseded and the
//     reason, so the person can see why it was not applied.
//   - escalated: the escalation holds no claim: a person's decision, or a
//     ResolveConflict command from the system, claims the next generation
//     (at once, without waiting for the escalation's event); a redelivered
//     conflict.detected changes nothing. The conflict's status goes back to
//     pending, the manual queue the API lists (status=pending), with
//     resolutionId and resolutionGeneration naming the escalating attempt:
//     that, not the status, tells an escalated conflict from one not yet
//     handled. A status "escalated" stored by earlier versions still counts.
//   - failed: a ResolveConflict command (a person's decision, or actor
//     "system" to re-apply the policy) claims the next generation and tries
//     again; a redelivered conflict.detected does not.
//   - abandoned: an attempt that stopped before finishing (an outage of ours,
//     its deadline) marks itself abandoned so a retry claims the next
//     generation at once; what it wrote is in its writtenHashes.
//
// A generation record done but not yet reflected in the conflict's status
// (the resolver stopped between the two; for an escalation: the conflict
// does not name that generation yet) is repaired after Options.RepairAfter:
// the event is published again and the status set, so events are at least
// once.
//
// # Before writing
//
// Both sides are read again. A side that no longer holds the version the
// conflict was detected on (nor the winning version, nor a version an earlier
// attempt wrote) was changed by someone since: nothing is overwritten, the
// conflict becomes superseded, and the record is classified again with the
// new versions: a new conflict is stored and conflict.detected published for
// it, or, if the sides no longer conflict, the next sync run takes over.
//
// # Writing
//
// The winning version goes to each side that does not hold it yet: the
// external system through ExternalWriter (mapped to its shape), Castiel
// through the shard store; then the record's sync state records both sides
// as agreed (domain.RecordState.Agree), so the next sync run sees no change.
// The task's direction bounds the writes as it bounds a sync run: a pull-only
// task never writes to the external system, a push-only task never to
// Castiel. Reads of the external side and writes are retried with bounded
// backoff; an external system still failing then fails the resolution
// (status failed, with the reason; a ResolveConflict command retries it). An
// outage of our own (the store, the shard store, or an adapter error
// wrapping ErrUnavailable) never fails a resolution: the attempt is abandoned
// and the message retried.
//
// # Status reason
//
// The resolver stores the reason of a failed, escalated or superseded
// conflict in the conflict document as "statusReason", with "resolutionId"
// and "resolutionGeneration", the attempt that set the status; the API's
// conflict GET shows them.
package conflicts

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/shards"
	"github.com/castiel/integration-manager/store"
)

// Role is the consumer role of the resolver's queues.
const Role = "conflict-resolver"

// DefaultSource is the ce-source of the messages the resolver publishes.
const DefaultSource = "castiel/integration-manager/conflict-resolver"

// ExternalReader reads the external side's current version of a record.
type ExternalReader interface {
	// Read returns the record in Castiel's shape (the task's mapping applied
	// MapToInternal), hashed as the sync run hashes it (Hash set when volatile
	// fields are left out), with its modification time; Deleted when the
	// external system no longer has it. An error marked messaging.Permanent
	// is not retried; any other error is retried with backoff, and the
	// resolution fails when it persists, unless it wraps ErrUnavailable.
	Read(ctx context.Context, tenantID string, task domain.SyncTask, key string) (*domain.SideRecord, error)
}

// ExternalWrite is one write of the winning version to the external system.
type ExternalWrite struct {
	Key string
	// Data is the record in the external system's shape: the resolver has
	// applied the task's mapping MapToExternal. Nil when Delete.
	Data   map[string]any
	Delete bool
	// Create: the external system does not hold the record now (it was
	// deleted there, or never had it): create it rather than update it.
	Create bool
}

// ExternalWriter writes to the external system (the lead adapts a
// connector.Client to it). An error marked messaging.Permanent (the API
// rejected the record: connector.IsPermanent) is not retried; any other
// error is retried with backoff, and the resolution fails when it persists,
// unless it wraps ErrUnavailable.
type ExternalWriter interface {
	Write(ctx context.Context, tenantID string, task domain.SyncTask, w ExternalWrite) error
}

// ErrUnavailable, wrapped by an ExternalReader or ExternalWriter error, marks
// an outage of our own dependencies (e.g. the secret store holding the
// connection's credentials), not of the external system: the message is
// retried later instead of the resolution failing. shards.ErrUnavailable and
// the store's transient errors count the same.
var ErrUnavailable = errors.New("conflicts: a dependency of the resolver is unavailable")

// EventSender publishes result events; *sender.Sender implements it.
type EventSender interface {
	Send(ctx context.Context, tenantID string, msg domain.Message) error
}

// Options tune the resolver; zero values take the defaults listed.
type Options struct {
	// ClaimLease is how long an in-progress claim is honoured before another
	// resolver takes the conflict over (default 1m). The handler bounds its own
	// work to half of it, so keep it above twice the router's HandlerTimeout
	// for the lease to outlast any attempt.
	ClaimLease time.Duration
	// RepairAfter is how long a finished resolution may wait for its event and
	// status before another resolver completes them (default 10s).
	RepairAfter time.Duration
	// Retries of each read of the external side and each write-back:
	// exponential backoff from WriteInitial up to WriteMax between attempts,
	// at most WriteAttempts attempts within WriteMaxElapsed. Defaults 100ms,
	// 2s, 5 attempts, 8s (three of them fit in the router's 30s HandlerTimeout).
	WriteInitial    time.Duration
	WriteMax        time.Duration
	WriteAttempts   int
	WriteMaxElapsed time.Duration
	Source          string // ce-source of published messages; default DefaultSource
	Now             func() time.Time
}

// Defaults of Options.
const (
	DefaultClaimLease      = time.Minute
	DefaultRepairAfter     = 10 * time.Second
	DefaultWriteInitial    = 100 * time.Millisecond
	DefaultWriteMax        = 2 * time.Second
	DefaultWriteAttempts   = 5
	DefaultWriteMaxElapsed = 8 * time.Second
)

// WithDefaults returns o with every unset field given its default.
func (o Options) WithDefaults() Options {
	if o.ClaimLease == 0 {
		o.ClaimLease = DefaultClaimLease
	}
	if o.RepairAfter == 0 {
		o.RepairAfter = DefaultRepairAfter
	}
	if o.WriteInitial == 0 {
		o.WriteInitial = DefaultWriteInitial
	}
	if o.WriteMax == 0 {
		o.WriteMax = DefaultWriteMax
	}
	if o.WriteAttempts == 0 {
		o.WriteAttempts = DefaultWriteAttempts
	}
	if o.WriteMaxElapsed == 0 {
		o.WriteMaxElapsed = DefaultWriteMaxElapsed
	}
	if o.Source == "" {
		o.Source = DefaultSource
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Validate reports the first unusable value, naming the option.
func (o Options) Validate() error {
	switch {
	case o.ClaimLease <= 0:
		return errors.New("conflicts: ClaimLease must be > 0")
	case o.RepairAfter <= 0:
		return errors.New("conflicts: RepairAfter must be > 0")
	case o.WriteInitial <= 0 || o.WriteMax < o.WriteInitial:
		return errors.New("conflicts: WriteInitial must be > 0 and WriteMax >= WriteInitial")
	case o.WriteAttempts < 1:
		return errors.New("conflicts: WriteAttempts must be >= 1")
	case o.WriteMaxElapsed <= 0:
		return errors.New("conflicts: WriteMaxElapsed must be > 0")
	case 3*o.WriteMaxElapsed >= o.ClaimLease/2:
		// One attempt reads the external side and writes both sides, and must
		// end well inside the lease.
		return fmt.Errorf("conflicts: WriteMaxElapsed (%s) must be under a sixth of ClaimLease (%s)", o.WriteMaxElapsed, o.ClaimLease)
	}
	return nil
}

// Deps are the resolver's collaborators; all but Metrics are required.
type Deps struct {
	// Store holds integration_conflicts, integration_sync_conflicts,
	// integration_sync_tasks and integration_sync_state.
	Store    store.Backend
	Shards   shards.Store // Castiel's side
	External ExternalReader
	Writer   ExternalWriter
	Events   EventSender
	Logger   zerolog.Logger // never receives record contents
	Metrics  prometheus.Registerer
}

// Resolver holds the resolver's handlers.
type Resolver struct {
	opts        Options
	log         zerolog.Logger
	shards      shards.Store
	external    ExternalReader
	writer      ExternalWriter
	events      EventSender
	conflicts   *store.Repository[conflictDoc]
	resolutions *store.Repository[resolutionDoc]
	tasks       *store.Repository[domain.SyncTask]
	states      *store.Repository[domain.RecordState]
	metrics     *metrics
}

// New builds a resolver; it refuses missing dependencies and bad options.
func New(deps Deps, opts Options) (*Resolver, error) {
	var missing []string
	if deps.Store == nil {
		missing = append(missing, "Store")
	}
	if deps.Shards == nil {
		missing = append(missing, "Shards")
	}
	if deps.External == nil {
		missing = append(missing, "External")
	}
	if deps.Writer == nil {
		missing = append(missing, "Writer")
	}
	if deps.Events == nil {
		missing = append(missing, "Events")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("conflicts: missing dependencies: %v", missing)
	}
	opts = opts.WithDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	open := func(name string) (store.Container, error) {
		c, err := deps.Store.Container(name)
		if err != nil {
			return nil, fmt.Errorf("conflicts: %w", err)
		}
		return c, nil
	}
	conflictsC, err := open(domain.ContainerConflicts)
	if err != nil {
		return nil, err
	}
	resolutionsC, err := open(domain.ContainerSyncConflicts)
	if err != nil {
		return nil, err
	}
	tasksC, err := open(domain.ContainerSyncTasks)
	if err != nil {
		return nil, err
	}
	statesC, err := open(store.SyncStateContainer)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(deps.Metrics)
	if err != nil {
		return nil, err
	}
	return &Resolver{
		opts:        opts,
		log:         deps.Logger.With().Str("component", Role).Logger(),
		shards:      deps.Shards,
		external:    deps.External,
		writer:      deps.Writer,
		events:      deps.Events,
		conflicts:   store.NewRepository[conflictDoc](conflictsC),
		resolutions: store.NewRepository[resolutionDoc](resolutionsC),
		tasks:       store.NewRepository[domain.SyncTask](tasksC),
		states:      store.NewRepository[domain.RecordState](statesC),
		metrics:     m,
	}, nil
}

// Register adds the resolver's consumers to the router: detected consumers
// of TopicEvtConflictDetected and resolve consumers of
// TopicCmdConflictResolve (n <= 0: the transport's ConsumersPerQueue).
func (r *Resolver) Register(rt *message.Router, t *messaging.Transport, detected, resolve int) error {
	if err := messaging.AddConsumer(rt, t, Role, messaging.TopicEvtConflictDetected, detected, r.HandleDetected); err != nil {
		return err
	}
	return messaging.AddConsumer(rt, t, Role, messaging.TopicCmdConflictResolve, resolve, r.HandleResolve)
}

// Topics are the topics the resolver consumes, for queue declaration.
func Topics() []string {
	return []string{messaging.TopicEvtConflictDetected, messaging.TopicCmdConflictResolve}
}

func (r *Resolver) now() time.Time { return r.opts.Now().UTC() }
