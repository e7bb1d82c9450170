package store

import "time"

// Names of the containers of the seed architecture, with their fixed partition keys.
const (
	ProvidersContainer     = "integration_providers"
	IntegrationsContainer  = "integration_integrations"
	ConnectionsContainer   = "integration_connections"
	WebhooksContainer      = "integration_webhooks"
	SyncTasksContainer     = "integration_sync_tasks"
	ExecutionsContainer    = "integration_executions"
	ConflictsContainer     = "integration_conflicts"
	CatalogContainer       = "integration_catalog"
	VisibilityContainer    = "integration_visibility"
	SyncConflictsContainer = "integration_sync_conflicts"
)

// Containers lists every container the product uses. Providers and the catalog
// are small, global reference data partitioned by category, so they alone may be
// queried across partitions; executions expire after the retention period.
func Containers(executionRetention time.Duration) []ContainerSpec {
	return []ContainerSpec{
		{Name: ProvidersContainer, PartitionKey: "category", CrossPartition: true},
		{Name: IntegrationsContainer, PartitionKey: "tenantId"},
		{Name: ConnectionsContainer, PartitionKey: "integrationId"},
		{Name: WebhooksContainer, PartitionKey: "tenantId"},
		{Name: SyncTasksContainer, PartitionKey: "tenantId"},
		{Name: ExecutionsContainer, PartitionKey: "tenantId", TTL: executionRetention},
		{Name: ConflictsContainer, PartitionKey: "tenantId"},
		{Name: CatalogContainer, PartitionKey: "category", CrossPartition: true},
		{Name: VisibilityContainer, PartitionKey: "tenantId"},
		{Name: SyncConflictsContainer, PartitionKey: "tenantId"},
	}
}
