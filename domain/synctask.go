package domain

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

type SyncDirection string

const (
	DirectionPull          SyncDirection = "pull" // external -> Castiel
	DirectionPush          SyncDirection = "push" // Castiel -> external
	DirectionBidirectional SyncDirection = "bidirectional"
)

type SyncMode string

const (
	ModeIncremental SyncMode = "incremental" // changes since the checkpoint
	ModeFullRefresh SyncMode = "full_refresh"
)

type Convert string

const (
	ConvertNone   Convert = ""
	ConvertString Convert = "string"
	ConvertNumber Convert = "number"
	ConvertBool   Convert = "bool"
	ConvertTime   Convert = "time"
)

type ConflictStrategy string

const (
	StrategyExternalWins   ConflictStrategy = "external_wins"
	StrategyInternalWins   ConflictStrategy = "internal_wins"
	StrategyNewestWins     ConflictStrategy = "newest_wins"
	StrategyMerge          ConflictStrategy = "merge" // field by field against the base version
	StrategyPreferNonEmpty ConflictStrategy = "prefer_non_empty"
	StrategyManual         ConflictStrategy = "manual" // escalate to a person
)

// ConflictStrategies lists every strategy.
func ConflictStrategies() []ConflictStrategy {
	return []ConflictStrategy{StrategyExternalWins, StrategyInternalWins, StrategyNewestWins, StrategyMerge, StrategyPreferNonEmpty, StrategyManual}
}

// SyncTask defines what to sync and how (container integration_sync_tasks,
// partition "tenantId").
type SyncTask struct {
	ID             string         `json:"id"`
	TenantID       string         `json:"tenantId"`
	IntegrationID  string         `json:"integrationId"`
	Entity         string         `json:"entity"` // an EntityDef name of the integration's provider
	Direction      SyncDirection  `json:"direction"`
	Mode           SyncMode       `json:"mode"`
	Schedule       string         `json:"schedule,omitempty"` // Go duration or 5-field UTC cron (see ParseSchedule); empty: manual only
	Mapping        []FieldMapping `json:"mapping"`
	ConflictPolicy ConflictPolicy `json:"conflictPolicy"`
	Checkpoint     Checkpoint     `json:"checkpoint"`
	Enabled        bool           `json:"enabled"`
	CreatedAt      time.Time      `json:"createdAt"`
	UpdatedAt      time.Time      `json:"updatedAt"`
}

func (t SyncTask) Key() (partitionKey, id string) { return t.TenantID, t.ID }
func (SyncTask) Container() string                { return ContainerSyncTasks }

// Interval returns the interval of a duration schedule; 0 means manual or
// cron (see ParsedSchedule). Call after Validate.
func (t SyncTask) Interval() time.Duration {
	return t.ParsedSchedule().Interval()
}

// ParsedSchedule returns the parsed schedule; an invalid one reads as manual.
// Call after Validate.
func (t SyncTask) ParsedSchedule() Schedule {
	s, _ := ParseSchedule(t.Schedule)
	return s
}

// FieldMapping maps one external field (Source) to one Castiel field (Target),
// both dotted paths. A Constant sets Target without a Source; Ignore drops
// Source from the sync.
type FieldMapping struct {
	Source   string  `json:"source,omitempty"`
	Target   string  `json:"target,omitempty"`
	Constant any     `json:"constant,omitempty"`
	Convert  Convert `json:"convert,omitempty"`
	Ignore   bool    `json:"ignore,omitempty"`
}

// ConflictPolicy says how conflicts found by the task are resolved.
type ConflictPolicy struct {
	Strategy         ConflictStrategy            `json:"strategy"`
	FieldOverrides   map[string]ConflictStrategy `json:"fieldOverrides,omitempty"`   // by target field
	DeleteEditPolicy ConflictStrategy            `json:"deleteEditPolicy,omitempty"` // a delete against an edit; "" means manual
	ClockSkewMargin  string                      `json:"clockSkewMargin,omitempty"`  // Go duration; newest_wins escalates closer than this
}

// StrategyFor returns the strategy for a target field.
func (p ConflictPolicy) StrategyFor(field string) ConflictStrategy {
	if s, ok := p.FieldOverrides[field]; ok {
		return s
	}
	return p.Strategy
}

// DeleteEdit returns the delete-versus-edit strategy, manual by default.
func (p ConflictPolicy) DeleteEdit() ConflictStrategy {
	if p.DeleteEditPolicy == "" {
		return StrategyManual
	}
	return p.DeleteEditPolicy
}

