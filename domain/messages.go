package domain

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// CloudEvents type names (ce-type) of every message on the broker. The
// version suffix changes only with an incompatible payload; adding a field
// keeps the name, since decoding ignores fields it does not know.
const (
	// Commands (work for a worker).
	TypePublishEvent    = "com.castiel.integration.event.publish.v1"
	TypeDeliverWebhook  = "com.castiel.integration.webhook.deliver.v1"
	TypeRunSync         = "com.castiel.integration.sync.run.v1"
	TypeResolveConflict = "com.castiel.integration.conflict.resolve.v1"
	TypeIngressReceived = "com.castiel.integration.ingress.received.v1"

	// Events (facts a worker reports).
	TypeWebhookDelivered        = "com.castiel.integration.webhook.delivered.v1"
	TypeWebhookAttemptFailed    = "com.castiel.integration.webhook.attempt_failed.v1"
	TypeWebhookExhausted        = "com.castiel.integration.webhook.exhausted.v1"
	TypeWebhookEndpointDisabled = "com.castiel.integration.webhook.endpoint_disabled.v1"
	TypeSyncStarted             = "com.castiel.integration.sync.started.v1"
	TypeSyncCompleted           = "com.castiel.integration.sync.completed.v1"
	TypeSyncFailed              = "com.castiel.integration.sync.failed.v1"
	TypeConflictDetected        = "com.castiel.integration.conflict.detected.v1"
	TypeConflictResolved        = "com.castiel.integration.conflict.resolved.v1"
	TypeConflictEscalated       = "com.castiel.integration.conflict.escalated.v1"
)

// Message is a command or event payload.
type Message interface {
	CEType() string
	Validate() error
}

type MessageKind string

const (
	KindCommand MessageKind = "command"
	KindEvent   MessageKind = "event"
)

// MessageType describes one registered message; New returns a pointer to
// decode into.
type MessageType struct {
	Name string // ce-type
	Kind MessageKind
	New  func() Message
}

// ErrUnknownMessageType: the ce-type is not registered. Permanent.
var ErrUnknownMessageType = errors.New("unknown message type")

// ErrMalformedMessage: the payload is not the JSON of its type. Permanent.
var ErrMalformedMessage = errors.New("malformed message")

// MessageTypes lists every message the fleet exchanges.
func MessageTypes() []MessageType {
	return []MessageType{
		{TypePublishEvent, KindCommand, func() Message { return new(PublishEvent) }},
		{TypeDeliverWebhook, KindCommand, func() Message { return new(DeliverWebhook) }},
		{TypeRunSync, KindCommand, func() Message { return new(RunSync) }},
		{TypeResolveConflict, KindCommand, func() Message { return new(ResolveConflict) }},
		{TypeIngressReceived, KindCommand, func() Message { return new(IngressReceived) }},
		{TypeWebhookDelivered, KindEvent, func() Message { return new(WebhookDelivered) }},
		{TypeWebhookAttemptFailed, KindEvent, func() Message { return new(WebhookAttemptFailed) }},
		{TypeWebhookExhausted, KindEvent, func() Message { return new(WebhookExhausted) }},
		{TypeWebhookEndpointDisabled, KindEvent, func() Message { return new(WebhookEndpointDisabled) }},
		{TypeSyncStarted, KindEvent, func() Message { return new(SyncStarted) }},
		{TypeSyncCompleted, KindEvent, func() Message { return new(SyncCompleted) }},
		{TypeSyncFailed, KindEvent, func() Message { return new(SyncFailed) }},
		{TypeConflictDetected, KindEvent, func() Message { return new(ConflictDetected) }},
		{TypeConflictResolved, KindEvent, func() Message { return new(ConflictResolved) }},
		{TypeConflictEscalated, KindEvent, func() Message { return new(ConflictEscalated) }},
	}
}

// LookupMessageType finds a registered message by ce-type.
func LookupMessageType(ceType string) (MessageType, bool) {
	for _, mt := range MessageTypes() {
		if mt.Name == ceType {
			return mt, true
		}
	}
	return MessageType{}, false
}

