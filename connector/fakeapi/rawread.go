package fakeapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// RawPagedRead reads every contact of a cursor-paged, API-key server with plain
// net/http and encoding/json, doing nothing with the records: the baseline that
// benchmarks of the connector and of sync runs are held against. It returns
// how many records it read.
func (s *Server) RawPagedRead(pageSize int) (int, error) {
	return s.RawPages(pageSize, func([]map[string]any) {})
}

// RawPages reads like RawPagedRead and hands each page's records to page
// before reading the next.
func (s *Server) RawPages(pageSize int, page func([]map[string]any)) (int, error) {
	hc := &http.Client{}
	n, cursor := 0, ""
	for {
		q := url.Values{"limit": {fmt.Sprint(pageSize)}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		req, err := http.NewRequest(http.MethodGet, s.URL+"/api/contacts?"+q.Encode(), nil)
		if err != nil {
			return n, err
		}
		req.Header.Set("X-API-Key", APIKey)
		resp, err := hc.Do(req)
		if err != nil {
			return n, err
		}
		var body struct {
			Data []map[string]any `json:"data"`
			Meta struct {
				NextCursor *string `json:"next_cursor"`
			} `json:"meta"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return n, fmt.Errorf("raw page: status %d, %v", resp.StatusCode, err)
		}
		n += len(body.Data)
		page(body.Data)
		if body.Meta.NextCursor == nil {
			return n, nil
		}
		cursor = *body.Meta.NextCursor
	}
}
