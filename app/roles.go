package app

import "github.com/castiel/integration-manager/messaging"

// Consumer roles: each is one queue per topic on RabbitMQ, shared by all of
// the role's replicas.
const (
	RoleWebhookDispatcher = "webhook-dispatcher"
	RoleSyncWorker        = "sync-worker"
	RoleConflictResolver  = "conflict-resolver"
	RolePoisonRecorder    = "poison-recorder"
)

// Consumption says which role consumes which topics. Every process declares
// these queues at start-up, so a command published before its worker first
// runs waits in its queue instead of being dropped by the exchange.
func Consumption() map[string][]string {
	return map[string][]string{
		RoleWebhookDispatcher: {messaging.TopicCmdEventPublish, messaging.TopicCmdWebhookDeliver},
		RoleSyncWorker:        {messaging.TopicCmdSyncRun, messaging.TopicIngressReceived},
		RoleConflictResolver:  {messaging.TopicCmdConflictResolve, messaging.TopicEvtConflictDetected},
		RolePoisonRecorder:    {messaging.TopicPoison},
	}
}