// DecodeMessage decodes and validates a payload by its ce-type. Every error
// it returns is permanent: ErrUnknownMessageType, ErrMalformedMessage or a
// *ValidationError (ErrInvalid).
func DecodeMessage(ceType string, payload []byte) (Message, error) {
	mt, ok := LookupMessageType(ceType)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownMessageType, ceType)
	}
	m := mt.New()
	if err := json.Unmarshal(payload, m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformedMessage, ceType, err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", ceType, err)
	}
	return m, nil
}

// ---- commands ----

// PublishEvent asks the dispatcher to fan an event out to the tenant's
// matching endpoints.
type PublishEvent struct {
	EventID    string          `json:"eventId"`
	TenantID   string          `json:"tenantId"`
	Type       string          `json:"type"`
	Data       json.RawMessage `json:"data"`
	OccurredAt time.Time       `json:"occurredAt"`
}

func (PublishEvent) CEType() string { return TypePublishEvent }

func (m PublishEvent) Validate() error {
	var ve ValidationError
	checkID(&ve, "eventId", m.EventID)
	checkID(&ve, "tenantId", m.TenantID)
	checkEventType(&ve, "type", m.Type)
	checkJSON(&ve, "data", m.Data)
	checkTime(&ve, "occurredAt", m.OccurredAt)
	return ve.Err()
}

// DeliverWebhook is one event's delivery to one endpoint; DeliveryID stays the
// same across attempts (see DeliveryID).
type DeliverWebhook struct {
	DeliveryID     string          `json:"deliveryId"`
	EventID        string          `json:"eventId"`
	TenantID       string          `json:"tenantId"`
	WebhookID      string          `json:"webhookId"`
	EventType      string          `json:"eventType"`
	Data           json.RawMessage `json:"data"`
	OccurredAt     time.Time       `json:"occurredAt"` // the event's time, for the payload envelope; optional
	Attempt        int             `json:"attempt"`    // 1 for the first
	FirstAttemptAt time.Time       `json:"firstAttemptAt"`
}

func (DeliverWebhook) CEType() string { return TypeDeliverWebhook }

func (m DeliverWebhook) Validate() error {
	var ve ValidationError
	checkID(&ve, "deliveryId", m.DeliveryID)
	checkID(&ve, "eventId", m.EventID)
	checkID(&ve, "tenantId", m.TenantID)
	checkID(&ve, "webhookId", m.WebhookID)
	checkEventType(&ve, "eventType", m.EventType)
	checkJSON(&ve, "data", m.Data)
	checkAttempt(&ve, "attempt", m.Attempt)
	checkTime(&ve, "firstAttemptAt", m.FirstAttemptAt)
	return ve.Err()
}

type SyncTrigger string

const (
	TriggerAPI      SyncTrigger = "api"
	TriggerSchedule SyncTrigger = "schedule"
	TriggerUpstream SyncTrigger = "upstream"
	TriggerIngress  SyncTrigger = "ingress"
)

// RunSync asks a sync worker to run a task once; ExecutionID makes the run
// idempotent (see ScheduledRunID).
type RunSync struct {
	ExecutionID string      `json:"executionId"`
	TenantID    string      `json:"tenantId"`
	SyncTaskID  string      `json:"syncTaskId"`
	Trigger     SyncTrigger `json:"trigger"`
	RequestedAt time.Time   `json:"requestedAt"`
}

func (RunSync) CEType() string { return TypeRunSync }

func (m RunSync) Validate() error {
	var ve ValidationError
	checkID(&ve, "executionId", m.ExecutionID)
	checkID(&ve, "tenantId", m.TenantID)
	checkID(&ve, "syncTaskId", m.SyncTaskID)
	checkEnum(&ve, "trigger", m.Trigger, TriggerAPI, TriggerSchedule, TriggerUpstream, TriggerIngress)
	checkTime(&ve, "requestedAt", m.RequestedAt)
	return ve.Err()
}

// ResolveConflict resolves a conflict. A person picks a Side, edits Values
// (field path -> value), or both (Values override the side). The system
// actor may send neither, meaning "apply the task's conflict policy".
type ResolveConflict struct {
	TenantID   string         `json:"tenantId"`
	ConflictID string         `json:"conflictId"`
	Actor      string         `json:"actor"`
	Side       Side           `json:"side,omitempty"`
	Values     map[string]any `json:"values,omitempty"`
}

