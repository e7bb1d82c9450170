package domain

import "time"

type WebhookStatus string

const (
	WebhookActive   WebhookStatus = "active"
	WebhookDisabled WebhookStatus = "disabled"
)

// WebhookEndpoint is a tenant's receiver (container integration_webhooks,
// partition "tenantId"). During secret rotation deliveries are signed with
// both secrets until PreviousSecretExpiresAt.
type WebhookEndpoint struct {
	ID                      string        `json:"id"`
	TenantID                string        `json:"tenantId"`
	URL                     string        `json:"url"`
	EventTypes              []string      `json:"eventTypes"` // event filters, see MatchesEventType
	Description             string        `json:"description,omitempty"`
	SecretRef               string        `json:"secretRef,omitempty"`
	PreviousSecretRef       string        `json:"previousSecretRef,omitempty"`
	PreviousSecretExpiresAt *time.Time    `json:"previousSecretExpiresAt,omitempty"`
	RateLimitPerSecond      float64       `json:"rateLimitPerSecond"` // 0: no limit
	Status                  WebhookStatus `json:"status"`
	DisabledReason          string        `json:"disabledReason,omitempty"`
	FailingSince            *time.Time    `json:"failingSince,omitempty"`
	LastSuccessAt           *time.Time    `json:"lastSuccessAt,omitempty"`
	CreatedAt               time.Time     `json:"createdAt"`
	UpdatedAt               time.Time     `json:"updatedAt"`
}

func (w WebhookEndpoint) Key() (partitionKey, id string) { return w.TenantID, w.ID }
func (WebhookEndpoint) Container() string                { return ContainerWebhooks }

// Accepts reports whether the endpoint should get an event of eventType.
func (w WebhookEndpoint) Accepts(eventType string) bool {
	return w.Status == WebhookActive && MatchesEventType(w.EventTypes, eventType)
}

// Validate checks the endpoint as it is about to be stored; the URL rule
// depends on the deployment's policy.
func (w WebhookEndpoint) Validate(p URLPolicy) error {
	var ve ValidationError
	checkID(&ve, "id", w.ID)
	checkID(&ve, "tenantId", w.TenantID)
	if msg := webhookURLProblem(w.URL, p); msg != "" {
		ve.Add("url", msg)
	}
	switch {
	case len(w.EventTypes) == 0:
		ve.Add("eventTypes", "must list at least one event type or filter (\"*\" selects every event)")
	case len(w.EventTypes) > MaxEventFilters:
		ve.Addf("eventTypes", "must list at most %d filters", MaxEventFilters)
	}
	seen := make(map[string]bool, len(w.EventTypes))
	for i, f := range w.EventTypes {
		if msg := eventFilterProblem(f); msg != "" {
			ve.Add(indexField("eventTypes", i), msg)
		} else if seen[f] {
			ve.Addf(indexField("eventTypes", i), "duplicates %q", f)
		}
		seen[f] = true
	}
	checkText(&ve, "description", w.Description, false, MaxDescriptionLength)
	checkSecretRef(&ve, "secretRef", w.SecretRef, false)
	checkSecretRef(&ve, "previousSecretRef", w.PreviousSecretRef, false)
	if w.PreviousSecretRef != "" && w.PreviousSecretExpiresAt == nil {
		ve.Add("previousSecretExpiresAt", "is required while a previous secret is kept")
	}
	checkRate(&ve, "rateLimitPerSecond", w.RateLimitPerSecond, MaxWebhookRatePerSecond)
	checkEnum(&ve, "status", w.Status, WebhookActive, WebhookDisabled)
	checkText(&ve, "disabledReason", w.DisabledReason, false, MaxDescriptionLength)
	return ve.Err()
}
