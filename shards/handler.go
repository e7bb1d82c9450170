package shards

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
)

// NewHandler serves the Shard Manager REST contract documented on HTTP on top
// of s. It is what the HTTP client is tested against, and it lets a local
// setup run a Shard Manager of its own (say, over a Local store). It does no
// authentication: put it behind whatever the deployment uses.
func NewHandler(s Store) (http.Handler, error) {
	if s == nil {
		return nil, errNoStore
	}
	const base = "/api/v1/tenants/{tenantId}/entities/{entity}/records"
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+base+"/{key}", func(w http.ResponseWriter, r *http.Request) {
		rec, err := s.Get(r.Context(), r.PathValue("tenantId"), r.PathValue("entity"), r.PathValue("key"))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, rec)
	})
	mux.HandleFunc("PUT "+base+"/{key}", func(w http.ResponseWriter, r *http.Request) {
		var in putBody
		dec := json.NewDecoder(io.LimitReader(r.Body, MaxRecordBytes+1024))
		if err := dec.Decode(&in); err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{Error: "body must be {\"data\": {...}} within " + strconv.Itoa(MaxRecordBytes) + " bytes"})
			return
		}
		rec, err := s.Put(r.Context(), r.PathValue("tenantId"), r.PathValue("entity"), r.PathValue("key"), in.Data)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, rec)
	})
	mux.HandleFunc("DELETE "+base+"/{key}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Delete(r.Context(), r.PathValue("tenantId"), r.PathValue("entity"), r.PathValue("key")); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET "+base, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit := 0
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				writeJSON(w, http.StatusBadRequest, errorBody{Error: "limit must be a non-negative integer"})
				return
			}
			limit = n
		}
		recs, next, err := s.List(r.Context(), r.PathValue("tenantId"), r.PathValue("entity"), q.Get("pageToken"), limit)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, listBody{Records: recs, NextPageToken: next})
	})
	return mux, nil
}

// errorBody is the JSON of a refusal.
type errorBody struct {
	Error string `json:"error"`
}

var errNoStore = errors.New("shards: handler needs a store")

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeErr maps this package's errors to statuses; the message of an
// unexpected error is not echoed.
func writeErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		writeJSON(w, http.StatusNotFound, errorBody{Error: "record not found"})
	case errors.Is(err, ErrInvalid):
		writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error()})
	case errors.Is(err, ErrUnavailable):
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "shard store unavailable"})
	default:
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: "internal error"})
	}
}