func (ResolveConflict) CEType() string { return TypeResolveConflict }

func (m ResolveConflict) Validate() error {
	var ve ValidationError
	checkID(&ve, "tenantId", m.TenantID)
	checkID(&ve, "conflictId", m.ConflictID)
	checkActor(&ve, "actor", m.Actor)
	if m.Side != "" {
		checkEnum(&ve, "side", m.Side, SideExternal, SideInternal)
	}
	if m.Actor != ActorSystem && m.Side == "" && len(m.Values) == 0 {
		ve.Add("side", "choose a side or provide values")
	}
	for _, k := range slices.Sorted(maps.Keys(m.Values)) { // sorted: a stable error list
		checkDottedPath(&ve, fmt.Sprintf("values[%q]", k), k, true)
	}
	return ve.Err()
}

// IngressReceived carries a post from an external system, accepted by the API
// after signature verification. Headers must have passed RedactHeaders.
type IngressReceived struct {
	IngressID     string            `json:"ingressId"`
	TenantID      string            `json:"tenantId"`
	IntegrationID string            `json:"integrationId"`
	Headers       map[string]string `json:"headers,omitempty"`
	Body          []byte            `json:"body"` // base64 in JSON
	ReceivedAt    time.Time         `json:"receivedAt"`
}

func (IngressReceived) CEType() string { return TypeIngressReceived }

func (m IngressReceived) Validate() error {
	var ve ValidationError
	checkID(&ve, "ingressId", m.IngressID)
	checkID(&ve, "tenantId", m.TenantID)
	checkID(&ve, "integrationId", m.IntegrationID)
	if len(m.Body) > MaxPayloadBytes {
		ve.Addf("body", "must be at most %d bytes", MaxPayloadBytes)
	}
	for _, k := range slices.Sorted(maps.Keys(m.Headers)) {
		if !isToken(k) {
			ve.Addf("headers", "%q is not a valid header name", k)
		}
	}
	checkTime(&ve, "receivedAt", m.ReceivedAt)
	return ve.Err()
}

// ---- events ----
// Events carry ids, statuses, counts and reasons: never secrets, payloads or
// record contents. A consumer needing more reads the record by its id.

// WebhookDelivered: the endpoint answered 2xx.
type WebhookDelivered struct {
	TenantID       string    `json:"tenantId"`
	WebhookID      string    `json:"webhookId"`
	DeliveryID     string    `json:"deliveryId"`
	EventID        string    `json:"eventId"`
	EventType      string    `json:"eventType"`
	ExecutionID    string    `json:"executionId"`
	Attempt        int       `json:"attempt"`
	ResponseStatus int       `json:"responseStatus"`
	DurationMs     int64     `json:"durationMs"`
	DeliveredAt    time.Time `json:"deliveredAt"`
}

func (WebhookDelivered) CEType() string { return TypeWebhookDelivered }

func (m WebhookDelivered) Validate() error {
	var ve ValidationError
	checkDeliveryRefs(&ve, m.TenantID, m.WebhookID, m.DeliveryID, m.EventID, m.EventType, m.ExecutionID)
	checkAttempt(&ve, "attempt", m.Attempt)
	checkTime(&ve, "deliveredAt", m.DeliveredAt)
	return ve.Err()
}

// WebhookAttemptFailed: one attempt failed and another is scheduled.
type WebhookAttemptFailed struct {
	TenantID       string    `json:"tenantId"`
	WebhookID      string    `json:"webhookId"`
	DeliveryID     string    `json:"deliveryId"`
	EventID        string    `json:"eventId"`
	EventType      string    `json:"eventType"`
	ExecutionID    string    `json:"executionId"`
	Attempt        int       `json:"attempt"`
	ResponseStatus int       `json:"responseStatus,omitempty"` // 0: no response
	ErrorClass     string    `json:"errorClass"`
	Reason         string    `json:"reason"`
	NextAttemptAt  time.Time `json:"nextAttemptAt"`
	FailedAt       time.Time `json:"failedAt"`
}

func (WebhookAttemptFailed) CEType() string { return TypeWebhookAttemptFailed }

