package messaging

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
)

func TestTopics_NamesAreUniqueValidAndDescribed(t *testing.T) {
	seen := map[string]bool{}
	kinds := map[TopicKind]int{}
	for _, ti := range Topics() {
		if seen[ti.Name] {
			t.Errorf("topic %q is listed twice", ti.Name)
		}
		seen[ti.Name] = true
		kinds[ti.Kind]++
		if err := validateName("topic", ti.Name); err != nil {
			t.Errorf("topic %q cannot be a routing key: %v", ti.Name, err)
		}
		if !strings.HasPrefix(ti.Name, "integration.") {
			t.Errorf("topic %q does not start with integration.", ti.Name)
		}
		if ti.Description == "" {
			t.Errorf("topic %q has no description", ti.Name)
		}
		switch {
		case strings.Contains(ti.Name, ".cmd.") || ti.Name == TopicIngressReceived:
			if ti.Kind != KindCommand {
				t.Errorf("topic %q is a command but listed as %s", ti.Name, ti.Kind)
			}
		case strings.Contains(ti.Name, ".evt."):
			if ti.Kind != KindEvent {
				t.Errorf("topic %q is an event but listed as %s", ti.Name, ti.Kind)
			}
		}
	}
	if kinds[KindCommand] != 5 || kinds[KindEvent] != 10 || kinds[KindPoison] != 1 {
		t.Errorf("want 5 commands, 10 events, 1 poison topic; got %v", kinds)
	}
	if !seen[TopicPoison] {
		t.Errorf("poison topic %q is not listed", TopicPoison)
	}
}