// SkewMargin returns the parsed clock skew margin (0 when unset). Call after Validate.
func (p ConflictPolicy) SkewMargin() time.Duration {
	d, _ := time.ParseDuration(p.ClockSkewMargin)
	return d
}

// Checkpoint is where the last successful incremental run stopped.
type Checkpoint struct {
	Cursor    string    `json:"cursor,omitempty"`
	UpdatedAt time.Time `json:"updatedAt"`
}

func (t SyncTask) Validate() error {
	var ve ValidationError
	checkID(&ve, "id", t.ID)
	checkID(&ve, "tenantId", t.TenantID)
	checkID(&ve, "integrationId", t.IntegrationID)
	if !isIdent(t.Entity) {
		ve.Add("entity", "must name an entity of the provider (a letter, then letters, digits, '_' or '-')")
	}
	checkEnum(&ve, "direction", t.Direction, DirectionPull, DirectionPush, DirectionBidirectional)
	checkEnum(&ve, "mode", t.Mode, ModeIncremental, ModeFullRefresh)
	if _, err := ParseSchedule(t.Schedule); err != nil {
		ve.Add("schedule", scheduleMessage(err))
	}
	if len(t.Mapping) > MaxMappings {
		ve.Addf("mapping", "must have at most %d entries", MaxMappings)
	}
	targets := make(map[string]int, len(t.Mapping))
	for i, m := range t.Mapping {
		field := indexField("mapping", i)
		ve.Merge(field, m.Validate())
		if m.Ignore || m.Target == "" {
			continue
		}
		if j, dup := targets[m.Target]; dup {
			ve.Addf(field+".target", "duplicates the target of mapping[%d]", j)
			continue
		}
		targets[m.Target] = i
	}
	ve.Merge("conflictPolicy", t.ConflictPolicy.Validate())
	return ve.Err()
}

// ValidateFor checks the task and that the provider can serve it.
func (t SyncTask) ValidateFor(p Provider) error {
	var ve ValidationError
	ve.Merge("", t.Validate())
	e, ok := p.Entity(t.Entity)
	if !ok {
		ve.Addf("entity", "provider %q has no entity %q", p.ID, t.Entity)
		return ve.Err()
	}
	if t.Mode == ModeIncremental && !e.SupportsIncremental() {
		ve.Addf("mode", "entity %q has no incremental cursor; use full_refresh", t.Entity)
	}
	if t.Direction != DirectionPull && e.Create == nil && e.Update == nil {
		ve.Addf("direction", "entity %q cannot be written; use pull", t.Entity)
	}
	return ve.Err()
}

func (m FieldMapping) Validate() error {
	var ve ValidationError
	switch {
	case m.Ignore:
		checkDottedPath(&ve, "source", m.Source, true)
		if m.Target != "" || m.Constant != nil || m.Convert != "" {
			ve.Add("ignore", "an ignored field takes only a source")
		}
	case m.Constant != nil:
		if m.Source != "" {
			ve.Add("source", "must be empty when a constant is set")
		}
		checkDottedPath(&ve, "target", m.Target, true)
	default:
		checkDottedPath(&ve, "source", m.Source, true)
		checkDottedPath(&ve, "target", m.Target, true)
	}
	checkEnum(&ve, "convert", m.Convert, Converts()...)
	return ve.Err()
}

func (p ConflictPolicy) Validate() error {
	var ve ValidationError
	all := ConflictStrategies()
	checkEnum(&ve, "strategy", p.Strategy, all...)
	for _, k := range slices.Sorted(maps.Keys(p.FieldOverrides)) { // sorted: a stable error list
		field := fmt.Sprintf("fieldOverrides[%q]", k)
		checkDottedPath(&ve, field, k, true)
		checkEnum(&ve, field, p.FieldOverrides[k], all...)
	}
	if p.DeleteEditPolicy != "" {
		// merge and prefer_non_empty have no meaning when one side is gone.
		checkEnum(&ve, "deleteEditPolicy", p.DeleteEditPolicy, StrategyExternalWins, StrategyInternalWins, StrategyNewestWins, StrategyManual)
	}
	checkDuration(&ve, "clockSkewMargin", p.ClockSkewMargin, 0, MaxClockSkewMargin)
	return ve.Err()
}

// Reset forgets the task's checkpoint so the next run re-reads everything from
// the start; the per-record sync state is kept, so only real changes are
// written and concurrent edits are still detected.
func (t *SyncTask) Reset(now time.Time) {
	t.Checkpoint = Checkpoint{UpdatedAt: now}
	t.UpdatedAt = now
}