func (m WebhookAttemptFailed) Validate() error {
	var ve ValidationError
	checkDeliveryRefs(&ve, m.TenantID, m.WebhookID, m.DeliveryID, m.EventID, m.EventType, m.ExecutionID)
	checkAttempt(&ve, "attempt", m.Attempt)
	checkText(&ve, "errorClass", m.ErrorClass, true, MaxNameLength)
	checkTime(&ve, "nextAttemptAt", m.NextAttemptAt)
	checkTime(&ve, "failedAt", m.FailedAt)
	return ve.Err()
}

// WebhookExhausted: the last attempt failed; the delivery is given up.
type WebhookExhausted struct {
	TenantID           string    `json:"tenantId"`
	WebhookID          string    `json:"webhookId"`
	DeliveryID         string    `json:"deliveryId"`
	EventID            string    `json:"eventId"`
	EventType          string    `json:"eventType"`
	ExecutionID        string    `json:"executionId"`
	Attempts           int       `json:"attempts"`
	LastResponseStatus int       `json:"lastResponseStatus,omitempty"`
	ErrorClass         string    `json:"errorClass"`
	Reason             string    `json:"reason"`
	ExhaustedAt        time.Time `json:"exhaustedAt"`
}

func (WebhookExhausted) CEType() string { return TypeWebhookExhausted }

func (m WebhookExhausted) Validate() error {
	var ve ValidationError
	checkDeliveryRefs(&ve, m.TenantID, m.WebhookID, m.DeliveryID, m.EventID, m.EventType, m.ExecutionID)
	checkAttempt(&ve, "attempts", m.Attempts)
	checkText(&ve, "errorClass", m.ErrorClass, true, MaxNameLength)
	checkTime(&ve, "exhaustedAt", m.ExhaustedAt)
	return ve.Err()
}

// WebhookEndpointDisabled: the endpoint failed for too long and was disabled.
type WebhookEndpointDisabled struct {
	TenantID     string     `json:"tenantId"`
	WebhookID    string     `json:"webhookId"`
	Reason       string     `json:"reason"`
	FailingSince *time.Time `json:"failingSince,omitempty"`
	DisabledAt   time.Time  `json:"disabledAt"`
}

func (WebhookEndpointDisabled) CEType() string { return TypeWebhookEndpointDisabled }

func (m WebhookEndpointDisabled) Validate() error {
	var ve ValidationError
	checkID(&ve, "tenantId", m.TenantID)
	checkID(&ve, "webhookId", m.WebhookID)
	checkText(&ve, "reason", m.Reason, true, MaxDescriptionLength)
	checkTime(&ve, "disabledAt", m.DisabledAt)
	return ve.Err()
}

// SyncStarted: a worker began a run.
type SyncStarted struct {
	TenantID      string        `json:"tenantId"`
	ExecutionID   string        `json:"executionId"`
	SyncTaskID    string        `json:"syncTaskId"`
	IntegrationID string        `json:"integrationId"`
	Entity        string        `json:"entity"`
	Direction     SyncDirection `json:"direction"`
	Mode          SyncMode      `json:"mode"`
	Trigger       SyncTrigger   `json:"trigger"`
	StartedAt     time.Time     `json:"startedAt"`
}

func (SyncStarted) CEType() string { return TypeSyncStarted }

func (m SyncStarted) Validate() error {
	var ve ValidationError
	checkSyncRefs(&ve, m.TenantID, m.ExecutionID, m.SyncTaskID, m.IntegrationID)
	checkText(&ve, "entity", m.Entity, true, 64)
	checkEnum(&ve, "direction", m.Direction, DirectionPull, DirectionPush, DirectionBidirectional)
	checkEnum(&ve, "mode", m.Mode, ModeIncremental, ModeFullRefresh)
	checkEnum(&ve, "trigger", m.Trigger, TriggerAPI, TriggerSchedule, TriggerUpstream, TriggerIngress)
	checkTime(&ve, "startedAt", m.StartedAt)
	return ve.Err()
}

