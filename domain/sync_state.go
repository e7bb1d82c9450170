package domain

import "time"

// RecordState is what a sync task remembers about one record between runs
// (container integration_sync_state, partition "syncTaskId"): the content hash
// of each side when both last agreed and the agreed record itself (the base of
// a three-way merge). A run compares each side's current hash with these to
// tell who changed what.
//
// Both hashes are ContentHash of the record in Castiel's shape (the external
// record after ApplyMapping to internal), so the hashes of two sides that hold
// the same record are equal.
type RecordState struct {
	ID                 string           `json:"id"` // RecordStateID(SyncTaskID, RecordKey)
	SyncTaskID         string           `json:"syncTaskId"`
	TenantID           string           `json:"tenantId"`
	RecordKey          string           `json:"recordKey"`
	ExternalHash       string           `json:"externalHash,omitempty"`
	InternalHash       string           `json:"internalHash,omitempty"`
	BaseSnapshot       map[string]any   `json:"baseSnapshot,omitempty"` // the last agreed record, Castiel's shape
	ExternalModifiedAt time.Time        `json:"externalModifiedAt,omitzero"`
	InternalModifiedAt time.Time        `json:"internalModifiedAt,omitzero"`
	LastSyncedAt       time.Time        `json:"lastSyncedAt,omitzero"`
	Deleted            bool             `json:"deleted,omitempty"` // both sides agreed the record is gone
	Conflict           *PendingConflict `json:"conflict,omitempty"`
}

// PendingConflict marks a record whose conflict is recorded and not yet
// resolved, with the versions it was detected on: a later run that sees the
// same versions records nothing new, one that sees newer versions supersedes it.
type PendingConflict struct {
	ConflictID   string    `json:"conflictId"`
	ExternalHash string    `json:"externalHash,omitempty"` // "" : deleted
	InternalHash string    `json:"internalHash,omitempty"`
	DetectedAt   time.Time `json:"detectedAt"`
}

func (s RecordState) Key() (partitionKey, id string) { return s.SyncTaskID, s.ID }

// RecordStateID identifies the state of one record of one sync task. The
// task is part of it so ids are unique across partitions too. The ids of a
// task's states sort like their record keys (OrderedID), so the states of a
// page of sequential keys share the embedded store's pages.
func RecordStateID(syncTaskID, recordKey string) string {
	return OrderedID("rst", []string{syncTaskID}, recordKey)
}

// RecordStateIDs returns RecordStateID(syncTaskID, ·), for many records of
// the task.
func RecordStateIDs(syncTaskID string) func(recordKey string) string {
	return OrderedIDs("rst", []string{syncTaskID})
}

// NewRecordState returns the empty state of a record never synced.
func NewRecordState(tenantID, syncTaskID, recordKey string) *RecordState {
	return &RecordState{
		ID:         RecordStateID(syncTaskID, recordKey),
		SyncTaskID: syncTaskID,
		TenantID:   tenantID,
		RecordKey:  recordKey,
	}
}

// SideRecord is one side's current version of a record, in Castiel's shape.
//
// A nil *SideRecord means "no news from this side": an incremental run did not
// see the record, so it is taken to be the version last seen (the one a pending
// conflict was raised on, else the agreed one; absent if never synced). A
// deletion must be reported explicitly with Deleted
// (a deleted flag, a deleted-records endpoint, a shard tombstone, or a record
// missing from a completed full-refresh run).
type SideRecord struct {
	Data       map[string]any
	Hash       string // ContentHash(Data, volatile...); computed from Data when empty
	ModifiedAt time.Time
	Deleted    bool
}

// Present reports whether the side holds the record.
func (r *SideRecord) Present() bool { return r != nil && !r.Deleted }

// ContentHash returns the record's hash ("" for a deleted record).
func (r *SideRecord) ContentHash() string {
	switch {
	case !r.Present():
		return ""
	case r.Hash != "":
		return r.Hash
	default:
		return ContentHash(r.Data)
	}
}