func TestNewMessage_CarriesEnvelopeAndContextCorrelation(t *testing.T) {
	ctx := WithTraceparent(WithCorrelationID(context.Background(), "corr-1"), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	before := time.Now().UTC().Add(-time.Second)
	msg, err := NewMessage(ctx, "castiel.webhook.deliver.v1", "integration-manager/api", "tenant-7", map[string]int{"n": 1})
	if err != nil {
		t.Fatalf("NewMessage: %v", err)
	}
	want := map[string]string{
		MetaID:          msg.UUID,
		MetaType:        "castiel.webhook.deliver.v1",
		MetaSource:      "integration-manager/api",
		MetaSpecVersion: "1.0",
		MetaTenantID:    "tenant-7",
		MetaCorrelation: "corr-1",
		MetaTraceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
	for k, v := range want {
		if got := msg.Metadata.Get(k); got != v {
			t.Errorf("metadata %s = %q, want %q", k, got, v)
		}
	}
	ts, err := time.Parse(time.RFC3339Nano, msg.Metadata.Get(MetaTime))
	if err != nil || ts.Before(before) {
		t.Errorf("ce-time %q is not a current RFC 3339 time (%v)", msg.Metadata.Get(MetaTime), err)
	}
	if string(msg.Payload) != `{"n":1}` {
		t.Errorf("payload = %s, want JSON {\"n\":1}", msg.Payload)
	}
	if CorrelationID(msg.Context()) != "corr-1" {
		t.Errorf("message context lost the correlation id")
	}
}

func TestNewMessage_MakesCorrelationIDWhenContextHasNone(t *testing.T) {
	a, err := NewMessage(context.Background(), "t", "s", "", 1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewMessage(context.Background(), "t", "s", "", 1)
	ca, cb := a.Metadata.Get(MetaCorrelation), b.Metadata.Get(MetaCorrelation)
	if ca == "" || ca == cb {
		t.Errorf("want a fresh correlation id per message without one in context, got %q and %q", ca, cb)
	}
	if _, ok := a.Metadata[MetaTenantID]; ok {
		t.Errorf("an empty tenant id must not be set as metadata")
	}
	if _, ok := a.Metadata[MetaTraceparent]; ok {
		t.Errorf("no traceparent in context must mean no traceparent metadata")
	}
}

func TestNewMessage_RejectsMissingTypeSourceAndUnencodablePayload(t *testing.T) {
	cases := []struct {
		name           string
		ceType, source string
		payload        any
	}{
		{"no type", "", "src", 1},
		{"no source", "type", "", 1},
		{"channel payload", "type", "src", make(chan int)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewMessage(context.Background(), tc.ceType, tc.source, "", tc.payload); !errors.Is(err, ErrInvalidMessage) {
				t.Errorf("want ErrInvalidMessage, got %v", err)
			}
		})
	}
}

func TestPropagatingPublisher_StampsCorrelationFromMessageContext(t *testing.T) {
	var got []*message.Message
	pub := propagatingPublisher{next: publisherFunc(func(_ string, msgs ...*message.Message) error {
		got = append(got, msgs...)
		return nil
	})}
	plain := message.NewMessage("m-1", []byte("{}"))
	plain.SetContext(WithCorrelationID(context.Background(), "from-ctx"))
	kept := message.NewMessage("m-2", []byte("{}"))
	kept.Metadata.Set(MetaCorrelation, "already-set")
	if err := pub.Publish("topic", plain, kept); err != nil {
		t.Fatal(err)
	}
	if c := got[0].Metadata.Get(MetaCorrelation); c != "from-ctx" {
		t.Errorf("message without correlation id got %q, want the context's from-ctx", c)
	}
	if c := got[1].Metadata.Get(MetaCorrelation); c != "already-set" {
		t.Errorf("an existing correlation id was overwritten with %q", c)
	}
	if id := got[0].Metadata.Get(MetaID); id != "m-1" {
		t.Errorf("ce-id = %q, want the message UUID m-1", id)
	}
}

type publisherFunc func(topic string, msgs ...*message.Message) error

func (f publisherFunc) Publish(topic string, msgs ...*message.Message) error {
	return f(topic, msgs...)
}
func (publisherFunc) Close() error { return nil }

func TestPermanent_SurvivesWrappingAndNilStaysNil(t *testing.T) {
	base := errors.New("unknown tenant")
	wrapped := fmt.Errorf("handle: %w", Permanent(base))
	if !IsPermanent(wrapped) {
		t.Errorf("a wrapped permanent error is not recognised")
	}
	if !errors.Is(wrapped, base) {
		t.Errorf("Permanent hides the original error from errors.Is")
	}
	if IsPermanent(base) || IsPermanent(nil) {
		t.Errorf("plain errors and nil must be transient/none")
	}
	if Permanent(nil) != nil {
		t.Errorf("Permanent(nil) must be nil")
	}
}

func TestDecode_RejectsBadJSONAndUnexpectedTypePermanently(t *testing.T) {
	type cmd struct {
		ID string `json:"id"`
	}
	cases := []struct {
		name    string
		ceType  string
		payload string
		accept  []string
		wantErr error
		wantID  string
	}{
		{"accepted type", "a.v1", `{"id":"x"}`, []string{"a.v1", "a.v2"}, nil, "x"},
		{"any type when none listed", "whatever", `{"id":"y"}`, nil, nil, "y"},
		{"unexpected type", "b.v1", `{"id":"x"}`, []string{"a.v1"}, ErrUnexpectedType, ""},
		{"bad json", "a.v1", `{"id":`, []string{"a.v1"}, ErrUndecodable, ""},
		{"empty payload", "a.v1", ``, nil, ErrUndecodable, ""},
		{"wrong shape", "a.v1", `{"id":7}`, nil, ErrUndecodable, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := message.NewMessage("id", []byte(tc.payload))
			msg.Metadata.Set(MetaType, tc.ceType)
			got, err := Decode[cmd](msg, tc.accept...)
			if tc.wantErr == nil {
				if err != nil || got.ID != tc.wantID {
					t.Fatalf("Decode = %+v, %v; want id %q", got, err, tc.wantID)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || !IsPermanent(err) {
				t.Fatalf("want a permanent %v, got %v (permanent=%v)", tc.wantErr, err, IsPermanent(err))
			}
		})
	}
}

func TestHeaderMarshaler_StringifiesBrokerHeadersInsteadOfFailing(t *testing.T) {
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	d := amqp.Delivery{
		MessageId: "amqp-msg-id",
		Body:      []byte(`{}`),
		Headers: amqp.Table{
			"ce-type":          "x.v1",
			"x-delivery-count": int64(3),
			"x-small":          int32(7),
			"x-flag":           true,
			"x-ratio":          1.5,
			"x-bytes":          []byte("raw"),
			"x-when":           when,
			"x-nil":            nil,
			"x-death": []any{amqp.Table{
				"count": int64(1), "queue": "q1", "reason": "rejected",
			}},
		},
	}
	msg, err := headerMarshaler{}.Unmarshal(d)
	if err != nil {
		t.Fatalf("Unmarshal failed on broker headers: %v", err)
	}
	want := map[string]string{
		"ce-type":          "x.v1",
		"x-delivery-count": "3",
		"x-small":          "7",
		"x-flag":           "true",
		"x-ratio":          "1.5",
		"x-bytes":          "raw",
		"x-when":           "2026-01-02T03:04:05Z",
	}
	for k, v := range want {
		if got := msg.Metadata.Get(k); got != v {
			t.Errorf("header %s became %q, want %q", k, got, v)
		}
	}
	if _, ok := msg.Metadata["x-nil"]; ok {
		t.Errorf("a nil header should be dropped")
	}
	var death []map[string]any
	if err := json.Unmarshal([]byte(msg.Metadata.Get("x-death")), &death); err != nil || len(death) != 1 || death[0]["queue"] != "q1" {
		t.Errorf("x-death should be readable JSON, got %q (%v)", msg.Metadata.Get("x-death"), err)
	}
	if msg.UUID != "amqp-msg-id" {
		t.Errorf("without the watermill UUID header the AMQP message-id should be used, got %q", msg.UUID)
	}
}

func TestHeaderMarshaler_RoundTripsLikeWatermillAMQP(t *testing.T) {
	in := message.NewMessage("uuid-1", []byte(`{"a":1}`))
	in.Metadata.Set(MetaType, "t.v1")
	in.Metadata.Set(MetaSpecVersion, SpecVersion)
	in.Metadata.Set(MetaCorrelation, "c-1")
	pub, err := headerMarshaler{}.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if pub.DeliveryMode != amqp.Persistent {
		t.Errorf("messages must be persistent")
	}
	if pub.Headers[wamqp.DefaultMessageUUIDHeaderKey] != "uuid-1" || pub.MessageId != "uuid-1" || pub.CorrelationId != "c-1" || pub.Type != "t.v1" {
		t.Errorf("AMQP properties not filled from the envelope: %+v", pub)
	}
	out, err := headerMarshaler{}.Unmarshal(amqp.Delivery{Headers: pub.Headers, Body: pub.Body})
	if err != nil {
		t.Fatal(err)
	}
	if out.UUID != "uuid-1" || !maps.Equal(out.Metadata, in.Metadata) || string(out.Payload) != `{"a":1}` {
		t.Errorf("round trip changed the message: %s %v %s", out.UUID, out.Metadata, out.Payload)
	}
	// A stock watermill-amqp subscriber must read what we write.
	stock, err := wamqp.DefaultMarshaler{}.Unmarshal(amqp.Delivery{Headers: pub.Headers, Body: pub.Body})
	if err != nil || stock.UUID != "uuid-1" {
		t.Errorf("watermill-amqp's marshaler cannot read our messages: %v", err)
	}
}

func TestHeaderMarshaler_AcceptsAMessageWithoutHeaders(t *testing.T) {
	msg, err := headerMarshaler{}.Unmarshal(amqp.Delivery{Body: []byte("x")})
	if err != nil || msg.UUID == "" {
		t.Fatalf("a header-less message must still get an id: %v %+v", err, msg)
	}
}

func TestConfig_DefaultsAndValidation(t *testing.T) {
	ok := Config{URL: "amqp://guest:guest@127.0.0.1:5672/"}.WithDefaults()
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults must be valid: %v", err)
	}
	if ok.Exchange != DefaultExchange || ok.ConsumersPerQueue != DefaultConsumersPerQueue {
		t.Errorf("defaults not applied: %+v", ok)
	}
	if got := ok.QueueName(TopicCmdSyncRun, "sync-worker"); got != "integration.cmd.sync.run.sync-worker" {
		t.Errorf("queue name = %q", got)
	}
	bad := []struct {
		name   string
		mutate func(*Config)
	}{
		{"empty url", func(c *Config) { c.URL = "" }},
		{"http url", func(c *Config) { c.URL = "http://x" }},
		{"wildcard exchange", func(c *Config) { c.Exchange = "a.*" }},
		{"space in prefix", func(c *Config) { c.QueuePrefix = "a b" }},
		{"negative prefetch", func(c *Config) { c.Prefetch = -1 }},
		{"zero consumers", func(c *Config) { c.ConsumersPerQueue = -1 }},
		{"reconnect max below initial", func(c *Config) { c.ReconnectMax = time.Millisecond }},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("want ErrInvalidConfig, got %v", err)
			}
		})
	}
	if err := (Config{URL: "amqp://user:s3cret@%zz"}).WithDefaults().Validate(); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("a bad URL must be rejected without echoing its password: %v", err)
	}
}