// SyncCompleted: a run finished, possibly with some records failed.
type SyncCompleted struct {
	TenantID      string          `json:"tenantId"`
	ExecutionID   string          `json:"executionId"`
	SyncTaskID    string          `json:"syncTaskId"`
	IntegrationID string          `json:"integrationId"`
	Status        ExecutionStatus `json:"status"` // completed or completed_with_errors
	Stats         SyncStats       `json:"stats"`
	StartedAt     time.Time       `json:"startedAt"`
	FinishedAt    time.Time       `json:"finishedAt"`
}

func (SyncCompleted) CEType() string { return TypeSyncCompleted }

func (m SyncCompleted) Validate() error {
	var ve ValidationError
	checkSyncRefs(&ve, m.TenantID, m.ExecutionID, m.SyncTaskID, m.IntegrationID)
	checkEnum(&ve, "status", m.Status, ExecCompleted, ExecCompletedWithErrors)
	checkStats(&ve, "stats", m.Stats)
	checkTime(&ve, "startedAt", m.StartedAt)
	checkTime(&ve, "finishedAt", m.FinishedAt)
	return ve.Err()
}

// SyncFailed: a run stopped without finishing; Stats count what it did first.
type SyncFailed struct {
	TenantID      string    `json:"tenantId"`
	ExecutionID   string    `json:"executionId"`
	SyncTaskID    string    `json:"syncTaskId"`
	IntegrationID string    `json:"integrationId"`
	ErrorClass    string    `json:"errorClass"`
	Reason        string    `json:"reason"`
	Stats         SyncStats `json:"stats"`
	FailedAt      time.Time `json:"failedAt"`
}

func (SyncFailed) CEType() string { return TypeSyncFailed }

func (m SyncFailed) Validate() error {
	var ve ValidationError
	checkSyncRefs(&ve, m.TenantID, m.ExecutionID, m.SyncTaskID, m.IntegrationID)
	checkText(&ve, "errorClass", m.ErrorClass, true, MaxNameLength)
	checkText(&ve, "reason", m.Reason, true, MaxDescriptionLength)
	checkStats(&ve, "stats", m.Stats)
	checkTime(&ve, "failedAt", m.FailedAt)
	return ve.Err()
}

// ConflictDetected: a sync run stored a conflict; the resolver reads it by id.
type ConflictDetected struct {
	TenantID      string       `json:"tenantId"`
	ConflictID    string       `json:"conflictId"`
	SyncTaskID    string       `json:"syncTaskId"`
	IntegrationID string       `json:"integrationId"`
	ExecutionID   string       `json:"executionId"`
	Entity        string       `json:"entity"`
	RecordKey     string       `json:"recordKey"`
	Kind          ConflictKind `json:"kind"`
	DetectedAt    time.Time    `json:"detectedAt"`
}

func (ConflictDetected) CEType() string { return TypeConflictDetected }

func (m ConflictDetected) Validate() error {
	var ve ValidationError
	checkSyncRefs(&ve, m.TenantID, m.ExecutionID, m.SyncTaskID, m.IntegrationID)
	checkID(&ve, "conflictId", m.ConflictID)
	checkText(&ve, "entity", m.Entity, true, 64)
	checkText(&ve, "recordKey", m.RecordKey, true, MaxPathLength)
	checkEnum(&ve, "kind", m.Kind, ConflictUpdateUpdate, ConflictDeleteUpdate, ConflictUpdateDelete)
	checkTime(&ve, "detectedAt", m.DetectedAt)
	return ve.Err()
}

// ConflictResolved: a resolution was applied (or the conflict was superseded).
type ConflictResolved struct {
	TenantID   string            `json:"tenantId"`
	ConflictID string            `json:"conflictId"`
	SyncTaskID string            `json:"syncTaskId"`
	Strategy   ConflictStrategy  `json:"strategy"`
	Actor      string            `json:"actor"`
	Outcome    ResolutionOutcome `json:"outcome"` // applied or superseded
	Fields     int               `json:"fields"`  // number of field decisions
	ResolvedAt time.Time         `json:"resolvedAt"`
}

func (ConflictResolved) CEType() string { return TypeConflictResolved }

