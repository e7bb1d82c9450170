package domain

// The ten Cosmos containers and the partition key fields the seed architecture
// fixes for them; store.Containers declares them.
const (
	ContainerProviders      = "integration_providers"
	ContainerIntegrations   = "integration_integrations"
	ContainerConnections    = "integration_connections"
	ContainerWebhooks       = "integration_webhooks"
	ContainerSyncTasks      = "integration_sync_tasks"
	ContainerExecutions     = "integration_executions"
	ContainerConflicts      = "integration_conflicts"
	ContainerCatalog        = "integration_catalog"
	ContainerVisibility     = "integration_visibility"
	ContainerSyncConflicts  = "integration_sync_conflicts"
	PartitionKeyTenantID    = "tenantId"
	PartitionKeyCategory    = "category"
	PartitionKeyIntegration = "integrationId"
)
