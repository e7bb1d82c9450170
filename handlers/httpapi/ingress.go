package httpapi

import (
	"errors"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// ingress accepts a post from an external system for one integration. There
// is no bearer token: the post is authenticated by the provider's signature
// scheme with the integration's ingress secret, and only a verified post is
// published (as IngressReceived, raw body and redacted headers).
func (a *api) ingress(c *call) error {
	id := c.r.PathValue("integrationId")
	if !domain.IsValidID(id) {
		return notFound("the integration")
	}
	// The connection shares the integration's id and is partitioned by it:
	// one point read names the tenant without trusting anything in the post.
	conn, _, err := a.connections.Get(c.ctx, id, id)
	if err != nil {
		return orNotFound(err, "the integration")
	}
	c.st.tenantID = conn.TenantID
	in, _, err := a.integrations.Get(c.ctx, conn.TenantID, id)
	if err != nil {
		return orNotFound(err, "the integration")
	}
	if in.Status != domain.IntegrationActive {
		return conflict("the integration is " + string(in.Status) + "; it accepts posts only while active")
	}
	provider, _, err := a.providers.Get(c.ctx, in.ProviderCategory, in.ProviderID)
	if isNotFound(err) {
		return conflict("the integration's provider no longer exists")
	}
	if err != nil {
		return err
	}
	if provider.Ingress == nil {
		// Nothing to verify against: an unsigned post is never accepted.
		e := unauthenticated("this integration's provider defines no ingress signature")
		e.header = nil
		return e
	}
	if in.IngressSecretRef == "" {
		return conflict("the integration has no ingress secret")
	}
	secret, err := a.deps.Secrets.Get(c.ctx, in.TenantID, in.IngressSecretRef)
	if errors.Is(err, store.ErrNotFound) {
		return conflict("the integration's ingress secret is missing; reinstall the integration")
	}
	if err != nil {
		return dependencyError("secret management", err)
	}
	if err := provider.Ingress.Verify(secret, firstValues(c.r.Header), c.body, a.now()); err != nil {
		// One answer for every failed check, so probing learns nothing; the
		// reason (never the secret) goes to the log.
		e := unauthenticated("the signature is missing, invalid or too old")
		e.header = nil // not a bearer-token realm
		e.cause = err
		return e
	}
	msg := domain.IngressReceived{
		IngressID:     newID("ing"),
		TenantID:      in.TenantID,
		IntegrationID: in.ID,
		Headers:       domain.RedactHeaders(forwardedHeaders(c.r.Header)),
		Body:          c.body,
		ReceivedAt:    a.now(),
	}
	if err := msg.Validate(); err != nil {
		return err
	}
	if err := a.deps.Commands.Send(c.ctx, in.TenantID, msg); err != nil {
		return dependencyError("the message broker", err)
	}
	writeJSON(c.w, http.StatusAccepted, accepted{ID: msg.IngressID})
	return nil
}

// hopByHop are the headers that describe one connection, not the message
// (RFC 9110 §7.6.1), plus what must never travel on: credentials and the
// framing the body no longer has.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Proxy-Connection": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Authorization": true, "Cookie": true, "Content-Length": true,
}

// forwardedHeaders flattens the end-to-end headers of the post.
func forwardedHeaders(h http.Header) map[string]string {
	drop := make(map[string]bool)
	for _, v := range h.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			drop[textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(name))] = true
		}
	}
	out := make(map[string]string, len(h))
	for k, vs := range h {
		if hopByHop[k] || drop[k] || len(vs) == 0 {
			continue
		}
		out[k] = strings.Join(vs, ", ")
	}
	return out
}

// firstValues is the header view the signature check reads.
func firstValues(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, vs := range h {
		if len(vs) > 0 {
			out[k] = vs[0]
		}
	}
	return out
}
