package webhook

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/secrets"
	"github.com/castiel/integration-manager/store"
)

// ttlCache keeps values for a fixed time. Values are treated as immutable:
// a change is a put of a new value.
type ttlCache[V any] struct {
	ttl time.Duration // <= 0: nothing is kept
	now func() time.Time

	mu        sync.Mutex
	entries   map[string]ttlEntry[V]
	lastSweep time.Time
}

type ttlEntry[V any] struct {
	v       V
	expires time.Time
}

func newTTLCache[V any](ttl time.Duration, now func() time.Time) *ttlCache[V] {
	return &ttlCache[V]{ttl: ttl, now: now, entries: make(map[string]ttlEntry[V])}
}

func (c *ttlCache[V]) get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || !c.now().Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (c *ttlCache[V]) put(key string, v V) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if now.Sub(c.lastSweep) > c.ttl {
		// Expired entries of endpoints no longer delivered to would otherwise stay forever.
		for k, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, k)
			}
		}
		c.lastSweep = now
	}
	c.entries[key] = ttlEntry[V]{v: v, expires: now.Add(c.ttl)}
}

// replace swaps the value of a cached key, keeping its expiry; no-op when absent.
func (c *ttlCache[V]) replace(key string, fn func(V) V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		e.v = fn(e.v)
		c.entries[key] = e
	}
}

func (c *ttlCache[V]) remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, key)
}

// endpointEntry is an endpoint's document with its signers: what a delivery
// needs, read once per CacheTTL instead of on every message.
type endpointEntry struct {
	ep      domain.WebhookEndpoint
	signers map[string]*standardwebhooks.Webhook // by secret reference
}

// sign returns the webhook-signature value: one "v1,<base64>" per secret that
// signs at `at` (the current one, and the previous one during a rotation
// overlap), space-separated.
func (e *endpointEntry) sign(msgID string, at time.Time, payload []byte) (string, error) {
	var sigs []string
	for _, ref := range domain.SigningSecretRefs(e.ep, at) {
		wh, ok := e.signers[ref]
		if !ok {
			continue // the previous secret had already expired when the entry was read
		}
		s, err := wh.Sign(msgID, at, payload)
		if err != nil {
			return "", err
		}
		sigs = append(sigs, s)
	}
	if len(sigs) == 0 {
		return "", errors.New("no signing secret")
	}
	return strings.Join(sigs, " "), nil
}

func endpointKey(tenantID, webhookID string) string { return tenantID + "\x00" + webhookID }

// endpoint returns the endpoint and its signers, from the cache when fresh.
// An unknown endpoint, or one whose secret cannot be read for good, is a
// permanent error; an unreachable store or secret store a transient one.
func (d *Dispatcher) endpoint(ctx context.Context, tenantID, webhookID string) (*endpointEntry, error) {
	key := endpointKey(tenantID, webhookID)
	if e, ok := d.endpoints.get(key); ok {
		return e, nil
	}
	ep, _, err := d.webhooks.Get(ctx, tenantID, webhookID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, messaging.Permanent(fmt.Errorf("webhook %s of tenant %s does not exist: %w", webhookID, tenantID, err))
	}
	if err != nil {
		return nil, fmt.Errorf("read webhook %s: %w", webhookID, err)
	}
	e := &endpointEntry{ep: ep, signers: make(map[string]*standardwebhooks.Webhook)}
	if ep.Status == domain.WebhookActive {
		refs := domain.SigningSecretRefs(ep, d.now())
		if ep.SecretRef == "" {
			return nil, messaging.Permanent(fmt.Errorf("webhook %s of tenant %s has no signing secret", webhookID, tenantID))
		}
		for _, ref := range refs {
			wh, err := d.signer(ctx, tenantID, ref)
			if ref != ep.SecretRef && errors.Is(err, secrets.ErrNotFound) {
				continue // a newer rotation dropped the previous secret after the document was read
			}
			if err != nil {
				return nil, fmt.Errorf("signing secret of webhook %s: %w", webhookID, err)
			}
			e.signers[ref] = wh
		}
	}
	d.endpoints.put(key, e)
	return e, nil
}

func (d *Dispatcher) signer(ctx context.Context, tenantID, ref string) (*standardwebhooks.Webhook, error) {
	value, err := d.secrets.Get(ctx, tenantID, ref)
	if err != nil {
		if secrets.IsTransient(err) || store.IsTransient(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		return nil, messaging.Permanent(err)
	}
	wh, err := standardwebhooks.NewWebhook(string(value))
	if err != nil {
		// The library's message names the bad base64 byte, never the value; still, say less.
		return nil, messaging.Permanent(errors.New("the stored signing secret is not a whsec_ base64 secret"))
	}
	return wh, nil
}

// refreshEndpoint puts a newer document of a cached endpoint in the cache,
// keeping its signers, so this process sees its own writes at once.
func (d *Dispatcher) refreshEndpoint(ep domain.WebhookEndpoint) {
	d.endpoints.replace(endpointKey(ep.TenantID, ep.ID), func(old *endpointEntry) *endpointEntry {
		return &endpointEntry{ep: ep, signers: old.signers}
	})
	if ep.Status != domain.WebhookActive {
		d.lists.remove(ep.TenantID)
	}
}

// activeEndpoints lists the tenant's active endpoints for the fan-out, from
// the cache when fresh.
func (d *Dispatcher) activeEndpoints(ctx context.Context, tenantID string) ([]domain.WebhookEndpoint, error) {
	if l, ok := d.lists.get(tenantID); ok {
		return l, nil
	}
	var out []domain.WebhookEndpoint
	q := store.Query{
		PartitionKey: tenantID,
		Filters:      []store.Filter{{Field: "status", Value: string(domain.WebhookActive)}},
		Limit:        store.MaxPageSize,
	}
	for {
		page, next, err := d.webhooks.List(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("list the webhooks of tenant %s: %w", tenantID, err)
		}
		out = append(out, page...)
		if next == "" {
			break
		}
		q.Continuation = next
	}
	d.lists.put(tenantID, out)
	return out, nil
}
