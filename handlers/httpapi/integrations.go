package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// createIntegrationRequest is the body of POST /integrations.
type createIntegrationRequest struct {
	CatalogEntryID string            `json:"catalogEntryId"`
	Name           string            `json:"name,omitempty"` // default: the catalog entry's name
	Settings       map[string]string `json:"settings,omitempty"`
}

// integrationCreated is the 201 answer: the only time the ingress secret is shown.
type integrationCreated struct {
	domain.Integration
	IngressSecret string `json:"ingressSecret"`
}

// patchIntegrationRequest changes the fields present.
type patchIntegrationRequest struct {
	Name     *string                   `json:"name,omitempty"`
	Settings *map[string]string        `json:"settings,omitempty"` // replaces all settings
	Status   *domain.IntegrationStatus `json:"status,omitempty"`
}

// putConnectionRequest carries credentials once, into Secret Management.
type putConnectionRequest struct {
	Credentials json.RawMessage `json:"credentials"`
}

// newIngressSecret makes the HMAC key an external system signs its posts
// with: 32 random bytes, written as base64url; the key is that text.
func newIngressSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (a *api) createIntegration(c *call) error {
	var req createIntegrationRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	unavailableEntry := invalid("catalogEntryId", "no catalog entry with this id is available to this tenant")
	if !domain.IsValidID(req.CatalogEntryID) {
		return unavailableEntry
	}
	entry, _, err := a.findCatalogEntry(c.ctx, req.CatalogEntryID)
	if isNotFound(err) {
		return unavailableEntry
	}
	if err != nil {
		return err
	}
	ov, err := a.override(c.ctx, c.tenant(), entry.ID)
	if err != nil {
		return err
	}
	switch visible, enabled := catalogAccess(entry, ov); {
	case !visible:
		return unavailableEntry
	case !enabled:
		return invalid("catalogEntryId", "is not enabled for this tenant")
	case entry.Status != domain.CatalogPublished:
		return invalid("catalogEntryId", "is deprecated and can no longer be installed")
	}
	provider, _, err := a.findProvider(c.ctx, entry.ProviderID)
	if isNotFound(err) {
		return conflict("the catalog entry's provider no longer exists")
	}
	if err != nil {
		return err
	}

	now := a.now()
	in := domain.Integration{
		ID:               newID("int"),
		TenantID:         c.tenant(),
		CatalogEntryID:   entry.ID,
		ProviderID:       provider.ID,
		ProviderCategory: provider.Category,
		Name:             req.Name,
		Settings:         req.Settings,
		Status:           domain.IntegrationActive,
		CreatedAt:        now,
		UpdatedAt:        now,
	}
	if in.Name == "" {
		in.Name = entry.Name
	}
	if err := in.Validate(); err != nil {
		return err
	}

	secret := newIngressSecret()
	ref, err := a.deps.Secrets.Put(c.ctx, c.tenant(), []byte(secret))
	if err != nil {
		return dependencyError("secret management", err)
	}
	in.IngressSecretRef = ref
	etag, err := a.integrations.Create(c.ctx, in)
	if err != nil {
		a.dropSecret(c, ref)
		return err
	}
	// The connection's id and partition are the integration id, so ingress
	// finds the tenant of an integration with one point read.
	conn := domain.Connection{ID: in.ID, IntegrationID: in.ID, TenantID: in.TenantID, Status: domain.ConnectionPending, CreatedAt: now, UpdatedAt: now}
	if _, err := a.connections.Create(c.ctx, conn); err != nil {
		if derr := a.integrations.Delete(context.WithoutCancel(c.ctx), in.TenantID, in.ID, ""); derr != nil {
			a.log.Warn().Err(derr).Str("integrationId", in.ID).Msg("could not remove a half-created integration")
		}
		a.dropSecret(c, ref)
		return err
	}
	c.oneTimeSecret("ingressSecret", ref)
	return c.created(v1+"/integrations/"+in.ID, etag, integrationCreated{Integration: in, IngressSecret: secret})
}

// dropSecret deletes a secret that is no longer referenced; a failure only
// leaves an orphan behind, so it is logged, not returned.
func (a *api) dropSecret(c *call, ref string) {
	if ref == "" {
		return
	}
	if err := a.deps.Secrets.Delete(context.WithoutCancel(c.ctx), c.tenant(), ref); err != nil && !errors.Is(err, store.ErrNotFound) {
		a.log.Warn().Err(err).Str("tenantId", c.tenant()).Str("correlationId", c.st.correlationID).Msg("could not delete an unreferenced secret")
	}
}

func (a *api) listIntegrations(c *call) error {
	q, err := c.pageQuery(c.tenant())
	if err != nil {
		return err
	}
	items, next, err := a.integrations.List(c.ctx, q)
	if err != nil {
		return err
	}
	return c.respondList(items, next)
}

func (a *api) getIntegration(c *call) error {
	id, err := c.pathID("id", "the integration")
	if err != nil {
		return err
	}
	in, etag, err := a.integrations.Get(c.ctx, c.tenant(), id)
	if err != nil {
		return orNotFound(err, "the integration")
	}
	return c.respond(http.StatusOK, etag, in)
}

