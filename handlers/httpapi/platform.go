package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// Providers and catalog entries are partitioned by category and looked up by
// id with a cross-partition filter (both containers are small reference data
// that allow it). Their category cannot change: integrations keep the
// provider's category to read it with one point read.

func (a *api) findProvider(ctx context.Context, id string) (domain.Provider, string, error) {
	return findByID(ctx, a.providers, id, "provider")
}

func (a *api) findCatalogEntry(ctx context.Context, id string) (domain.CatalogEntry, string, error) {
	return findByID(ctx, a.catalog, id, "catalog entry")
}

// findByID finds a document of a cross-partition container by id, then reads
// it by its key for the ETag.
func findByID[T store.Keyed](ctx context.Context, repo *store.Repository[T], id, what string) (T, string, error) {
	var zero T
	if !domain.IsValidID(id) {
		return zero, "", notFound("the " + what)
	}
	found, _, err := repo.List(ctx, store.Query{Filters: []store.Filter{{Field: "id", Value: id}}, Limit: 1})
	if err != nil {
		return zero, "", err
	}
	if len(found) == 0 {
		return zero, "", notFound("the " + what)
	}
	pk, _ := found[0].Key()
	doc, etag, err := repo.Get(ctx, pk, id)
	return doc, etag, orNotFound(err, "the "+what)
}

// ---- providers ----

func (a *api) createProvider(c *call) error {
	var p domain.Provider
	if err := c.decode(&p); err != nil {
		return err
	}
	if p.ID == "" {
		p.ID = newID("prv")
	}
	p.CreatedAt, p.UpdatedAt = a.now(), a.now()
	if err := p.Validate(); err != nil {
		return err
	}
	// Ids are unique across categories, not only within one partition.
	if _, _, err := a.findProvider(c.ctx, p.ID); err == nil {
		return conflict("a provider with this id already exists")
	} else if !isNotFound(err) {
		return err
	}
	etag, err := a.providers.Create(c.ctx, p)
	if errors.Is(err, store.ErrConflict) {
		return conflict("a provider with this id already exists")
	}
	if err != nil {
		return err
	}
	return c.created(v1+"/providers/"+p.ID, etag, p)
}

func (a *api) listProviders(c *call) error {
	category := c.r.URL.Query().Get("category")
	if category != "" && !domain.IsValidCategory(category) {
		return badRequest("category is malformed", domain.FieldError{Field: "category", Message: "must be a category slug"})
	}
	q, err := c.pageQuery(category)
	if err != nil {
		return err
	}
	items, next, err := a.providers.List(c.ctx, q)
	if err != nil {
		return err
	}
	return c.respondList(items, next)
}

func (a *api) getProvider(c *call) error {
	p, etag, err := a.findProvider(c.ctx, c.r.PathValue("id"))
	if err != nil {
		return err
	}
	return c.respond(http.StatusOK, etag, p)
}

