package messaging

// Every topic the Integration Manager publishes or consumes is named here and nowhere
// else. On RabbitMQ a topic is the routing key on the one topic exchange; a consumer
// role gets the queue Config.QueueName(topic, role).

// Commands: work for a worker role.
const (
	// TopicCmdEventPublish asks for an event to be published to a tenant's webhooks.
	TopicCmdEventPublish = "integration.cmd.event.publish"
	// TopicCmdWebhookDeliver asks for one delivery (attempt) to one webhook endpoint.
	TopicCmdWebhookDeliver = "integration.cmd.webhook.deliver"
	// TopicCmdSyncRun asks for a sync task to run.
	TopicCmdSyncRun = "integration.cmd.sync.run"
	// TopicCmdConflictResolve asks for a detected conflict to be resolved.
	TopicCmdConflictResolve = "integration.cmd.conflict.resolve"
	// TopicIngressReceived carries a webhook an external system posted to the API.
	TopicIngressReceived = "integration.ingress.received"
)

// Result events: facts published by the workers.
const (
	TopicEvtWebhookDelivered        = "integration.evt.webhook.delivered"
	TopicEvtWebhookAttemptFailed    = "integration.evt.webhook.attempt_failed"
	TopicEvtWebhookExhausted        = "integration.evt.webhook.exhausted"
	TopicEvtWebhookEndpointDisabled = "integration.evt.webhook.endpoint_disabled"
	TopicEvtSyncStarted             = "integration.evt.sync.started"
	TopicEvtSyncCompleted           = "integration.evt.sync.completed"
	TopicEvtSyncFailed              = "integration.evt.sync.failed"
	TopicEvtConflictDetected        = "integration.evt.conflict.detected"
	TopicEvtConflictResolved        = "integration.evt.conflict.resolved"
	TopicEvtConflictEscalated       = "integration.evt.conflict.escalated"
)

// TopicPoison receives messages no handler can ever process, with the reason.
const TopicPoison = "integration.poison"

// TopicKind says what travels on a topic.
type TopicKind string

// Topic kinds.
const (
	KindCommand TopicKind = "command"
	KindEvent   TopicKind = "event"
	KindPoison  TopicKind = "poison"
)

// TopicInfo describes one topic, for documentation, topology checks and tests.
type TopicInfo struct {
	Name        string
	Kind        TopicKind
	Description string
}

// Topics lists every topic. It returns a new slice on each call.
func Topics() []TopicInfo {
	return []TopicInfo{
		{TopicCmdEventPublish, KindCommand, "publish an event to every matching webhook of a tenant"},
		{TopicCmdWebhookDeliver, KindCommand, "deliver one event to one webhook endpoint"},
		{TopicCmdSyncRun, KindCommand, "run a sync task"},
		{TopicCmdConflictResolve, KindCommand, "resolve a detected conflict (strategy or manual decision)"},
		{TopicIngressReceived, KindCommand, "a webhook posted by an external system, accepted by the API"},
		{TopicEvtWebhookDelivered, KindEvent, "an endpoint accepted a delivery"},
		{TopicEvtWebhookAttemptFailed, KindEvent, "a delivery attempt failed and will be retried"},
		{TopicEvtWebhookExhausted, KindEvent, "a delivery used up its attempts"},
		{TopicEvtWebhookEndpointDisabled, KindEvent, "an endpoint was disabled after repeated failures"},
		{TopicEvtSyncStarted, KindEvent, "a sync run started"},
		{TopicEvtSyncCompleted, KindEvent, "a sync run completed"},
		{TopicEvtSyncFailed, KindEvent, "a sync run failed"},
		{TopicEvtConflictDetected, KindEvent, "a sync found a conflict"},
		{TopicEvtConflictResolved, KindEvent, "a conflict was resolved"},
		{TopicEvtConflictEscalated, KindEvent, "a conflict needs a manual decision"},
		{TopicPoison, KindPoison, "messages that can never be processed, with reason_poisoned"},
	}
}
