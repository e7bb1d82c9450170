package domain

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzDecodeMessage feeds arbitrary payloads under arbitrary and registered
// ce-types to DecodeMessage. It must never panic; every error is one of the
// three permanent kinds; a decoded message has the type it was asked for and
// validates; and its JSON is a fixed point: encoding it, decoding that and
// encoding again gives the same bytes (so a worker that re-publishes a
// message it received sends what it got). Seeds: testdata/fuzz/FuzzDecodeMessage.
func FuzzDecodeMessage(f *testing.F) {
	f.Add(TypePublishEvent, []byte(`{"eventId":"e-1","tenantId":"t-1","type":"contact.updated","data":{"a":1},"occurredAt":"2024-03-01T12:00:00Z"}`))
	f.Add(TypeDeliverWebhook, []byte(`{"deliveryId":"d-1","eventId":"e-1","tenantId":"t-1","webhookId":"w-1","eventType":"sync.completed","data":[1,"x"],"attempt":2,"firstAttemptAt":"2024-03-01T12:00:00+01:00"}`))
	f.Add(TypeResolveConflict, []byte(`{"tenantId":"t-1","conflictId":"c-1","actor":"u-1","values":{"address.city":"Lyon","n":1.5e3}}`))
	f.Add(TypeIngressReceived, []byte(`{"ingressId":"i-1","tenantId":"t-1","integrationId":"n-1","headers":{"X-Sig":"ab"},"body":"aGVs\nbG8=","receivedAt":"2024-03-01T12:00:00.123456789Z"}`))
	f.Add(TypeSyncCompleted, []byte(`{"tenantId":"t","executionId":"x","syncTaskId":"s","integrationId":"n","status":"completed","stats":{},"startedAt":"2024-03-01T12:00:00Z","finishedAt":"2024-03-01T12:00:01Z"}`))
	f.Add("com.example.unknown.v1", []byte(`{}`))
	f.Add(TypeRunSync, []byte(`{"executionId":1}`))
	f.Fuzz(func(t *testing.T, ceType string, payload []byte) {
		m, err := DecodeMessage(ceType, payload)
		_, known := LookupMessageType(ceType)
		if err != nil {
			if m != nil {
				t.Fatalf("DecodeMessage returned both a message and the error %v", err)
			}
			unknown := errors.Is(err, ErrUnknownMessageType)
			if unknown == known {
				t.Fatalf("ce-type %q (registered: %v) gave the error %v", ceType, known, err)
			}
			if known && !errors.Is(err, ErrMalformedMessage) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is neither ErrMalformedMessage nor a validation error", err)
			}
			return
		}
		if !known || m.CEType() != ceType {
			t.Fatalf("asked for %q, decoded a %T (%q)", ceType, m, m.CEType())
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("a decoded message does not validate: %v", err)
		}
		first, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("a decoded %T cannot be encoded again: %v", m, err)
		}
		again, err := DecodeMessage(ceType, first)
		if err != nil {
			t.Fatalf("the re-encoded %T no longer decodes: %v\n%s", m, err, first)
		}
		second, err := json.Marshal(again)
		if err != nil || !bytes.Equal(first, second) {
			t.Fatalf("re-encoding is not stable (%v):\nfirst:  %s\nsecond: %s", err, first, second)
		}
	})
}
