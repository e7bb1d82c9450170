package syncrun

import (
	"encoding/json"

	"github.com/castiel/integration-manager/store/docfields"
)

// The state documents of a task are read on every run, and the two hot
// readers (the unchanged check of a re-read, the deletion sweep) need a few
// top-level fields of each, not its base snapshot. decodeStateDoc picks those
// out of the stored body without decoding the rest; a body it cannot read
// that way (escaped names, not an object) goes through encoding/json.

// decodeStateDoc fills d from the top-level fields of body.
func decodeStateDoc(body []byte, d *stateDoc) error {
	var out stateDoc
	var err error
	ok := docfields.TopLevel(body, func(key, value []byte) bool {
		switch string(key) {
		case "recordKey":
			out.RecordKey, err = docfields.String(value)
		case "externalHash":
			out.ExternalHash, err = docfields.String(value)
		case "kind":
			out.Kind, err = docfields.String(value)
		case "executionId":
			out.ExecutionID, err = docfields.String(value)
		case "deleted":
			err = json.Unmarshal(value, &out.Deleted)
		case "conflict":
			if !docfields.IsNull(value) {
				out.Conflict = nil
				err = json.Unmarshal(value, &out.Conflict)
			}
		}
		return err == nil
	})
	if err != nil || !ok {
		out = stateDoc{}
		if err := json.Unmarshal(body, &out); err != nil {
			return err
		}
	}
	*d = out
	return nil
}

// decodeStateHead reads what telling an unchanged record needs.
func decodeStateHead(body []byte) (stateHead, error) {
	var h stateHead
	var err error
	ok := docfields.TopLevel(body, func(key, value []byte) bool {
		switch string(key) {
		case "externalHash":
			h.ExternalHash, err = docfields.String(value)
		case "internalHash":
			h.InternalHash, err = docfields.String(value)
		case "conflict":
			h.Conflict = value
		}
		return err == nil
	})
	if err != nil || !ok {
		h = stateHead{}
		err = json.Unmarshal(body, &h)
	}
	return h, err
}
