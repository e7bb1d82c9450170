package messaging

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
)

// The two benchmarks publish the same 512-byte messages with publisher confirms to the
// same kind of durable queue, so their ratio is the cost of our layer over a plain
// watermill-amqp publisher:
//
//	go test -run '^$' -bench 'PublishConfirmed' ./messaging/

var benchPayload = map[string]string{"data": strings.Repeat("x", 512-len(`{"data":""}`))}

func benchEnv(b *testing.B) (*testEnv, string) {
	env := rabbitEnv(b, func(c *Config) { c.PublishChannels = 16 })
	const topic = TopicCmdWebhookDeliver
	env.declare("bench", topic)
	return env, topic
}

func benchMessage(b *testing.B) *message.Message {
	msg, err := NewMessage(context.Background(), "bench.v1", "bench", "tenant-1", benchPayload)
	if err != nil {
		b.Fatal(err)
	}
	if len(msg.Payload) != 512 {
		b.Fatalf("payload is %d bytes, want 512", len(msg.Payload))
	}
	return msg
}

func reportRate(b *testing.B, msgs int) {
	b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkPublishConfirmed publishes through Transport.Publisher().
func BenchmarkPublishConfirmed(b *testing.B) {
	env, topic := benchEnv(b)
	pub := env.transport.Publisher()
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if err := pub.Publish(topic, benchMessage(b)); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, b.N)
	})
	b.Run("parallel16", func(b *testing.B) {
		b.SetParallelism(8) // x GOMAXPROCS(2) = 16 publishers, one per pooled channel
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := pub.Publish(topic, benchMessage(b)); err != nil {
					b.Error(err)
					return
				}
			}
		})
		reportRate(b, b.N)
	})
	b.Run("batch64", func(b *testing.B) {
		batch := make([]*message.Message, 64)
		for b.Loop() {
			for i := range batch {
				batch[i] = benchMessage(b)
			}
			if err := pub.Publish(topic, batch...); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, b.N*len(batch))
	})
}

// BenchmarkRawAMQPPublishConfirmed publishes with a stock watermill-amqp publisher:
// same topology config, ConfirmDelivery and a 16-channel pool.
func BenchmarkRawAMQPPublishConfirmed(b *testing.B) {
	env, topic := benchEnv(b)
	cfg := env.transport.backend.(*rabbitMQ).amqpConfig("bench")
	pub, err := wamqp.NewPublisher(cfg, watermill.NopLogger{}) // nil panics in its channel pool
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = pub.Close() })
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if err := pub.Publish(topic, benchMessage(b)); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, b.N)
	})
	b.Run("parallel16", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := pub.Publish(topic, benchMessage(b)); err != nil {
					b.Error(err)
					return
				}
			}
		})
		reportRate(b, b.N)
	})
	b.Run("batch64", func(b *testing.B) {
		batch := make([]*message.Message, 64)
		for b.Loop() {
			for i := range batch {
				batch[i] = benchMessage(b)
			}
			if err := pub.Publish(topic, batch...); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, b.N*len(batch))
	})
}

// BenchmarkRoundTrip is the path of every command: publish with confirms (batches of
// 64 from 4 publishers) -> queue -> router with the shared policy -> handler -> ack.
// msgs/s counts messages handled.
func BenchmarkRoundTrip(b *testing.B) {
	env := rabbitEnv(b, func(c *Config) { c.PublishChannels = 16; c.Prefetch = 32 })
	const topic, role = TopicCmdWebhookDeliver, "bench-worker"
	env.declare(role, topic)
	var handled atomic.Int64
	target := atomic.Int64{}
	done := make(chan struct{}, 1)
	r := newRouter(b, env.transport, fastPolicy())
	addConsumer(b, r, env.transport, role, topic, 8, func(msg *message.Message) error {
		if handled.Add(1) == target.Load() {
			done <- struct{}{}
		}
		return nil
	})
	runRouter(b, r)

	b.ResetTimer()
	handled.Store(0)
	target.Store(int64(b.N))
	var wg sync.WaitGroup
	const publishers, batchSize = 4, 64
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := b.N / publishers
			if p == 0 {
				n += b.N % publishers
			}
			for n > 0 {
				batch := make([]*message.Message, min(batchSize, n))
				for i := range batch {
					batch[i] = benchMessage(b)
				}
				if err := env.transport.Publisher().Publish(topic, batch...); err != nil {
					b.Error(err)
					return
				}
				n -= len(batch)
			}
		}()
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("handled %d of %d", handled.Load(), b.N)
	}
	reportRate(b, b.N)
}

// BenchmarkDelay schedules messages on RabbitMQ through Transport.Delay: a mandatory,
// confirmed publish to a delay queue (30 min, jittered over three queues), the same
// cost as BenchmarkPublishConfirmed plus the check for a return:
//
//	go test -run '^$' -bench 'Delay|PublishConfirmed/(serial|parallel16)' ./messaging/
func BenchmarkDelay(b *testing.B) {
	env := rabbitEnv(b, func(c *Config) { c.PublishChannels = 16 })
	const topic, role = TopicCmdWebhookDeliver, "bench"
	cfg := env.transport.Config()
	env.res.Queue(cfg.QueueName(topic, role))
	for _, q := range cfg.DelayQueueNames(topic, role) {
		env.res.Queue(q)
	}
	ctx := context.Background()
	if _, err := env.transport.Delay(ctx, role, topic, benchMessage(b), 30*time.Minute); err != nil {
		b.Fatal(err) // declares the delay queues outside the timed loops
	}
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := env.transport.Delay(ctx, role, topic, benchMessage(b), 30*time.Minute); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, b.N)
	})
	b.Run("parallel16", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := env.transport.Delay(ctx, role, topic, benchMessage(b), 30*time.Minute); err != nil {
					b.Error(err)
					return
				}
			}
		})
		reportRate(b, b.N)
	})
}
