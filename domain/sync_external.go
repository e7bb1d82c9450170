package domain

import (
	"encoding/json"
	"fmt"
	"time"
)

// ModifiedAt reads the record's cursor field as a time in UTC: the external
// side's modification time. Zero when the entity has no cursor field or the
// record has no readable value there (a missing time only weakens
// newest-wins; it never fails a record).
func (e EntityDef) ModifiedAt(raw map[string]any) time.Time {
	if e.CursorField == "" || raw == nil {
		return time.Time{}
	}
	v, ok := GetPath(raw, e.CursorField)
	if !ok {
		return time.Time{}
	}
	var s string
	switch v := v.(type) {
	case string:
		s = v
	case json.Number:
		s = v.String()
	case float64:
		s = fmt.Sprint(int64(v))
	default:
		return time.Time{}
	}
	t, err := e.CursorFormat.Parse(s)
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

// ExternalSideRecord turns a record read from the external API into the
// external side of a sync: in Castiel's shape (mapping applied
// MapToInternal) and hashed, so its hash compares with the sync state's and
// with Castiel's side. deleted: the API reports the record gone (a tombstone
// of its deleted-records endpoint, or its deleted flag set); the result is
// then a deletion that keeps the record's modification time. The sync run
// and the conflict resolver both build the external side with it, so the
// two always agree on what a version's hash is.
//
// A record the mapping cannot convert is a *MappingError (ErrMapping).
func ExternalSideRecord(e EntityDef, mapping []FieldMapping, raw map[string]any, deleted bool) (*SideRecord, error) {
	at := e.ModifiedAt(raw)
	if deleted {
		return &SideRecord{Deleted: true, ModifiedAt: at}, nil
	}
	return externalSide(mapping, raw, at, false)
}

// ExternalSideRecordTaking is ExternalSideRecord for a record the caller
// hands over (a page's record a sync run only maps): it is mapped in place
// instead of copied first, and left in no particular state on an error.
func ExternalSideRecordTaking(e EntityDef, mapping []FieldMapping, raw map[string]any, deleted bool) (*SideRecord, error) {
	at := e.ModifiedAt(raw)
	if deleted {
		return &SideRecord{Deleted: true, ModifiedAt: at}, nil
	}
	// In place only where a copy would be raw as it is.
	return externalSide(mapping, raw, at, raw != nil && keptByClone(raw))
}

func externalSide(mapping []FieldMapping, raw map[string]any, at time.Time, inPlace bool) (*SideRecord, error) {
	mapped, err := applyMapping(mapping, raw, MapToInternal, inPlace)
	if err != nil {
		return nil, err
	}
	return &SideRecord{Data: mapped, Hash: ContentHash(mapped), ModifiedAt: at}, nil
}
