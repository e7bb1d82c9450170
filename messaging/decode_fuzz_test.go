package messaging

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"testing"

	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/castiel/integration-manager/domain"
)

// FuzzDecode feeds arbitrary payloads and ce-types to Decode. It must never
// panic; every failure is permanent and is either ErrUnexpectedType (exactly
// when the ce-type is not accepted) or ErrUndecodable (exactly when the
// payload is not JSON, for a raw target); and for the domain's messages,
// whatever domain.DecodeMessage accepts, Decode into the same type accepts
// too, with the same content. Seeds: testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Add(domain.TypeRunSync, domain.TypeRunSync, []byte(`{"executionId":"x-1","tenantId":"t-1","syncTaskId":"s-1","trigger":"api","requestedAt":"2024-03-01T12:00:00Z"}`))
	f.Add(domain.TypeDeliverWebhook, domain.TypeDeliverWebhook, []byte(`{"deliveryId":"d","eventId":"e","tenantId":"t","webhookId":"w","eventType":"a.b","data":null,"attempt":1,"firstAttemptAt":"2024-03-01T12:00:00Z"}`))
	f.Add(domain.TypePublishEvent, domain.TypeRunSync, []byte(`{}`))
	f.Add("", "", []byte(" [1, 2] "))
	f.Add(domain.TypeIngressReceived, domain.TypeIngressReceived, []byte(`{"body":"not base64!"}`))
	f.Add("x", "x", []byte(`{"a":`))
	f.Fuzz(func(t *testing.T, ceType, accepted string, payload []byte) {
		msg := message.NewMessage("m-1", payload)
		msg.Metadata.Set(MetaType, ceType)
		checkError := func(err error, wantType, wantUndecodable bool) {
			t.Helper()
			if err == nil {
				return
			}
			if !IsPermanent(err) {
				t.Fatalf("Decode error %v is not permanent", err)
			}
			if errors.Is(err, ErrUnexpectedType) != wantType || errors.Is(err, ErrUndecodable) != wantUndecodable {
				t.Fatalf("Decode error %v: want unexpected type %v, undecodable %v", err, wantType, wantUndecodable)
			}
		}

		raw, err := Decode[json.RawMessage](msg)
		if (err == nil) != json.Valid(payload) {
			t.Fatalf("Decode of %q without an accept list: %v, but json.Valid says %v", payload, err, json.Valid(payload))
		}
		checkError(err, false, true)
		if err == nil && !bytes.Equal(raw, bytes.TrimSpace(payload)) { // JSON whitespace around the value is dropped
			t.Fatalf("Decode changed the payload: %q became %q", payload, raw)
		}

		_, err = Decode[json.RawMessage](msg, accepted)
		if accepted != ceType {
			if !errors.Is(err, ErrUnexpectedType) {
				t.Fatalf("ce-type %q was decoded although only %q is accepted (err %v)", ceType, accepted, err)
			}
			checkError(err, true, false)
		} else if json.Valid(payload) != (err == nil) {
			t.Fatalf("accepted ce-type %q: Decode = %v, json.Valid = %v", ceType, err, json.Valid(payload))
		}

		switch ceType {
		case domain.TypePublishEvent:
			sameAsDomain[domain.PublishEvent](t, msg)
		case domain.TypeDeliverWebhook:
			sameAsDomain[domain.DeliverWebhook](t, msg)
		case domain.TypeRunSync:
			sameAsDomain[domain.RunSync](t, msg)
		case domain.TypeResolveConflict:
			sameAsDomain[domain.ResolveConflict](t, msg)
		case domain.TypeIngressReceived:
			sameAsDomain[domain.IngressReceived](t, msg)
		case domain.TypeWebhookAttemptFailed:
			sameAsDomain[domain.WebhookAttemptFailed](t, msg)
		case domain.TypeSyncCompleted:
			sameAsDomain[domain.SyncCompleted](t, msg)
		case domain.TypeConflictDetected:
			sameAsDomain[domain.ConflictDetected](t, msg)
		}
	})
}

// sameAsDomain: a payload domain.DecodeMessage accepts decodes through
// Decode[T] as well, into a value with the same JSON.
func sameAsDomain[T domain.Message](t *testing.T, msg *message.Message) {
	t.Helper()
	want, err := domain.DecodeMessage(msg.Metadata.Get(MetaType), msg.Payload)
	if err != nil {
		return
	}
	got, err := Decode[T](msg, want.CEType())
	if err != nil {
		t.Fatalf("domain.DecodeMessage accepted the payload but Decode[%T] refused it: %v", got, err)
	}
	wantJSON, _ := json.Marshal(want)
	gotJSON, _ := json.Marshal(got)
	if !bytes.Equal(wantJSON, gotJSON) {
		t.Fatalf("Decode[%T] and domain.DecodeMessage disagree:\n%s\n%s", got, gotJSON, wantJSON)
	}
}

// FuzzHeaderMarshaler: what headerMarshaler writes it reads back unchanged
// (id, payload and metadata, except the subscriber-only first-delivery mark),
// and reading arbitrary AMQP headers, as a foreign producer or the broker may
// add them, never fails, keeps every non-nil header and always yields an id.
// Seeds: testdata/fuzz/FuzzHeaderMarshaler.
func FuzzHeaderMarshaler(f *testing.F) {
	f.Add("uuid-1", []byte(`{"a":1}`), MetaType, "t.v1", "x-delivery-count", int64(3), "")
	f.Add("", []byte{}, metaFirstDelivery, "1", "x-death", int64(-1), "nested")
	f.Add("id", []byte("\x00\xff"), wamqp.DefaultMessageUUIDHeaderKey, "other", MetaID, int64(0), "")
	f.Fuzz(func(t *testing.T, id string, payload []byte, key, value, foreignKey string, n int64, s string) {
		in := message.NewMessage(id, payload)
		in.Metadata.Set(MetaSpecVersion, SpecVersion)
		in.Metadata.Set(key, value)
		pub, err := headerMarshaler{}.Marshal(in)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		out, err := headerMarshaler{}.Unmarshal(amqp.Delivery{Headers: pub.Headers, Body: pub.Body, MessageId: pub.MessageId})
		if err != nil {
			t.Fatalf("Unmarshal of what Marshal wrote: %v", err)
		}
		want := maps.Clone(in.Metadata)
		delete(want, metaFirstDelivery)
		delete(want, wamqp.DefaultMessageUUIDHeaderKey) // the id travels there
		if !bytes.Equal(out.Payload, payload) || !maps.Equal(out.Metadata, want) {
			t.Fatalf("round trip changed the message:\npayload %q -> %q\nmetadata %q -> %q", payload, out.Payload, in.Metadata, out.Metadata)
		}
		if id != "" && out.UUID != id {
			t.Fatalf("round trip changed the id %q to %q", id, out.UUID)
		}

		headers := amqp.Table{
			key:        value,
			foreignKey: n,
			"bytes":    []byte(s),
			"flag":     n%2 == 0,
			"float":    float64(n) / 3,
			"x-death":  []any{amqp.Table{"reason": s, "count": n}},
			"nil":      nil,
		}
		got, err := headerMarshaler{}.Unmarshal(amqp.Delivery{Headers: headers, Body: payload})
		if err != nil || got.UUID == "" {
			t.Fatalf("Unmarshal of foreign headers: %v (id %q)", err, got.UUID)
		}
		for k, v := range headers {
			_, kept := got.Metadata[k]
			if k != wamqp.DefaultMessageUUIDHeaderKey && kept != (v != nil) {
				t.Fatalf("header %q (%T): kept %v", k, v, kept)
			}
		}
	})
}
