package domain

import (
	"fmt"
	"strings"
	"time"
)

// SyncRunPhase is the step a sync run is in; a resumed run continues it.
type SyncRunPhase string

const (
	PhasePull        SyncRunPhase = "pull"         // paging the entity's list endpoint
	PhasePullDeleted SyncRunPhase = "pull_deleted" // paging its deleted-records endpoint (incremental runs)
	PhasePush        SyncRunPhase = "push"         // walking the Castiel shard for local changes
	PhaseSweep       SyncRunPhase = "sweep"        // a run that read everything: records it did not see were deleted
	PhaseDone        SyncRunPhase = "done"         // every record handled; only the bookkeeping is left
)

// SyncRunProgress is what a sync run records on its execution: where it is
// (so a redelivered run resumes there instead of starting over) and what it
// did so far. It is saved after every page.
type SyncRunProgress struct {
	IntegrationID string        `json:"integrationId,omitempty"`
	Entity        string        `json:"entity,omitempty"`
	Direction     SyncDirection `json:"direction,omitempty"`
	Mode          SyncMode      `json:"mode,omitempty"`
	Trigger       SyncTrigger   `json:"trigger,omitempty"`

	// Since is the task's checkpoint cursor the run reads changes from ("":
	// everything). FromScratch runs read every record, so records they did
	// not see are deletions (swept only when the whole read succeeded).
	Since       string `json:"since,omitempty"`
	FromScratch bool   `json:"fromScratch,omitempty"`
	// NothingToSweep: a FromScratch run that began with no sync state at all
	// (a task's first run) can find no deletion, so it neither records the
	// keys it sees nor sweeps.
	NothingToSweep bool `json:"nothingToSweep,omitempty"`
	// CheckpointAt is the task checkpoint's UpdatedAt when the run began: a
	// run only moves the checkpoint if nobody (a reset) changed it meanwhile.
	CheckpointAt time.Time `json:"checkpointAt,omitzero"`

	Phase     SyncRunPhase `json:"phase,omitempty"`
	PageToken string       `json:"pageToken,omitempty"` // the next page of the phase; "" its first
	MaxCursor string       `json:"maxCursor,omitempty"` // highest cursor value of the list pages read
	SeenPages int          `json:"seenPages,omitempty"` // FromScratch: pages whose keys are recorded for the sweep

	Pages             int    `json:"pages"`
	Read              int    `json:"read"` // records read from the external API
	APICalls          int64  `json:"apiCalls"`
	Retries           int64  `json:"retries"`
	Throttled         int64  `json:"throttled"`
	RateLimitWaits    int64  `json:"rateLimitWaits"`
	RateLimitWaitMs   int64  `json:"rateLimitWaitMs"`
	TokenRefreshes    int64  `json:"tokenRefreshes"`
	Attempts          int    `json:"attempts"` // deliveries that worked on the run: 1 + resumptions
	LastTransientFail string `json:"lastTransientError,omitempty"`

	// Errors are the first failed records (the count is Stats.Failed).
	Errors []SyncRecordError `json:"errors,omitempty"`
	// CoalescedInto is the run that held the lease when this one was skipped.
	CoalescedInto string `json:"coalescedInto,omitempty"`
}

// SyncRecordError is one record a run could not sync, and why.
type SyncRecordError struct {
	RecordKey string     `json:"recordKey,omitempty"` // "" when the record had no usable key
	Action    SyncAction `json:"action,omitempty"`
	Error     string     `json:"error"`
}

// MaxSyncRecordErrors bounds SyncRunProgress.Errors.
const MaxSyncRecordErrors = 20

// AddRecordError keeps e among the first MaxSyncRecordErrors errors.
func (p *SyncRunProgress) AddRecordError(e SyncRecordError) {
	if len(p.Errors) < MaxSyncRecordErrors {
		if len(e.Error) > MaxDescriptionLength {
			e.Error = strings.ToValidUTF8(e.Error[:MaxDescriptionLength], "")
		}
		p.Errors = append(p.Errors, e)
	}
}

// Add adds o's counts to s.
func (s *SyncStats) Add(o SyncStats) {
	s.Added += o.Added
	s.Updated += o.Updated
	s.Deleted += o.Deleted
	s.Unchanged += o.Unchanged
	s.Conflicts += o.Conflicts
	s.Failed += o.Failed
}

// Count adds one record's outcome to s.
func (s *SyncStats) Count(a SyncAction) {
	switch a {
	case ActionPullAdd, ActionPushAdd:
		s.Added++
	case ActionPullUpdate, ActionPushUpdate:
		s.Updated++
	case ActionPullDelete, ActionPushDelete:
		s.Deleted++
	case ActionConflict:
		s.Conflicts++
	default:
		s.Unchanged++
	}
}

// IngressRunID identifies the run an ingress post triggers for one task, so a
// redelivered ingress message finds the run it already requested.
func IngressRunID(ingressID, syncTaskID string) string {
	return DeterministicID("run", "ingress", ingressID, syncTaskID)
}

// SyncLeaseID is the id of the lease document that lets one run of a task
// proceed at a time (in the sync state container, the task's partition).
func SyncLeaseID(syncTaskID string) string {
	return DeterministicID("lease", syncTaskID)
}

// SyncSeenID is the id of the document recording which keys page n of a
// from-scratch run saw, for the deletion sweep at its end.
func SyncSeenID(executionID string, page int) string {
	return DeterministicID("seen", executionID, fmt.Sprint(page))
}

// CursorAfter reports whether cursor a is later than b in format f; an
// unparsable or empty value is never later, and any value is later than "".
func CursorAfter(f TimeFormat, a, b string) bool {
	if a == "" {
		return false
	}
	ta, err := f.Parse(a)
	if err != nil {
		return false
	}
	if b == "" {
		return true
	}
	tb, err := f.Parse(b)
	if err != nil {
		return true
	}
	return ta.After(tb)
}

// SetPath writes v at a dotted path of rec, creating objects on the way
// (e.g. the primary key of a record pushed to an external API).
func SetPath(rec map[string]any, path string, v any) error {
	if !validPath(path) {
		return fmt.Errorf("set %q: not a dotted path", path)
	}
	return setPath(rec, splitPath(path), v)
}

// GetPath reads a dotted path of rec.
func GetPath(rec map[string]any, path string) (any, bool) {
	return getPath(rec, splitPath(path))
}