// Change is what one side did to a record since the last sync.
type Change string

const (
	ChangeNone    Change = "none"
	ChangeAdded   Change = "added"
	ChangeUpdated Change = "updated"
	ChangeDeleted Change = "deleted"
)

// SyncAction is what a run does about one record.
type SyncAction string

const (
	ActionUnchanged  SyncAction = "unchanged"
	ActionPullAdd    SyncAction = "pull_add"    // create in Castiel
	ActionPullUpdate SyncAction = "pull_update" // overwrite in Castiel
	ActionPullDelete SyncAction = "pull_delete" // delete in Castiel
	ActionPushAdd    SyncAction = "push_add"    // create in the external system
	ActionPushUpdate SyncAction = "push_update"
	ActionPushDelete SyncAction = "push_delete"
	ActionConflict   SyncAction = "conflict" // both sides changed differently: leave the record alone
	// ActionConverged: both sides made the same change (the same content, or
	// both deleted). Nothing is written; the state records the new agreement.
	ActionConverged SyncAction = "converged"
)

// Writes reports whether the action writes to one of the sides.
func (a SyncAction) Writes() bool {
	switch a {
	case ActionPullAdd, ActionPullUpdate, ActionPullDelete, ActionPushAdd, ActionPushUpdate, ActionPushDelete:
		return true
	}
	return false
}

// Decision is the outcome of Classify for one record.
type Decision struct {
	Action   SyncAction
	External Change       // what the external side did since the last sync
	Internal Change       // what the Castiel side did
	Conflict ConflictKind // set when Action is ActionConflict

	// Blocked is the write the task's direction forbade (a push on a pull-only
	// task, a pull on a push-only one); Action is then ActionUnchanged and the
	// state must stay as it is, so the change is still seen on later runs.
	Blocked SyncAction

	// Pending: Action is ActionConflict and the same conflict (same versions of
	// both sides) is already recorded in the state; record nothing new.
	Pending bool

	// Supersedes is the id of the recorded conflict this decision replaces:
	// either side changed again (a new conflict), or the sides no longer
	// conflict. The caller marks that conflict superseded and clears
	// RecordState.Conflict (Agree and MarkConflict do that too).
	Supersedes string
}

// Classify decides what a run does about one record, from the state at the
// last sync and each side's current version (see SideRecord for nil).
//
// A side changed when its hash differs from the state's hash for that side
// (added when the state has none for it). Only one side changed: that change
// is applied to the other side, if the task's direction allows it. Both
// changed: the same content (or both deleted) converges; anything else is a
// conflict, whatever the direction, so that an edit in a one-way task's target
// is never silently overwritten (the conflict policy decides; external_wins
// gives a pull-only task plain overwrite semantics).
//
// A pull or push can be decided on a nil side (its pending conflict version
// became the only change after the other side went back): the caller then
// reads that side's record, or takes it from the conflict, before writing.
func Classify(dir SyncDirection, state *RecordState, external, internal *SideRecord) Decision {
	extWas, intWas := state.agreedHash(true), state.agreedHash(false)
	extNow, intNow := state.currentHash(external, true), state.currentHash(internal, false)
	d := Decision{External: change(extWas, extNow), Internal: change(intWas, intNow)}
	switch {
	case d.External == ChangeNone && d.Internal == ChangeNone:
		d.Action = ActionUnchanged
	case d.Internal == ChangeNone:
		d.Action = pullAction(d.External)
	case d.External == ChangeNone:
		d.Action = pushAction(d.Internal)
	case extNow == intNow:
		d.Action = ActionConverged // both deleted, or both made the same edit
	default:
		d.Action = ActionConflict
		d.Conflict = conflictKind(d.External, d.Internal)
	}

	if state != nil && state.Conflict != nil {
		pc := state.Conflict
		if d.Action == ActionConflict && pc.ExternalHash == extNow && pc.InternalHash == intNow {
			d.Pending = true
		} else {
			d.Supersedes = pc.ConflictID
		}
	}

	switch {
	case dir == DirectionPull && isPush(d.Action), dir == DirectionPush && isPull(d.Action):
		d.Blocked, d.Action = d.Action, ActionUnchanged
	}
	return d
}

