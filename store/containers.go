package store

import (
	"time"

	"github.com/castiel/integration-manager/domain"
)

// Containers lists every container the product uses, with the partition keys
// the seed architecture fixes. Providers and the catalog are small, global
// reference data partitioned by category, so they alone may be queried across
// partitions; executions expire after the retention period.
func Containers(executionRetention time.Duration) []ContainerSpec {
	return []ContainerSpec{
		{Name: domain.ContainerProviders, PartitionKey: domain.PartitionKeyCategory, CrossPartition: true},
		{Name: domain.ContainerIntegrations, PartitionKey: domain.PartitionKeyTenantID},
		{Name: domain.ContainerConnections, PartitionKey: domain.PartitionKeyIntegration},
		{Name: domain.ContainerWebhooks, PartitionKey: domain.PartitionKeyTenantID},
		{Name: domain.ContainerSyncTasks, PartitionKey: domain.PartitionKeyTenantID},
		{Name: domain.ContainerExecutions, PartitionKey: domain.PartitionKeyTenantID, TTL: executionRetention},
		{Name: domain.ContainerConflicts, PartitionKey: domain.PartitionKeyTenantID},
		{Name: domain.ContainerCatalog, PartitionKey: domain.PartitionKeyCategory, CrossPartition: true},
		{Name: domain.ContainerVisibility, PartitionKey: domain.PartitionKeyTenantID},
		{Name: domain.ContainerSyncConflicts, PartitionKey: domain.PartitionKeyTenantID},
	}
}

// Short names of the containers for store code and its tests.
const (
	ProvidersContainer     = domain.ContainerProviders
	IntegrationsContainer  = domain.ContainerIntegrations
	ConnectionsContainer   = domain.ContainerConnections
	WebhooksContainer      = domain.ContainerWebhooks
	SyncTasksContainer     = domain.ContainerSyncTasks
	ExecutionsContainer    = domain.ContainerExecutions
	ConflictsContainer     = domain.ContainerConflicts
	CatalogContainer       = domain.ContainerCatalog
	VisibilityContainer    = domain.ContainerVisibility
	SyncConflictsContainer = domain.ContainerSyncConflicts
)
