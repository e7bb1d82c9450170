package app_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/app"
	"github.com/castiel/integration-manager/bench"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/messaging/rabbittest"
)

// benchClients is how many requests are in flight at once (16 on 2 cores),
// the concurrency of the raw loops in DESIGN.md's budget.
const benchParallelism = 8

const eventBody = `{"type":"contact.updated","data":{"id":"c-1042","email":"ada@example.com","name":"Ada Lovelace","plan":"enterprise","tags":["vip","emea"],"score":97.5,"updatedAt":"2026-11-25T21:00:00Z","owner":"u-17","notes":"renewal in Q1; prefers email; migrated from legacy CRM","source":"hubspot","region":"eu-west","seats":250}}`

// BenchmarkAPIEvents measures POST /api/v1/events accepted per second, in
// standalone (in-process broker) and against RabbitMQ with publisher confirms,
// beside a raw watermill-amqp confirmed publish loop and a raw loopback HTTP
// POST loop measured in the same run, with the same concurrency.
// Read events/s of each against the raw ones: that ratio is the API's overhead.
func BenchmarkAPIEvents(b *testing.B) {
	rates := map[string]float64{}
	b.Run("raw-http-loop", func(b *testing.B) {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write([]byte(`{"id":"evt_x"}`))
		})}
		addr := serveOnFreePort(b, srv)
		rates["raw-http-loop"] = postLoop(b, "http://"+addr+"/", "")
	})
	b.Run("raw-watermill-amqp-confirmed", func(b *testing.B) {
		rates["raw-watermill-amqp-confirmed"] = rawAMQPLoop(b)
	})
	b.Run("api-standalone", func(b *testing.B) {
		// The in-process broker's consumer is the dispatcher in the same process
		// (the tenant has no webhooks: each event is fanned out to nothing).
		s := start(b, environ(b), app.PartAPI, app.PartDispatcher)
		rates["api-standalone"] = postLoop(b, s.baseURL+"/api/v1/events", s.key)
	})
	b.Run("api-rabbitmq-confirmed", func(b *testing.B) {
		s := start(b, environ(b, onRabbitMQ(b)...), app.PartAPI)
		drain(b, s, app.RoleWebhookDispatcher, messaging.TopicCmdEventPublish)
		rates["api-rabbitmq-confirmed"] = postLoop(b, s.baseURL+"/api/v1/events", s.key)
	})
	ratio := func(of, base string) float64 {
		if rates[base] == 0 {
			return 0
		}
		return rates[of] / rates[base]
	}
	err := bench.Record("api",
		bench.Row{Case: "raw loopback HTTP POST loop (same concurrency)", Value: rates["raw-http-loop"], Unit: "requests/s"},
		bench.Row{Case: "raw watermill-amqp publish with confirms", Value: rates["raw-watermill-amqp-confirmed"], Unit: "messages/s"},
		bench.Row{Case: "POST /api/v1/events accepted, standalone", Value: rates["api-standalone"], Unit: "events/s",
			Baseline: "raw HTTP loop", Ratio: ratio("api-standalone", "raw-http-loop")},
		bench.Row{Case: "POST /api/v1/events accepted, RabbitMQ with confirms", Value: rates["api-rabbitmq-confirmed"], Unit: "events/s",
			Baseline: "raw watermill-amqp publish", Ratio: ratio("api-rabbitmq-confirmed", "raw-watermill-amqp-confirmed")})
	if err != nil {
		b.Fatal(err)
	}
}

func postLoop(b *testing.B, url, key string) float64 {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var failed atomic.Int64
	var firstFailure atomic.Value
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	begin := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("POST", url, strings.NewReader(eventBody))
			req.Header.Set("Content-Type", "application/json")
			if key != "" {
				req.Header.Set("Authorization", "Bearer "+key)
			}
			resp, err := client.Do(req)
			if err != nil {
				failed.Add(1)
				firstFailure.CompareAndSwap(nil, err.Error())
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				failed.Add(1)
				firstFailure.CompareAndSwap(nil, fmt.Sprintf("%d %s", resp.StatusCode, body))
			}
		}
	})
	rate := float64(b.N) / time.Since(begin).Seconds()
	b.ReportMetric(rate, "events/s")
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d requests were not accepted; first: %v", n, b.N, firstFailure.Load())
	}
	return rate
}

// drain consumes and acks the role's RabbitMQ queue for the whole benchmark,
// as a dispatcher would, so the broker is measured in its steady state.
func drain(b *testing.B, s *started, role, topic string) {
	ctx, cancel := context.WithCancel(context.Background())
	tr, err := app.OpenTransport(ctx, s.cfg, nil, zerolog.New(io.Discard))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cancel(); _ = tr.Close() })
	for range 4 {
		ch, err := tr.Subscriber(role).Subscribe(ctx, topic)
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			for msg := range ch {
				msg.Ack()
			}
		}()
	}
}

// rawAMQPLoop is the plain-client baseline: watermill-amqp's own publisher with
// confirms and a channel pool on a durable queue, 512 B messages, drained by
// its own subscriber.
func rawAMQPLoop(b *testing.B) float64 {
	url := rabbittest.URL(b)
	queue := rabbittest.Track(b, url).Queue("im-bench-raw-" + rabbittest.Suffix())
	cfg := wamqp.NewDurableQueueConfig(url)
	cfg.Publish.ConfirmDelivery = true
	cfg.Publish.ChannelPoolSize = 16
	cfg.Consume.Qos.PrefetchCount = 64
	pub, err := wamqp.NewPublisher(cfg, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = pub.Close() })
	sub, err := wamqp.NewSubscriber(cfg, watermill.NopLogger{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(func() { cancel(); _ = sub.Close() })
	msgs, err := sub.Subscribe(ctx, queue)
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for m := range msgs {
			m.Ack()
		}
	}()
	payload := []byte(strings.Repeat("x", 512))
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	begin := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := pub.Publish(queue, message.NewMessage(watermill.NewUUID(), payload)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	rate := float64(b.N) / time.Since(begin).Seconds()
	b.ReportMetric(rate, "events/s")
	return rate
}

func serveOnFreePort(b *testing.B, srv *http.Server) string {
	s, err := listenLoopback()
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(s) }()
	b.Cleanup(func() { _ = srv.Close() })
	return s.Addr().String()
}
