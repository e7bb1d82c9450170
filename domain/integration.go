package domain

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

type IntegrationStatus string

const (
	IntegrationActive   IntegrationStatus = "active"
	IntegrationPaused   IntegrationStatus = "paused"
	IntegrationError    IntegrationStatus = "error"
	IntegrationDisabled IntegrationStatus = "disabled"
)

// Integration is a tenant's installed catalog entry (container
// integration_integrations, partition "tenantId").
type Integration struct {
	ID               string            `json:"id"`
	TenantID         string            `json:"tenantId"`
	CatalogEntryID   string            `json:"catalogEntryId"`
	ProviderID       string            `json:"providerId"`
	ProviderCategory string            `json:"providerCategory"` // the provider's partition key, to read it in one point read
	Name             string            `json:"name"`
	Settings         map[string]string `json:"settings,omitempty"` // non-secret settings only
	Status           IntegrationStatus `json:"status"`
	IngressSecretRef string            `json:"ingressSecretRef,omitempty"` // reference into Secret Management, never the secret
	CreatedAt        time.Time         `json:"createdAt"`
	UpdatedAt        time.Time         `json:"updatedAt"`
}

func (i Integration) Key() (partitionKey, id string) { return i.TenantID, i.ID }
func (Integration) Container() string                { return ContainerIntegrations }

func (i Integration) Validate() error {
	var ve ValidationError
	checkID(&ve, "id", i.ID)
	checkID(&ve, "tenantId", i.TenantID)
	checkID(&ve, "catalogEntryId", i.CatalogEntryID)
	checkID(&ve, "providerId", i.ProviderID)
	checkCategory(&ve, "providerCategory", i.ProviderCategory)
	checkText(&ve, "name", i.Name, true, MaxNameLength)
	if len(i.Settings) > MaxSettings {
		ve.Addf("settings", "must have at most %d entries", MaxSettings)
	}
	for _, k := range slices.Sorted(maps.Keys(i.Settings)) { // sorted: a stable error list
		v := i.Settings[k]
		field := fmt.Sprintf("settings[%q]", k)
		if !isIdent(k) {
			ve.Add(field, "key must start with a letter and contain only letters, digits, '_' or '-' (at most 64 characters)")
		}
		if len(v) > MaxSettingValueLength {
			ve.Addf(field, "must be at most %d bytes", MaxSettingValueLength)
		}
	}
	checkEnum(&ve, "status", i.Status, IntegrationActive, IntegrationPaused, IntegrationError, IntegrationDisabled)
	checkSecretRef(&ve, "ingressSecretRef", i.IngressSecretRef, false)
	return ve.Err()
}

type ConnectionStatus string

const (
	ConnectionPending   ConnectionStatus = "pending"
	ConnectionConnected ConnectionStatus = "connected"
	ConnectionError     ConnectionStatus = "error"
	ConnectionExpired   ConnectionStatus = "expired"
)

// Connection is the state of an integration's link to the external system
// (container integration_connections, partition "integrationId"). It holds a
// reference to the credentials, never the credentials.
type Connection struct {
	ID             string           `json:"id"`
	IntegrationID  string           `json:"integrationId"`
	TenantID       string           `json:"tenantId"`
	Status         ConnectionStatus `json:"status"`
	CredentialRef  string           `json:"credentialRef,omitempty"`
	TokenExpiresAt *time.Time       `json:"tokenExpiresAt,omitempty"`
	LastError      string           `json:"lastError,omitempty"`
	CreatedAt      time.Time        `json:"createdAt"`
	UpdatedAt      time.Time        `json:"updatedAt"`
}

func (c Connection) Key() (partitionKey, id string) { return c.IntegrationID, c.ID }
func (Connection) Container() string                { return ContainerConnections }

func (c Connection) Validate() error {
	var ve ValidationError
	checkID(&ve, "id", c.ID)
	checkID(&ve, "integrationId", c.IntegrationID)
	checkID(&ve, "tenantId", c.TenantID)
	checkEnum(&ve, "status", c.Status, ConnectionPending, ConnectionConnected, ConnectionError, ConnectionExpired)
	checkSecretRef(&ve, "credentialRef", c.CredentialRef, c.Status == ConnectionConnected)
	return ve.Err()
}
