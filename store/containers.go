package store

import (
	"time"

	"github.com/castiel/integration-manager/domain"
)

// Containers lists every container the product uses, with the partition keys
// the seed architecture fixes. Cross-partition queries (filters only) are
// allowed where a reader must see every partition: providers and the catalog
// (small, global reference data), sync tasks (the scheduler lists every
// tenant's due tasks) and poison messages (operators). Executions expire after
// the retention period.
func Containers(executionRetention time.Duration) []ContainerSpec {
	return []ContainerSpec{
		{Name: domain.ContainerProviders, PartitionKey: domain.PartitionKeyCategory, CrossPartition: true},
		{Name: domain.ContainerIntegrations, PartitionKey: domain.PartitionKeyTenantID},
		{Name: domain.ContainerConnections, PartitionKey: domain.PartitionKeyIntegration},
		{Name: domain.ContainerWebhooks, PartitionKey: domain.PartitionKeyTenantID},
		{Name: domain.ContainerSyncTasks, PartitionKey: domain.PartitionKeyTenantID, CrossPartition: true}, // the scheduler lists due tasks of every tenant
		{Name: domain.ContainerExecutions, PartitionKey: domain.PartitionKeyTenantID, TTL: executionRetention},
		{Name: domain.ContainerConflicts, PartitionKey: domain.PartitionKeyTenantID},
		{Name: domain.ContainerCatalog, PartitionKey: domain.PartitionKeyCategory, CrossPartition: true},
		{Name: domain.ContainerVisibility, PartitionKey: domain.PartitionKeyTenantID},
		{Name: domain.ContainerSyncConflicts, PartitionKey: domain.PartitionKeyTenantID},
		// Beyond the seed: the API's Idempotency-Key records (per tenant, kept a day).
		{Name: IdempotencyContainer, PartitionKey: "tenantId", TTL: IdempotencyRetention},
		// Beyond the seed: poison messages for operators to list and re-publish,
		// partitioned by their original topic and listed across topics.
		{Name: PoisonContainer, PartitionKey: "topic", CrossPartition: true, TTL: PoisonRetention},
		// Beyond the seed: the standalone stand-in of Secret Management (encrypted values).
		{Name: LocalSecretsContainer, PartitionKey: "tenantId"},
		// Beyond the seed: standalone only: delayed messages (webhook retries) waiting
		// for their time, so they survive a restart of the single process.
		{Name: ScheduledContainer, PartitionKey: "role"},
		// Beyond the seed: per-record sync state (content hash of each side and the
		// base version at the last sync), one partition per sync task so a run reads
		// and writes only its own.
		{Name: SyncStateContainer, PartitionKey: "syncTaskId"},
		// Beyond the seed: standalone only: the embedded stand-in of the Shard Manager,
		// one partition per tenant and entity.
		{Name: LocalShardsContainer, PartitionKey: "partition"},
	}
}

// Containers the seed does not list, added for capabilities that need them.
const (
	IdempotencyContainer  = "integration_idempotency"
	PoisonContainer       = "integration_poison"
	LocalSecretsContainer = "integration_local_secrets"
	ScheduledContainer    = "integration_scheduled"
	SyncStateContainer    = "integration_sync_state"
	LocalShardsContainer  = "integration_local_shards"

	IdempotencyRetention = 24 * time.Hour
	PoisonRetention      = 14 * 24 * time.Hour
)
