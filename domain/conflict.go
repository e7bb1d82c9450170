package domain

import "time"

type ConflictKind string

const (
	ConflictUpdateUpdate ConflictKind = "update_update" // both sides changed the record
	ConflictDeleteUpdate ConflictKind = "delete_update" // external deleted, internal updated
	ConflictUpdateDelete ConflictKind = "update_delete" // external updated, internal deleted
)

type ConflictStatus string

const (
	ConflictStatusPending    ConflictStatus = "pending"
	ConflictStatusResolved   ConflictStatus = "resolved"
	ConflictStatusEscalated  ConflictStatus = "escalated"  // legacy; an escalated conflict is now pending, its ResolutionID naming the escalation
	ConflictStatusSuperseded ConflictStatus = "superseded" // a newer conflict on the same record replaced it
	ConflictStatusFailed     ConflictStatus = "failed"
)

// Conflict is a record both sides changed since the base version (container
// integration_conflicts, partition "tenantId"). A deleted side is nil.
type Conflict struct {
	ID                 string         `json:"id"`
	TenantID           string         `json:"tenantId"`
	SyncTaskID         string         `json:"syncTaskId"`
	IntegrationID      string         `json:"integrationId"`
	ExecutionID        string         `json:"executionId,omitempty"` // the sync run that found it
	Entity             string         `json:"entity"`
	RecordKey          string         `json:"recordKey"`
	Kind               ConflictKind   `json:"kind"`
	External           map[string]any `json:"external,omitempty"`
	Internal           map[string]any `json:"internal,omitempty"`
	Base               map[string]any `json:"base,omitempty"`
	ExternalModifiedAt *time.Time     `json:"externalModifiedAt,omitempty"`
	InternalModifiedAt *time.Time     `json:"internalModifiedAt,omitempty"`
	Status             ConflictStatus `json:"status"`
	// StatusReason says why the conflict is failed, escalated or superseded.
	StatusReason string `json:"statusReason,omitempty"`
	// ResolutionID is the resolution record that set the status, and
	// Generation its generation: a status is never set by an older generation
	// than the one that set it last. A pending conflict naming a resolution
	// was escalated by it and waits for a person.
	ResolutionID string    `json:"resolutionId,omitempty"`
	Generation   int       `json:"resolutionGeneration,omitempty"`
	DetectedAt   time.Time `json:"detectedAt"`
	CreatedAt    time.Time `json:"createdAt"`
	UpdatedAt    time.Time `json:"updatedAt"`
}

func (c Conflict) Key() (partitionKey, id string) { return c.TenantID, c.ID }
func (Conflict) Container() string                { return ContainerConflicts }

// Side names where a resolved value came from.
type Side string

const (
	SideExternal Side = "external"
	SideInternal Side = "internal"
	SideBase     Side = "base"
	SideEdited   Side = "edited" // a value a person typed in
)

type ResolutionOutcome string

const (
	OutcomeApplied    ResolutionOutcome = "applied"
	OutcomeEscalated  ResolutionOutcome = "escalated"
	OutcomeSuperseded ResolutionOutcome = "superseded"
	OutcomeFailed     ResolutionOutcome = "failed"
)

// ActorSystem is the actor of automatic resolutions; a person is their user id.
const ActorSystem = "system"

// FieldDecision records which side won one field.
type FieldDecision struct {
	Field  string `json:"field"`
	Chosen Side   `json:"chosen"`
	Value  any    `json:"value,omitempty"`
}

// ConflictResolution records how a conflict was resolved (container
// integration_sync_conflicts, partition "tenantId"). Its id is the conflict
// id, so creating it if absent is how a resolver claims the conflict.
type ConflictResolution struct {
	ID         string            `json:"id"`
	TenantID   string            `json:"tenantId"`
	ConflictID string            `json:"conflictId"`
	Strategy   ConflictStrategy  `json:"strategy"`
	Decisions  []FieldDecision   `json:"decisions,omitempty"`
	Actor      string            `json:"actor"`
	Before     map[string]any    `json:"before,omitempty"`
	After      map[string]any    `json:"after,omitempty"`
	Outcome    ResolutionOutcome `json:"outcome"`
	Reason     string            `json:"reason,omitempty"`
	ResolvedAt time.Time         `json:"resolvedAt"`
	CreatedAt  time.Time         `json:"createdAt"`
	UpdatedAt  time.Time         `json:"updatedAt"`
}

func (r ConflictResolution) Key() (partitionKey, id string) { return r.TenantID, r.ID }
func (ConflictResolution) Container() string                { return ContainerSyncConflicts }
