package domain

import (
	"crypto/sha256"
	"encoding/base32"
	"strconv"
	"strings"
	"time"
)

// DeterministicID derives an id from its parts, so a redelivered message maps
// to the record its first delivery created (create-if-absent then succeeds or
// conflicts instead of duplicating). The result is prefix + "_" + the first 26
// characters (130 bits) of the lowercase base32 SHA-256 of the parts joined by
// NUL, which always satisfies IsValidID for a short lowercase prefix.
func DeterministicID(prefix string, parts ...string) string {
	h := sha256.New()
	for i, p := range parts {
		if i > 0 {
			h.Write([]byte{0})
		}
		h.Write([]byte(p))
	}
	// 32 bytes encode to 52 characters plus padding; the first 26 carry no padding.
	sum := strings.ToLower(base32.StdEncoding.EncodeToString(h.Sum(nil))[:26])
	if prefix == "" {
		return sum
	}
	return prefix + "_" + sum
}

// DeliveryID identifies one event's delivery to one endpoint. It is the
// webhook-id receivers see, unchanged across retries.
func DeliveryID(eventID, webhookID string) string {
	return DeterministicID("dlv", eventID, webhookID)
}

// AttemptExecutionID identifies the execution record of one delivery attempt.
func AttemptExecutionID(deliveryID string, attempt int) string {
	return DeterministicID("att", deliveryID, strconv.Itoa(attempt))
}

// ScheduledRunID identifies the sync run the scheduler enqueues for one slot,
// so replicas that enqueue the same slot collide instead of running twice.
// slot must be the slot's start (Schedule.Slot gives it, for intervals and cron alike).
func ScheduledRunID(syncTaskID string, slot time.Time) string {
	return DeterministicID("run", syncTaskID, slot.UTC().Format(time.RFC3339Nano))
}

// ConflictID identifies a conflict found by one sync run on one record, so a
// redelivered run finds its conflicts again rather than adding new ones.
func ConflictID(executionID, entity, recordKey string) string {
	return DeterministicID("cfl", executionID, entity, recordKey)
}
