package httpapi

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strings"
	"time"

	"github.com/castiel/integration-manager/domain"
)

// Webhook signing secrets follow Standard Webhooks: "whsec_" + base64 of the
// key. They are stored in Secret Management; the endpoint keeps references.
const (
	webhookSecretPrefix   = "whsec_"
	webhookSecretBytes    = 24
	minWebhookSecretBytes = 24
	maxWebhookSecretBytes = 64
)

// createWebhookRequest is the body of POST /webhooks.
type createWebhookRequest struct {
	URL                string   `json:"url"`
	EventTypes         []string `json:"eventTypes"`
	Description        string   `json:"description,omitempty"`
	Secret             string   `json:"secret,omitempty"` // generated when absent
	RateLimitPerSecond float64  `json:"rateLimitPerSecond,omitempty"`
}

// webhookCreated is the 201 answer: the only time the secret is shown.
type webhookCreated struct {
	domain.WebhookEndpoint
	Secret string `json:"secret"`
}

// patchWebhookRequest changes the fields present.
type patchWebhookRequest struct {
	URL                *string   `json:"url,omitempty"`
	EventTypes         *[]string `json:"eventTypes,omitempty"`
	Description        *string   `json:"description,omitempty"`
	RateLimitPerSecond *float64  `json:"rateLimitPerSecond,omitempty"`
}

// rotateSecretRequest optionally brings the new secret.
type rotateSecretRequest struct {
	Secret string `json:"secret,omitempty"`
}

// secretRotated is the answer of rotate-secret.
type secretRotated struct {
	ID                      string    `json:"id"`
	Secret                  string    `json:"secret"`
	PreviousSecretExpiresAt time.Time `json:"previousSecretExpiresAt"`
}

func newWebhookSecret() string {
	var b [webhookSecretBytes]byte
	_, _ = rand.Read(b[:])
	return webhookSecretPrefix + base64.StdEncoding.EncodeToString(b[:])
}