func (a *api) patchIntegration(c *call) error {
	id, err := c.pathID("id", "the integration")
	if err != nil {
		return err
	}
	var req patchIntegrationRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	in, etag, err := updateDoc(c, a.integrations, c.tenant(), id, func(in *domain.Integration) error {
		if req.Name != nil {
			in.Name = *req.Name
		}
		if req.Settings != nil {
			in.Settings = *req.Settings
		}
		if req.Status != nil {
			in.Status = *req.Status
		}
		in.UpdatedAt = a.now()
		return in.Validate()
	})
	if err != nil {
		return orNotFound(err, "the integration")
	}
	return c.respond(http.StatusOK, etag, in)
}

func (a *api) deleteIntegration(c *call) error {
	id, err := c.pathID("id", "the integration")
	if err != nil {
		return err
	}
	in, etag, err := a.integrations.Get(c.ctx, c.tenant(), id)
	if err != nil {
		return orNotFound(err, "the integration")
	}
	if err := c.checkIfMatch(etag); err != nil {
		return err
	}
	if err := a.integrations.Delete(c.ctx, in.TenantID, in.ID, etag); err != nil {
		return orNotFound(err, "the integration")
	}
	// The integration is gone; what hangs off it is removed best effort.
	ctx := context.WithoutCancel(c.ctx)
	if conn, _, err := a.connections.Get(ctx, in.ID, in.ID); err == nil && conn.TenantID == in.TenantID {
		if err := a.connections.Delete(ctx, in.ID, in.ID, ""); err != nil && !isNotFound(err) {
			a.log.Warn().Err(err).Str("integrationId", in.ID).Msg("could not delete the connection of a deleted integration")
		}
		a.dropSecret(c, conn.CredentialRef)
	}
	a.dropSecret(c, in.IngressSecretRef)
	return c.noContent()
}

// connectionOf reads the caller's integration and its connection; another
// tenant's integration is answered like a missing one.
func (a *api) connectionOf(c *call) (domain.Integration, domain.Connection, string, error) {
	id, err := c.pathID("id", "the integration")
	if err != nil {
		return domain.Integration{}, domain.Connection{}, "", err
	}
	in, _, err := a.integrations.Get(c.ctx, c.tenant(), id)
	if err != nil {
		return in, domain.Connection{}, "", orNotFound(err, "the integration")
	}
	conn, etag, err := a.connections.Get(c.ctx, in.ID, in.ID)
	if err == nil && conn.TenantID != in.TenantID {
		err = notFound("the connection")
	}
	return in, conn, etag, err
}

func (a *api) getConnection(c *call) error {
	_, conn, etag, err := a.connectionOf(c)
	if err != nil {
		return orNotFound(err, "the connection")
	}
	return c.respond(http.StatusOK, etag, conn)
}

func (a *api) putConnection(c *call) error {
	var req putConnectionRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	var creds map[string]json.RawMessage
	if !bytes.HasPrefix(bytes.TrimSpace(req.Credentials), []byte("{")) || json.Unmarshal(req.Credentials, &creds) != nil || len(creds) == 0 {
		return invalid("credentials", "must be a non-empty JSON object")
	}
	in, conn, etag, err := a.connectionOf(c)
	// Only a truly absent connection (raw store.ErrNotFound) is created here.
	missing := errors.Is(err, store.ErrNotFound) && in.ID != ""
	if err != nil && !missing {
		return orNotFound(err, "the integration")
	}
	if missing {
		if c.r.Header.Get("If-Match") != "" {
			return preconditionFailed()
		}
	} else if err := c.checkIfMatch(etag); err != nil {
		return err
	}

	// The credentials go to Secret Management; the document keeps the reference.
	ref := conn.CredentialRef
	fresh := ref == ""
	if !fresh {
		err = a.deps.Secrets.Replace(c.ctx, c.tenant(), ref, req.Credentials)
	} else {
		ref, err = a.deps.Secrets.Put(c.ctx, c.tenant(), req.Credentials)
	}
	if err != nil {
		return dependencyError("secret management", err)
	}

	now := a.now()
	connect := func(conn *domain.Connection) error {
		conn.Status, conn.CredentialRef, conn.LastError, conn.TokenExpiresAt, conn.UpdatedAt = domain.ConnectionConnected, ref, "", nil, now
		return conn.Validate()
	}
	var newTag string
	if missing { // integrations installed before connections were created with them
		conn = domain.Connection{ID: in.ID, IntegrationID: in.ID, TenantID: in.TenantID, CreatedAt: now}
		if err = connect(&conn); err == nil {
			newTag, err = a.connections.Create(c.ctx, conn)
		}
	} else {
		var replaced string
		conn, newTag, err = updateDoc(c, a.connections, in.ID, in.ID, func(cur *domain.Connection) error {
			replaced = cur.CredentialRef
			return connect(cur)
		})
		if err == nil && replaced != ref {
			a.dropSecret(c, replaced) // a concurrent PUT stored another copy first
		}
	}
	if err != nil {
		if fresh {
			a.dropSecret(c, ref)
		}
		return orNotFound(err, "the connection")
	}
	return c.respond(http.StatusOK, newTag, conn)
}