func (m ConflictResolved) Validate() error {
	var ve ValidationError
	checkID(&ve, "tenantId", m.TenantID)
	checkID(&ve, "conflictId", m.ConflictID)
	checkID(&ve, "syncTaskId", m.SyncTaskID)
	checkEnum(&ve, "strategy", m.Strategy, ConflictStrategies()...)
	checkActor(&ve, "actor", m.Actor)
	checkEnum(&ve, "outcome", m.Outcome, OutcomeApplied, OutcomeSuperseded)
	if m.Fields < 0 {
		ve.Add("fields", "must not be negative")
	}
	checkTime(&ve, "resolvedAt", m.ResolvedAt)
	return ve.Err()
}

// ConflictEscalated: the conflict needs a person.
type ConflictEscalated struct {
	TenantID    string           `json:"tenantId"`
	ConflictID  string           `json:"conflictId"`
	SyncTaskID  string           `json:"syncTaskId"`
	Strategy    ConflictStrategy `json:"strategy"`
	Reason      string           `json:"reason"`
	EscalatedAt time.Time        `json:"escalatedAt"`
}

func (ConflictEscalated) CEType() string { return TypeConflictEscalated }

func (m ConflictEscalated) Validate() error {
	var ve ValidationError
	checkID(&ve, "tenantId", m.TenantID)
	checkID(&ve, "conflictId", m.ConflictID)
	checkID(&ve, "syncTaskId", m.SyncTaskID)
	checkEnum(&ve, "strategy", m.Strategy, ConflictStrategies()...)
	checkText(&ve, "reason", m.Reason, true, MaxDescriptionLength)
	checkTime(&ve, "escalatedAt", m.EscalatedAt)
	return ve.Err()
}

// ---- shared checks ----

func checkJSON(ve *ValidationError, field string, v json.RawMessage) {
	switch {
	case len(v) == 0:
		ve.Add(field, "is required (JSON)")
	case len(v) > MaxPayloadBytes:
		ve.Addf(field, "must be at most %d bytes", MaxPayloadBytes)
	case !json.Valid(v):
		ve.Add(field, "must be valid JSON")
	}
}

func checkAttempt(ve *ValidationError, field string, n int) {
	if n < 1 || n > MaxAttempts {
		ve.Addf(field, "must be between 1 and %d", MaxAttempts)
	}
}

func checkActor(ve *ValidationError, field, actor string) {
	if actor != ActorSystem {
		checkID(ve, field, actor)
	}
}

func checkStats(ve *ValidationError, field string, s SyncStats) {
	if s.Added < 0 || s.Updated < 0 || s.Deleted < 0 || s.Unchanged < 0 || s.Conflicts < 0 || s.Failed < 0 {
		ve.Add(field, "counts must not be negative")
	}
}

func checkDeliveryRefs(ve *ValidationError, tenantID, webhookID, deliveryID, eventID, eventType, executionID string) {
	checkID(ve, "tenantId", tenantID)
	checkID(ve, "webhookId", webhookID)
	checkID(ve, "deliveryId", deliveryID)
	checkID(ve, "eventId", eventID)
	checkEventType(ve, "eventType", eventType)
	checkID(ve, "executionId", executionID)
}

func checkSyncRefs(ve *ValidationError, tenantID, executionID, syncTaskID, integrationID string) {
	checkID(ve, "tenantId", tenantID)
	checkID(ve, "executionId", executionID)
	checkID(ve, "syncTaskId", syncTaskID)
	checkID(ve, "integrationId", integrationID)
}

// sensitiveHeader reports whether a header may carry a credential.
func sensitiveHeader(name string) bool {
	n := strings.ToLower(name)
	switch n {
	case "authorization", "proxy-authorization", "cookie", "set-cookie":
		return true
	}
	for _, s := range []string{"secret", "token", "password", "api-key", "apikey", "session"} {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// RedactedValue replaces the value of a sensitive header.
const RedactedValue = "[redacted]"

// RedactHeaders returns a copy of h with credential-bearing headers
// (Authorization, Cookie, *token*, *secret*, *api-key*...) replaced by
// RedactedValue, for execution records and ingress messages. Signature
// headers are kept: an HMAC does not reveal its key.
func RedactHeaders(h map[string]string) map[string]string {
	if h == nil {
		return nil
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		if sensitiveHeader(k) {
			v = RedactedValue
		}
		out[k] = v
	}
	return out
}