func (a *api) putProvider(c *call) error {
	var p domain.Provider
	if err := c.decode(&p); err != nil {
		return err
	}
	existing, etag, err := a.findProvider(c.ctx, c.r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := c.checkIfMatch(etag); err != nil {
		return err
	}
	if p.ID != "" && p.ID != existing.ID {
		return invalid("id", "must match the id in the path")
	}
	if p.Category == "" {
		p.Category = existing.Category
	}
	if p.Category != existing.Category {
		return invalid("category", "cannot change; delete the provider and create it in the new category")
	}
	p.ID, p.CreatedAt, p.UpdatedAt = existing.ID, existing.CreatedAt, a.now()
	if err := p.Validate(); err != nil {
		return err
	}
	newTag, err := a.providers.Replace(c.ctx, p, etag)
	if err != nil {
		return err
	}
	return c.respond(http.StatusOK, newTag, p)
}

func (a *api) deleteProvider(c *call) error {
	p, etag, err := a.findProvider(c.ctx, c.r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := c.checkIfMatch(etag); err != nil {
		return err
	}
	users, _, err := a.catalog.List(c.ctx, store.Query{Filters: []store.Filter{{Field: "providerId", Value: p.ID}}, Limit: 1})
	if err != nil {
		return err
	}
	if len(users) > 0 {
		return conflict(fmt.Sprintf("catalog entry %q still uses this provider; delete it first", users[0].ID))
	}
	if err := a.providers.Delete(c.ctx, p.Category, p.ID, etag); err != nil {
		return err
	}
	return c.noContent()
}

// ---- catalog ----

func (a *api) createCatalogEntry(c *call) error {
	var e domain.CatalogEntry
	if err := c.decode(&e); err != nil {
		return err
	}
	if e.ID == "" {
		e.ID = newID("cat")
	}
	if e.Status == "" {
		e.Status = domain.CatalogPublished
	}
	e.CreatedAt, e.UpdatedAt = a.now(), a.now()
	if err := a.validateCatalogEntry(c.ctx, e); err != nil {
		return err
	}
	if _, _, err := a.findCatalogEntry(c.ctx, e.ID); err == nil {
		return conflict("a catalog entry with this id already exists")
	} else if !isNotFound(err) {
		return err
	}
	etag, err := a.catalog.Create(c.ctx, e)
	if errors.Is(err, store.ErrConflict) {
		return conflict("a catalog entry with this id already exists")
	}
	if err != nil {
		return err
	}
	return c.created(v1+"/catalog/"+e.ID, etag, e)
}

// validateCatalogEntry checks the entry and that its provider exists.
func (a *api) validateCatalogEntry(ctx context.Context, e domain.CatalogEntry) error {
	var ve domain.ValidationError
	ve.Merge("", e.Validate())
	if domain.IsValidID(e.ProviderID) {
		if _, _, err := a.findProvider(ctx, e.ProviderID); isNotFound(err) {
			ve.Add("providerId", "no provider has this id")
		} else if err != nil {
			return err
		}
	}
	return ve.Err()
}

// catalogAccess says whether tenantID sees the entry and may install it: the
// entry's default, unless the tenant's visibility override says otherwise.
func catalogAccess(e domain.CatalogEntry, override *domain.Visibility) (visible, enabled bool) {
	if override != nil {
		return override.Visible, override.Visible && override.Enabled
	}
	return e.VisibleByDefault, e.VisibleByDefault
}

// visibilityOverrides loads every override of a tenant (one per catalog
// entry at most, so bounded by the catalog's size).
func (a *api) visibilityOverrides(ctx context.Context, tenantID string) (map[string]*domain.Visibility, error) {
	out := make(map[string]*domain.Visibility)
	q := store.Query{PartitionKey: tenantID, Limit: store.MaxPageSize}
	for {
		items, next, err := a.visibility.List(ctx, q)
		if err != nil {
			return nil, err
		}
		for i := range items {
			out[items[i].CatalogEntryID] = &items[i]
		}
		if next == "" {
			return out, nil
		}
		q.Continuation = next
	}
}

// override reads one tenant's override of one entry, nil when there is none.
func (a *api) override(ctx context.Context, tenantID, entryID string) (*domain.Visibility, error) {
	v, _, err := a.visibility.Get(ctx, tenantID, domain.VisibilityID(tenantID, entryID))
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// listCatalog lists every entry for a platform admin and the visible ones for
// anyone else. Pages follow the catalog's own keyset, so a tenant's page may
// hold fewer than limit entries while nextCursor still leads on.
func (a *api) listCatalog(c *call) error {
	category := c.r.URL.Query().Get("category")
	if category != "" && !domain.IsValidCategory(category) {
		return badRequest("category is malformed", domain.FieldError{Field: "category", Message: "must be a category slug"})
	}
	platform := c.p.CanManagePlatform()
	if !platform && !domain.IsValidID(c.tenant()) {
		return forbidden("the credentials carry no valid tenant")
	}
	q, err := c.pageQuery(category)
	if err != nil {
		return err
	}
	entries, next, err := a.catalog.List(c.ctx, q)
	if err != nil {
		return err
	}
	if platform {
		return c.respondList(entries, next)
	}
	overrides, err := a.visibilityOverrides(c.ctx, c.tenant())
	if err != nil {
		return err
	}
	visible := make([]domain.CatalogEntry, 0, len(entries))
	for _, e := range entries {
		if ok, _ := catalogAccess(e, overrides[e.ID]); ok {
			visible = append(visible, e)
		}
	}
	return c.respondList(visible, next)
}

func (a *api) getCatalogEntry(c *call) error {
	e, etag, err := a.visibleCatalogEntry(c, c.r.PathValue("id"))
	if err != nil {
		return err
	}
	return c.respond(http.StatusOK, etag, e)
}

// visibleCatalogEntry finds an entry the caller may see; an invisible entry
// is answered like a missing one.
func (a *api) visibleCatalogEntry(c *call, id string) (domain.CatalogEntry, string, error) {
	e, etag, err := a.findCatalogEntry(c.ctx, id)
	if err != nil || c.p.CanManagePlatform() {
		return e, etag, err
	}
	if !domain.IsValidID(c.tenant()) {
		return e, "", forbidden("the credentials carry no valid tenant")
	}
	ov, err := a.override(c.ctx, c.tenant(), e.ID)
	if err != nil {
		return e, "", err
	}
	if visible, _ := catalogAccess(e, ov); !visible {
		return domain.CatalogEntry{}, "", notFound("the catalog entry")
	}
	return e, etag, nil
}

func (a *api) putCatalogEntry(c *call) error {
	var e domain.CatalogEntry
	if err := c.decode(&e); err != nil {
		return err
	}
	existing, etag, err := a.findCatalogEntry(c.ctx, c.r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := c.checkIfMatch(etag); err != nil {
		return err
	}
	if e.ID != "" && e.ID != existing.ID {
		return invalid("id", "must match the id in the path")
	}
	if e.Category == "" {
		e.Category = existing.Category
	}
	if e.Category != existing.Category {
		return invalid("category", "cannot change; delete the entry and create it in the new category")
	}
	if e.Status == "" {
		e.Status = existing.Status
	}
	e.ID, e.CreatedAt, e.UpdatedAt = existing.ID, existing.CreatedAt, a.now()
	if err := a.validateCatalogEntry(c.ctx, e); err != nil {
		return err
	}
	newTag, err := a.catalog.Replace(c.ctx, e, etag)
	if err != nil {
		return err
	}
	return c.respond(http.StatusOK, newTag, e)
}

func (a *api) deleteCatalogEntry(c *call) error {
	e, etag, err := a.findCatalogEntry(c.ctx, c.r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := c.checkIfMatch(etag); err != nil {
		return err
	}
	if err := a.catalog.Delete(c.ctx, e.Category, e.ID, etag); err != nil {
		return err
	}
	return c.noContent()
}

// ---- visibility ----

// visibilityRequest is the body of PUT /visibility/{tenantId}/{catalogEntryId}.
type visibilityRequest struct {
	Visible bool  `json:"visible"`
	Enabled *bool `json:"enabled,omitempty"` // default: the same as visible
}

// namedTenant is the {tenantId} of a visibility route: the one place a
// tenant comes from the path, and only for platform admins.
func (c *call) namedTenant() (string, error) {
	t := c.r.PathValue("tenantId")
	if !domain.IsValidID(t) {
		return "", badRequest("tenantId is malformed", domain.FieldError{Field: "tenantId", Message: "must be a tenant id"})
	}
	return t, nil
}

func (a *api) listVisibility(c *call) error {
	tenantID, err := c.namedTenant()
	if err != nil {
		return err
	}
	q, err := c.pageQuery(tenantID)
	if err != nil {
		return err
	}
	items, next, err := a.visibility.List(c.ctx, q)
	if err != nil {
		return err
	}
	return c.respondList(items, next)
}

func (a *api) getVisibility(c *call) error {
	tenantID, err := c.namedTenant()
	if err != nil {
		return err
	}
	id, err := c.pathID("catalogEntryId", "the visibility override")
	if err != nil {
		return err
	}
	v, etag, err := a.visibility.Get(c.ctx, tenantID, domain.VisibilityID(tenantID, id))
	if err != nil {
		return orNotFound(err, "the visibility override")
	}
	return c.respond(http.StatusOK, etag, v)
}

func (a *api) putVisibility(c *call) error {
	tenantID, err := c.namedTenant()
	if err != nil {
		return err
	}
	var req visibilityRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	entry, _, err := a.findCatalogEntry(c.ctx, c.r.PathValue("catalogEntryId"))
	if err != nil {
		return err
	}
	enabled := req.Visible
	if req.Enabled != nil {
		enabled = *req.Enabled
	}
	now := a.now()
	v := domain.Visibility{ID: domain.VisibilityID(tenantID, entry.ID), TenantID: tenantID, CatalogEntryID: entry.ID, Visible: req.Visible, Enabled: enabled, CreatedAt: now, UpdatedAt: now}
	if err := v.Validate(); err != nil {
		return err
	}
	existing, etag, err := a.visibility.Get(c.ctx, tenantID, v.ID)
	switch {
	case isNotFound(err):
		if c.r.Header.Get("If-Match") != "" {
			return preconditionFailed()
		}
		etag, err = a.visibility.Create(c.ctx, v)
	case err != nil:
		return err
	default:
		if err := c.checkIfMatch(etag); err != nil {
			return err
		}
		v.CreatedAt = existing.CreatedAt
		etag, err = a.visibility.Replace(c.ctx, v, etag)
	}
	if errors.Is(err, store.ErrConflict) {
		return conflict("the override was written concurrently; retry")
	}
	if err != nil {
		return err
	}
	return c.respond(http.StatusOK, etag, v)
}

func (a *api) deleteVisibility(c *call) error {
	tenantID, err := c.namedTenant()
	if err != nil {
		return err
	}
	id, err := c.pathID("catalogEntryId", "the visibility override")
	if err != nil {
		return err
	}
	if err := deleteDoc(c, a.visibility, tenantID, domain.VisibilityID(tenantID, id)); err != nil {
		return orNotFound(err, "the visibility override")
	}
	return c.noContent()
}

func isNotFound(err error) bool {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.problem.Status == http.StatusNotFound
	}
	return errors.Is(err, store.ErrNotFound)
}