// change compares a side's hash at the last agreement with its hash now; an
// empty hash means the side had, or has, no record.
func change(was, now string) Change {
	switch {
	case now == was:
		return ChangeNone
	case was == "":
		return ChangeAdded
	case now == "":
		return ChangeDeleted
	default:
		return ChangeUpdated
	}
}

// agreedHash is a side's hash at the last agreement ("" if none).
func (s *RecordState) agreedHash(external bool) string {
	switch {
	case s == nil:
		return ""
	case external:
		return s.ExternalHash
	default:
		return s.InternalHash
	}
}

// currentHash is a side's hash now. A nil side (no news) still holds the
// version last seen: the one a pending conflict was raised on, else the agreed
// one. Without the first, an incremental run that no longer sees an external
// edit in conflict would take the Castiel edit as the only change and push it
// over the external one.
func (s *RecordState) currentHash(side *SideRecord, external bool) string {
	switch {
	case side != nil:
		return side.ContentHash()
	case s != nil && s.Conflict != nil && external:
		return s.Conflict.ExternalHash
	case s != nil && s.Conflict != nil:
		return s.Conflict.InternalHash
	default:
		return s.agreedHash(external)
	}
}

func pullAction(c Change) SyncAction {
	switch c {
	case ChangeAdded:
		return ActionPullAdd
	case ChangeUpdated:
		return ActionPullUpdate
	default:
		return ActionPullDelete
	}
}

func pushAction(c Change) SyncAction {
	switch c {
	case ChangeAdded:
		return ActionPushAdd
	case ChangeUpdated:
		return ActionPushUpdate
	default:
		return ActionPushDelete
	}
}

func isPull(a SyncAction) bool {
	return a == ActionPullAdd || a == ActionPullUpdate || a == ActionPullDelete
}

func isPush(a SyncAction) bool {
	return a == ActionPushAdd || a == ActionPushUpdate || a == ActionPushDelete
}

// conflictKind names a conflict by what each side did. An add counts as an
// update (two sides created the same key differently).
func conflictKind(external, internal Change) ConflictKind {
	switch {
	case external == ChangeDeleted:
		return ConflictDeleteUpdate
	case internal == ChangeDeleted:
		return ConflictUpdateDelete
	default:
		return ConflictUpdateUpdate
	}
}

// Agree records that both sides now hold the same record, or are both
// deleted: after a pull or push was applied, after converging, or after a
// conflict was resolved. external and internal are the versions now on each
// side (for a write, the version written; nil for a side that did not change,
// which keeps what the state holds for it). The base snapshot becomes the
// internal version. Any pending conflict is cleared.
func (s *RecordState) Agree(external, internal *SideRecord, now time.Time) {
	s.agree(external, internal, now, cloneMap)
}

// AgreeTaking is Agree for an internal side the caller hands over: the base
// snapshot is internal's Data itself, not a copy (unless a copy would not
// keep it as it is). For a side nobody else holds (the copy a shard store
// returns of the record it just wrote), which a pull would otherwise copy
// once more for every record.
func (s *RecordState) AgreeTaking(external, internal *SideRecord, now time.Time) {
	s.agree(external, internal, now, func(m map[string]any) map[string]any {
		if m == nil || !keptByClone(m) {
			return cloneMap(m) // what Agree keeps of it
		}
		return m
	})
}

func (s *RecordState) agree(external, internal *SideRecord, now time.Time, internalSnapshot func(map[string]any) map[string]any) {
	extHash, intHash := s.currentHash(external, true), s.currentHash(internal, false)
	switch {
	case internal.Present():
		s.BaseSnapshot = internalSnapshot(internal.Data)
	case external.Present():
		s.BaseSnapshot = cloneMap(external.Data)
	case internal != nil && external != nil:
		s.BaseSnapshot = nil // both deleted
	}
	s.ExternalHash, s.InternalHash = extHash, intHash
	s.Deleted = extHash == "" && intHash == ""
	if external != nil && !external.ModifiedAt.IsZero() {
		s.ExternalModifiedAt = external.ModifiedAt
	}
	if internal != nil && !internal.ModifiedAt.IsZero() {
		s.InternalModifiedAt = internal.ModifiedAt
	}
	s.LastSyncedAt = now
	s.Conflict = nil
}

