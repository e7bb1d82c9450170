package messaging

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

func TestPlanDelay_RoundsUpToTheNextTierAndCapsAtTheLongest(t *testing.T) {
	tiers := Config{}.WithDefaults().DelayTiers
	cases := []struct {
		requested time.Duration
		tier      time.Duration // the middle sibling (pick 1)
	}{
		{-time.Second, 0},
		{0, 0},
		{time.Nanosecond, time.Second},
		{time.Second, time.Second},
		{time.Second + time.Millisecond, 5 * time.Second},
		{5 * time.Second, 5 * time.Second},
		{6 * time.Second, 30 * time.Second},
		{5 * time.Minute, 5 * time.Minute},
		{30 * time.Minute, 30 * time.Minute},
		{31 * time.Minute, 2 * time.Hour},
		{2 * time.Hour, 2 * time.Hour},
		{5 * time.Hour, 5 * time.Hour},
		{10 * time.Hour, 10 * time.Hour},
		{72 * time.Hour, 10 * time.Hour},
	}
	for _, tc := range cases {
		if got := planDelay(tiers, tc.requested, 1); got != tc.tier {
			t.Errorf("delay %v: applied %v, want the tier %v", tc.requested, got, tc.tier)
		}
	}
}

func TestPlanDelay_JittersTiersOfFiveSecondsAndMoreWithinTenPercent(t *testing.T) {
	for _, tier := range DefaultDelayTiers() {
		seen := map[time.Duration]int{}
		for range 300 {
			got := planDelay(DefaultDelayTiers(), tier, rand.IntN(jitterSiblings))
			seen[got]++
			if lo, hi := tier*9/10, tier*11/10; got < lo || got > hi {
				t.Fatalf("tier %v: applied %v, outside ±10%% [%v, %v]", tier, got, lo, hi)
			}
		}
		want := 3
		if tier < 5*time.Second {
			want = 1 // too short to be worth spreading
		}
		if len(seen) != want {
			t.Errorf("tier %v: %d distinct delays applied (%v), want %d", tier, len(seen), seen, want)
		}
	}
}

func TestDelayQueueName_RendersTheDelayReadably(t *testing.T) {
	cfg := Config{QueuePrefix: "p."}
	cases := map[time.Duration]string{
		500 * time.Millisecond:         "500ms",
		time.Second:                    "1s",
		4500 * time.Millisecond:        "4.5s",
		5 * time.Minute:                "5m",
		4*time.Minute + 30*time.Second: "4m30s",
		33 * time.Minute:               "33m",
		2 * time.Hour:                  "2h",
		time.Hour + 48*time.Minute:     "1h48m",
		11 * time.Hour:                 "11h",
	}
	for d, want := range cases {
		if got := cfg.DelayQueueName("integration.cmd.webhook.deliver", "webhook-dispatcher", d); got != "p.delay.webhook-dispatcher.integration.cmd.webhook.deliver."+want {
			t.Errorf("%v: queue %q, want suffix %q", d, got, want)
		}
	}
	names := Config{}.WithDefaults().DelayQueueNames("t", "r")
	if len(names) != 1+3*7 || !slices.Contains(names, "delay.r.t.4.5s") || !slices.Contains(names, "delay.r.t.11h") {
		t.Errorf("DelayQueueNames with the default tiers = %v", names)
	}
}

func TestConfig_DelayTiersAreSortedAndMustBeWholeMilliseconds(t *testing.T) {
	given := []time.Duration{time.Minute, time.Second, time.Minute}
	cfg := Config{URL: "amqp://localhost/", DelayTiers: given}.WithDefaults()
	if !slices.Equal(cfg.DelayTiers, []time.Duration{time.Second, time.Minute}) {
		t.Errorf("tiers = %v, want sorted and unique", cfg.DelayTiers)
	}
	if given[0] != time.Minute {
		t.Errorf("WithDefaults reordered the caller's slice: %v", given)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("valid tiers rejected: %v", err)
	}
	for _, bad := range [][]time.Duration{{0}, {-time.Second}, {1500 * time.Microsecond}} {
		c := Config{URL: "amqp://localhost/", DelayTiers: bad}.WithDefaults()
		if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("tiers %v: want ErrInvalidConfig, got %v", bad, err)
		}
	}
	if _, err := NewInProcessWithSchedule(context.Background(), testLogger(), nil, WithDelayTiers(0)); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("in-process transport with a zero tier: want ErrInvalidConfig, got %v", err)
	}
}

func TestDelayedCopy_DropsBrokerHeadersAndKeepsTheRest(t *testing.T) {
	msg := message.NewMessage("id-1", []byte(`{"a":1}`))
	msg.Metadata.Set("x-death", `[{"count":1}]`)
	msg.Metadata.Set("x-first-death-reason", "expired")
	msg.Metadata.Set("x-last-death-queue", "q")
	msg.Metadata.Set("x-delivery-count", "3")
	msg.Metadata.Set("x-attempt", "2")
	msg.Metadata.Set(MetaTenantID, "tenant-1")
	out := delayedCopy(WithCorrelationID(context.Background(), "corr-1"), msg)
	if out.UUID != "id-1" || string(out.Payload) != `{"a":1}` {
		t.Errorf("id or payload changed: %s %s", out.UUID, out.Payload)
	}
	for _, k := range []string{"x-death", "x-first-death-reason", "x-last-death-queue", "x-delivery-count"} {
		if _, ok := out.Metadata[k]; ok {
			t.Errorf("broker header %s carried over: %v", k, out.Metadata)
		}
	}
	if out.Metadata.Get("x-attempt") != "2" || out.Metadata.Get(MetaTenantID) != "tenant-1" || out.Metadata.Get(MetaCorrelation) != "corr-1" {
		t.Errorf("own metadata lost: %v", out.Metadata)
	}
	if msg.Metadata.Get("x-death") == "" {
		t.Errorf("the caller's message was modified")
	}
}

func TestDelay_RefusesBadNamesAndFailsWithErrClosedAfterClose(t *testing.T) {
	for name, newEnv := range map[string]func(t *testing.T) *testEnv{
		"InProcess": func(t *testing.T) *testEnv { return inProcessEnv(t) },
		"RabbitMQ":  func(t *testing.T) *testEnv { return rabbitEnv(t, nil) },
	} {
		t.Run(name, func(t *testing.T) {
			tr := newEnv(t).transport
			ctx := context.Background()
			msg := mustMessage(t, ctx, "test.v1", 1)
			if _, err := tr.Delay(ctx, "bad role", TopicCmdWebhookDeliver, msg, time.Second); err == nil {
				t.Errorf("Delay accepted a role with a space")
			}
			if _, err := tr.Delay(ctx, "r", "a.*", msg, time.Second); err == nil {
				t.Errorf("Delay accepted a wildcard topic")
			}
			if _, err := tr.Delay(ctx, "r", TopicCmdWebhookDeliver, nil, time.Second); err == nil {
				t.Errorf("Delay accepted a nil message")
			}
			if err := tr.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := tr.Delay(ctx, "r", TopicCmdWebhookDeliver, msg, time.Second); !errors.Is(err, ErrClosed) {
				t.Errorf("Delay after Close = %v, want ErrClosed", err)
			}
		})
	}
}
