package messaging

import (
	"encoding/json"
	"fmt"
	"time"

	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
)

// headerMarshaler writes messages exactly like watermill-amqp's DefaultMarshaler
// (persistent, metadata as headers, the UUID in _watermill_message_uuid) and reads them
// leniently. The default Unmarshal fails on any non-string header, and the broker adds
// some (x-death tables on dead-lettered messages, x-delivery-count integers on quorum
// queues): such a message would be nacked and redelivered forever. Here every header
// becomes a string instead, and a message from a foreign producer without our UUID
// header still gets an id.
type headerMarshaler struct {
	wamqp.DefaultMarshaler
}

var _ wamqp.Marshaler = headerMarshaler{}

// Marshal also fills the AMQP properties from the envelope, so that the management UI
// and other AMQP tools show the id, type and correlation.
func (m headerMarshaler) Marshal(msg *message.Message) (amqp.Publishing, error) {
	p, err := m.DefaultMarshaler.Marshal(msg)
	if err != nil {
		return p, err
	}
	// Only the subscriber that receives a message may say it is a first delivery.
	delete(p.Headers, metaFirstDelivery)
	p.MessageId = msg.UUID
	p.Type = msg.Metadata.Get(MetaType)
	p.CorrelationId = msg.Metadata.Get(MetaCorrelation)
	if msg.Metadata.Get(MetaSpecVersion) != "" {
		p.ContentType = "application/json"
	}
	return p, nil
}

func (m headerMarshaler) Unmarshal(d amqp.Delivery) (*message.Message, error) {
	uuidKey := wamqp.DefaultMessageUUIDHeaderKey
	if m.MessageUUIDHeaderKey != "" {
		uuidKey = m.MessageUUIDHeaderKey
	}
	metadata := make(message.Metadata, len(d.Headers))
	var id string
	for key, value := range d.Headers {
		s, ok := headerString(value)
		if !ok {
			continue
		}
		if key == uuidKey {
			id = s
			continue
		}
		metadata[key] = s
	}
	if id == "" {
		id = firstNonEmpty(metadata[MetaID], d.MessageId, uuid.NewString())
	}
	msg := message.NewMessage(id, d.Body)
	msg.Metadata = metadata
	return msg, nil
}

// headerString renders an AMQP header value as a string; ok is false for values that
// carry nothing (nil) and are dropped.
func headerString(v any) (s string, ok bool) {
	switch x := v.(type) {
	case nil:
		return "", false
	case string:
		return x, true
	case []byte:
		return string(x), true
	case time.Time:
		return x.UTC().Format(time.RFC3339), true
	case amqp.Table, []any:
		// x-death is a list of tables; JSON keeps it readable for an operator.
		b, err := json.Marshal(x)
		if err != nil {
			return "", false
		}
		return string(b), true
	default:
		// bool, all integer and float widths, amqp.Decimal.
		return fmt.Sprint(x), true
	}
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
