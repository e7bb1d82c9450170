package domain

import "time"

type ExecutionKind string

const (
	ExecutionWebhookDelivery ExecutionKind = "webhook_delivery" // one delivery attempt
	ExecutionSyncRun         ExecutionKind = "sync_run"
)

type ExecutionStatus string

// Delivery attempt statuses.
const (
	ExecPending        ExecutionStatus = "pending"
	ExecDelivered      ExecutionStatus = "delivered"
	ExecFailedRetrying ExecutionStatus = "failed_retrying"
	ExecExhausted      ExecutionStatus = "exhausted"
	ExecNoMatch        ExecutionStatus = "no_match" // the endpoint no longer accepts the event
)

// Sync run statuses.
const (
	ExecRunning             ExecutionStatus = "running"
	ExecCompleted           ExecutionStatus = "completed"
	ExecCompletedWithErrors ExecutionStatus = "completed_with_errors"
	ExecFailed              ExecutionStatus = "failed"
	// ExecSkipped: the run never started because another run of the task held
	// its lease (the trigger was coalesced into that run) or the task is paused.
	ExecSkipped ExecutionStatus = "skipped"
)

// Terminal reports whether no further change to the execution is expected.
func (s ExecutionStatus) Terminal() bool {
	switch s {
	case ExecDelivered, ExecExhausted, ExecNoMatch, ExecCompleted, ExecCompletedWithErrors, ExecFailed, ExecSkipped:
		return true
	}
	return false
}

// ValidFor reports whether the status belongs to the kind.
func (s ExecutionStatus) ValidFor(k ExecutionKind) bool {
	switch k {
	case ExecutionWebhookDelivery:
		return s == ExecPending || s == ExecDelivered || s == ExecFailedRetrying || s == ExecExhausted || s == ExecNoMatch
	case ExecutionSyncRun:
		return s == ExecRunning || s == ExecCompleted || s == ExecCompletedWithErrors || s == ExecFailed || s == ExecSkipped
	}
	return false
}

// SyncStats counts what a sync run did to records.
type SyncStats struct {
	Added     int `json:"added"`
	Updated   int `json:"updated"`
	Deleted   int `json:"deleted"`
	Unchanged int `json:"unchanged"`
	Conflicts int `json:"conflicts"`
	Failed    int `json:"failed"`
}

// Execution records one delivery attempt or one sync run (container
// integration_executions, partition "tenantId"). RequestHeaders must have
// passed RedactHeaders; ResponseBody is truncated by the writer. TTL is the
// Cosmos per-item time to live in seconds, set by the store from retention.
type Execution struct {
	ID       string          `json:"id"`
	TenantID string          `json:"tenantId"`
	Kind     ExecutionKind   `json:"kind"`
	Status   ExecutionStatus `json:"status"`

	// webhook_delivery
	WebhookID      string            `json:"webhookId,omitempty"`
	DeliveryID     string            `json:"deliveryId,omitempty"`
	EventID        string            `json:"eventId,omitempty"`
	EventType      string            `json:"eventType,omitempty"`
	Attempt        int               `json:"attempt,omitempty"`
	RequestHeaders map[string]string `json:"requestHeaders,omitempty"`
	ResponseStatus int               `json:"responseStatus,omitempty"`
	ResponseBody   string            `json:"responseBody,omitempty"`
	NextAttemptAt  *time.Time        `json:"nextAttemptAt,omitempty"`

	// sync_run
	SyncTaskID string           `json:"syncTaskId,omitempty"`
	Stats      *SyncStats       `json:"stats,omitempty"`
	Sync       *SyncRunProgress `json:"sync,omitempty"` // see syncrun_progress.go

	DurationMs int64      `json:"durationMs"`
	ErrorClass string     `json:"errorClass,omitempty"`
	Error      string     `json:"error,omitempty"`
	StartedAt  time.Time  `json:"startedAt"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	TTL        int        `json:"ttl,omitempty"`
	CreatedAt  time.Time  `json:"createdAt"`
	UpdatedAt  time.Time  `json:"updatedAt"`
}

func (e Execution) Key() (partitionKey, id string) { return e.TenantID, e.ID }
func (Execution) Container() string                { return ContainerExecutions }