// MarkConflict records that conflictID was raised for these versions (nil:
// unchanged, as for Classify), so later runs that see the same versions do not
// raise it again. The agreed hashes and base snapshot stay: they are the base
// of the three-way merge.
func (s *RecordState) MarkConflict(conflictID string, external, internal *SideRecord, now time.Time) {
	s.Conflict = &PendingConflict{
		ConflictID:   conflictID,
		ExternalHash: s.currentHash(external, true),
		InternalHash: s.currentHash(internal, false),
		DetectedAt:   now,
	}
}

// EncodeJSON returns s encoded exactly as json.Marshal encodes it, without
// reflection (a run writes the state of every record it syncs).
func (s *RecordState) EncodeJSON() ([]byte, error) {
	return s.AppendJSON(make([]byte, 0, 1024)) // a state with a small record's snapshot fits
}

// AppendJSON appends s as EncodeJSON encodes it: a caller encoding many
// states reuses one buffer.
func (s *RecordState) AppendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"id":`...)
	b = AppendJSONString(b, s.ID)
	b = append(b, `,"syncTaskId":`...)
	b = AppendJSONString(b, s.SyncTaskID)
	b = append(b, `,"tenantId":`...)
	b = AppendJSONString(b, s.TenantID)
	b = append(b, `,"recordKey":`...)
	b = AppendJSONString(b, s.RecordKey)
	if s.ExternalHash != "" {
		b = append(b, `,"externalHash":`...)
		b = AppendJSONString(b, s.ExternalHash)
	}
	if s.InternalHash != "" {
		b = append(b, `,"internalHash":`...)
		b = AppendJSONString(b, s.InternalHash)
	}
	var err error
	if len(s.BaseSnapshot) > 0 {
		b = append(b, `,"baseSnapshot":`...)
		if b, err = AppendJSON(b, s.BaseSnapshot); err != nil {
			return nil, err
		}
	}
	for _, t := range []struct {
		name string
		at   time.Time
	}{{`,"externalModifiedAt":`, s.ExternalModifiedAt}, {`,"internalModifiedAt":`, s.InternalModifiedAt}, {`,"lastSyncedAt":`, s.LastSyncedAt}} {
		if t.at.IsZero() {
			continue
		}
		b = append(b, t.name...)
		if b, err = appendJSONTime(b, t.at); err != nil {
			return nil, err
		}
	}
	if s.Deleted {
		b = append(b, `,"deleted":true`...)
	}
	if c := s.Conflict; c != nil {
		b = append(b, `,"conflict":{"conflictId":`...)
		b = AppendJSONString(b, c.ConflictID)
		if c.ExternalHash != "" {
			b = append(b, `,"externalHash":`...)
			b = AppendJSONString(b, c.ExternalHash)
		}
		if c.InternalHash != "" {
			b = append(b, `,"internalHash":`...)
			b = AppendJSONString(b, c.InternalHash)
		}
		b = append(b, `,"detectedAt":`...)
		if b, err = appendJSONTime(b, c.DetectedAt); err != nil {
			return nil, err
		}
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// appendJSONTime writes t as its MarshalJSON does (which also refuses what
// RFC 3339 cannot hold): times in UTC, what runs write, directly.
func appendJSONTime(b []byte, t time.Time) ([]byte, error) {
	if _, off := t.Zone(); off != 0 || t.Year() < 0 || t.Year() > 9999 {
		raw, err := t.MarshalJSON()
		if err != nil {
			return nil, err
		}
		return append(b, raw...), nil
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}