// checkWebhookSecret validates a caller's secret without ever quoting it.
func checkWebhookSecret(ve *domain.ValidationError, secret string) {
	raw, ok := strings.CutPrefix(secret, webhookSecretPrefix)
	if !ok {
		ve.Add("secret", `must start with "whsec_"`)
		return
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil || len(key) < minWebhookSecretBytes || len(key) > maxWebhookSecretBytes {
		ve.Addf("secret", `must be "whsec_" followed by the standard base64 of %d to %d bytes`, minWebhookSecretBytes, maxWebhookSecretBytes)
	}
}

func (a *api) createWebhook(c *call) error {
	var req createWebhookRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	now := a.now()
	w := domain.WebhookEndpoint{
		ID:                 newID("wh"),
		TenantID:           c.tenant(),
		URL:                req.URL,
		EventTypes:         req.EventTypes,
		Description:        req.Description,
		RateLimitPerSecond: req.RateLimitPerSecond,
		Status:             domain.WebhookActive,
		CreatedAt:          now,
		UpdatedAt:          now,
	}
	var ve domain.ValidationError
	ve.Merge("", w.Validate(a.opts.URLPolicy))
	secret := req.Secret
	if secret == "" {
		secret = newWebhookSecret()
	} else {
		checkWebhookSecret(&ve, secret)
	}
	if err := ve.Err(); err != nil {
		return err
	}
	ref, err := a.deps.Secrets.Put(c.ctx, c.tenant(), []byte(secret))
	if err != nil {
		return dependencyError("secret management", err)
	}
	w.SecretRef = ref
	etag, err := a.webhooks.Create(c.ctx, w)
	if err != nil {
		a.dropSecret(c, ref)
		return err
	}
	c.oneTimeSecret("secret", ref)
	return c.created(v1+"/webhooks/"+w.ID, etag, webhookCreated{WebhookEndpoint: w, Secret: secret})
}

func (a *api) listWebhooks(c *call) error {
	q, err := c.pageQuery(c.tenant())
	if err != nil {
		return err
	}
	items, next, err := a.webhooks.List(c.ctx, q)
	if err != nil {
		return err
	}
	return c.respondList(items, next)
}

func (a *api) getWebhook(c *call) error {
	id, err := c.pathID("id", "the webhook")
	if err != nil {
		return err
	}
	w, etag, err := a.webhooks.Get(c.ctx, c.tenant(), id)
	if err != nil {
		return orNotFound(err, "the webhook")
	}
	return c.respond(http.StatusOK, etag, w)
}

func (a *api) patchWebhook(c *call) error {
	id, err := c.pathID("id", "the webhook")
	if err != nil {
		return err
	}
	var req patchWebhookRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	w, etag, err := updateDoc(c, a.webhooks, c.tenant(), id, func(w *domain.WebhookEndpoint) error {
		if req.URL != nil {
			w.URL = *req.URL
		}
		if req.EventTypes != nil {
			w.EventTypes = *req.EventTypes
		}
		if req.Description != nil {
			w.Description = *req.Description
		}
		if req.RateLimitPerSecond != nil {
			w.RateLimitPerSecond = *req.RateLimitPerSecond
		}
		w.UpdatedAt = a.now()
		return w.Validate(a.opts.URLPolicy)
	})
	if err != nil {
		return orNotFound(err, "the webhook")
	}
	return c.respond(http.StatusOK, etag, w)
}

func (a *api) deleteWebhook(c *call) error {
	id, err := c.pathID("id", "the webhook")
	if err != nil {
		return err
	}
	w, etag, err := a.webhooks.Get(c.ctx, c.tenant(), id)
	if err != nil {
		return orNotFound(err, "the webhook")
	}
	if err := c.checkIfMatch(etag); err != nil {
		return err
	}
	if err := a.webhooks.Delete(c.ctx, w.TenantID, w.ID, etag); err != nil {
		return orNotFound(err, "the webhook")
	}
	a.dropSecret(c, w.SecretRef)
	a.dropSecret(c, w.PreviousSecretRef)
	return c.noContent()
}

// rotateWebhookSecret stores a new secret; the current one becomes the
// previous one and keeps signing until now + SecretRotationOverlap, so
// receivers can switch without losing deliveries. An older previous secret
// is dropped.
func (a *api) rotateWebhookSecret(c *call) error {
	id, err := c.pathID("id", "the webhook")
	if err != nil {
		return err
	}
	var req rotateSecretRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	secret := req.Secret
	if secret == "" {
		secret = newWebhookSecret()
	} else {
		var ve domain.ValidationError
		checkWebhookSecret(&ve, secret)
		if err := ve.Err(); err != nil {
			return err
		}
	}
	// Check existence and If-Match before storing a secret nobody would use.
	_, etag, err := a.webhooks.Get(c.ctx, c.tenant(), id)
	if err != nil {
		return orNotFound(err, "the webhook")
	}
	if err := c.checkIfMatch(etag); err != nil {
		return err
	}
	ref, err := a.deps.Secrets.Put(c.ctx, c.tenant(), []byte(secret))
	if err != nil {
		return dependencyError("secret management", err)
	}
	expires := a.now().Add(a.opts.SecretRotationOverlap)
	var dropped string
	w, newTag, err := updateDoc(c, a.webhooks, c.tenant(), id, func(w *domain.WebhookEndpoint) error {
		dropped = w.PreviousSecretRef
		w.PreviousSecretRef, w.SecretRef = w.SecretRef, ref
		w.PreviousSecretExpiresAt = &expires
		if w.PreviousSecretRef == "" { // nothing to overlap with
			w.PreviousSecretExpiresAt = nil
		}
		w.UpdatedAt = a.now()
		return nil
	})
	if err != nil {
		a.dropSecret(c, ref)
		return orNotFound(err, "the webhook")
	}
	a.dropSecret(c, dropped)
	c.oneTimeSecret("secret", ref)
	c.w.Header().Set("ETag", httpETag(newTag))
	writeJSON(c.w, http.StatusOK, secretRotated{ID: w.ID, Secret: secret, PreviousSecretExpiresAt: expires})
	return nil
}

// enableWebhook re-enables an endpoint the dispatcher disabled.
func (a *api) enableWebhook(c *call) error {
	id, err := c.pathID("id", "the webhook")
	if err != nil {
		return err
	}
	w, etag, err := updateDoc(c, a.webhooks, c.tenant(), id, func(w *domain.WebhookEndpoint) error {
		w.Status, w.DisabledReason, w.FailingSince = domain.WebhookActive, "", nil
		w.UpdatedAt = a.now()
		return nil
	})
	if err != nil {
		return orNotFound(err, "the webhook")
	}
	return c.respond(http.StatusOK, etag, w)
}
