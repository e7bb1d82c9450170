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
	if prefix == "" {
		return string(appendHashID(make([]byte, 0, hashIDLen), parts))
	}
	b := make([]byte, 0, len(prefix)+1+hashIDLen)
	b = append(append(b, prefix...), '_')
	return string(appendHashID(b, parts))
}

// hashIDLen is the length of the hash part of a DeterministicID.
const hashIDLen = 26

// appendHashID appends the first 26 characters (130 bits) of the lowercase
// base32 SHA-256 of parts joined by NUL.
func appendHashID(b []byte, parts []string) []byte {
	n := len(parts)
	for _, p := range parts {
		n += len(p)
	}
	var stack [256]byte
	joined := stack[:0]
	if n > len(stack) {
		joined = make([]byte, 0, n)
	}
	for i, p := range parts {
		if i > 0 {
			joined = append(joined, 0)
		}
		joined = append(joined, p...)
	}
	sum := sha256.Sum256(joined)
	// base32 encodes 5 bytes into 8 characters, each block on its own: the
	// first 20 bytes give the first 32 characters of the whole sum's encoding.
	var enc [32]byte
	base32.StdEncoding.Encode(enc[:], sum[:20])
	for _, c := range enc[:hashIDLen] {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return b
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

// OrderedID derives a deterministic id that sorts like key among the ids of
// one scope, so that a store keeping documents in id order (the embedded
// bbolt store) puts records with neighbouring keys (an API's sequential ids)
// on neighbouring pages instead of scattering them: a page of new records
// then rewrites a few pages per commit, not one per record.
//
// The id is prefix + ":" + a 26-character hash of the scope parts (so ids
// stay unique across scopes, which the Cosmos emulator needs) + ":" + key
// with every byte outside [A-Za-z0-9.-] written as "_" and two hex digits
// (so the id satisfies IsValidID and holds none of the characters Cosmos DB
// refuses). A key too long for that falls back to DeterministicID(prefix,
// scope..., key), whose "_" after the prefix keeps the two forms apart.
func OrderedID(prefix string, scope []string, key string) string {
	var buf [64]byte
	return orderedID(orderedHead(buf[:0], prefix, scope), prefix, scope, key)
}

// OrderedIDs returns OrderedID(prefix, scope, ·), the scope hashed once: for
// the ids of many keys of one scope (a sync run's page of records).
func OrderedIDs(prefix string, scope []string) func(key string) string {
	head := orderedHead(nil, prefix, scope)
	return func(key string) string { return orderedID(head, prefix, scope, key) }
}

// orderedHead appends what every OrderedID of the scope starts with.
func orderedHead(b []byte, prefix string, scope []string) []byte {
	b = append(b, prefix...)
	b = append(b, ':')
	b = appendHashID(b, scope)
	return append(b, ':')
}

// orderedID is OrderedID(prefix, scope, key), head its orderedHead.
func orderedID(head []byte, prefix string, scope []string, key string) string {
	n := len(head)
	for i := 0; i < len(key) && n <= MaxIDLength; i++ {
		if orderedRaw(key[i]) {
			n++
		} else {
			n += 3
		}
	}
	if n > MaxIDLength || key == "" {
		return DeterministicID(prefix, append(append([]string(nil), scope...), key)...)
	}
	var b strings.Builder // one allocation: the id
	b.Grow(n)
	b.Write(head)
	const hexDigits = "0123456789abcdef"
	for i := 0; i < len(key); i++ {
		if c := key[i]; orderedRaw(c) {
			b.WriteByte(c)
		} else {
			b.Write([]byte{'_', hexDigits[c>>4], hexDigits[c&0xf]})
		}
	}
	return b.String()
}

func orderedRaw(c byte) bool { return isAlnum(c) || c == '.' || c == '-' }
