package app_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/castiel/integration-manager/messaging/rabbittest"
)

// receiver is a tenant endpoint for benchmarks and tests: it records when each
// event arrived and how long it took since the event's data.sentAt (ns).
type receiver struct {
	srv       *http.Server
	addr      string
	delay     time.Duration // answer this late (a slow endpoint)
	mu        sync.Mutex
	latencies []time.Duration
	count     atomic.Int64
	first     atomic.Int64 // unix ns of the first arrival
	last      atomic.Int64 // unix ns of the last arrival
}

func newReceiver(tb testing.TB, delay time.Duration) *receiver {
	r := &receiver{delay: delay}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.handle)}
	ln, err := listenLoopback()
	if err != nil {
		tb.Fatal(err)
	}
	r.addr = ln.Addr().String()
	go func() { _ = r.srv.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = r.srv.Shutdown(ctx)
	})
	return r
}

func (r *receiver) url() string { return "http://" + r.addr + "/hook" }

func (r *receiver) handle(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	now := time.Now()
	if r.delay > 0 {
		select {
		case <-time.After(r.delay):
		case <-req.Context().Done():
			return
		}
	}
	var ev struct {
		Data struct {
			SentAt int64 `json:"sentAt"`
		} `json:"data"`
	}
	if json.Unmarshal(body, &ev) == nil && ev.Data.SentAt > 0 {
		r.mu.Lock()
		r.latencies = append(r.latencies, now.Sub(time.Unix(0, ev.Data.SentAt)))
		r.mu.Unlock()
	}
	r.first.CompareAndSwap(0, now.UnixNano())
	r.last.Store(now.UnixNano())
	r.count.Add(1)
	w.WriteHeader(http.StatusNoContent)
}

// reset forgets what arrived so far.
func (r *receiver) reset() {
	r.mu.Lock()
	r.latencies = nil
	r.mu.Unlock()
	r.count.Store(0)
	r.first.Store(0)
	r.last.Store(0)
}

// percentile of the recorded latencies (p in 0..100).
func (r *receiver) percentile(p float64) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return percentile(r.latencies, p)
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

// rawHTTPLoop posts n small JSON bodies to url from 16 goroutines and returns requests/s.
func rawHTTPLoop(tb testing.TB, url string, n int) float64 {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var next atomic.Int64
	var wg sync.WaitGroup
	begin := time.Now()
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				body := `{"type":"bench","timestamp":"2026-01-01T00:00:00Z","data":{"sentAt":` + strconv.FormatInt(time.Now().UnixNano(), 10) + `}}`
				resp, err := client.Post(url, "application/json", strings.NewReader(body))
				if err != nil {
					tb.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	return float64(n) / time.Since(begin).Seconds()
}

// rawRabbitLoop is DESIGN.md's plain-client limit: durable publish of n 512 B
// persistent messages with pipelined confirms → consume → ack, on one queue.
// It returns messages consumed per second.
func rawRabbitLoop(tb testing.TB, n int) float64 {
	pubConn, subConn, queue := rabbitPair(tb, "im-bench-rawloop-")
	pch := confirmChannel(tb, pubConn)
	if _, err := pch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		tb.Fatal(err)
	}
	_, deliveries := consume(tb, subConn, queue, 256)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < n; i++ {
			d, ok := <-deliveries
			if !ok {
				tb.Error("raw loop: consumer channel closed")
				return
			}
			_ = d.Ack(false)
		}
	}()
	body := []byte(strings.Repeat("x", 512))
	begin := time.Now()
	window := make(chan *amqp.DeferredConfirmation, 256) // confirms pipelined, 256 outstanding
	confirmed := make(chan struct{})
	go func() {
		defer close(confirmed)
		for c := range window {
			if ok := c.Wait(); !ok {
				tb.Error("raw loop: publish nacked")
			}
		}
	}()
	for range n {
		c, err := pch.PublishWithDeferredConfirm("", queue, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body})
		if err != nil {
			tb.Fatal(err)
		}
		window <- c
	}
	close(window)
	<-confirmed
	<-done
	return float64(n) / time.Since(begin).Seconds()
}

// rabbitPair dials a publishing and a consuming connection to the test broker
// (closed when the test ends) and names a queue for them (deleted then too).
func rabbitPair(tb testing.TB, queuePrefix string) (pub, sub *amqp.Connection, queue string) {
	url := rabbittest.URL(tb)
	queue = rabbittest.Track(tb, url).Queue(queuePrefix + rabbittest.Suffix())
	for _, c := range []**amqp.Connection{&pub, &sub} {
		conn, err := rabbittest.Dial(url)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = conn.Close() })
		*c = conn
	}
	return pub, sub, queue
}

// confirmChannel opens a channel on conn in confirm mode.
func confirmChannel(tb testing.TB, conn *amqp.Connection) *amqp.Channel {
	ch, err := conn.Channel()
	if err != nil {
		tb.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		tb.Fatal(err)
	}
	return ch
}

// consume starts a consumer of queue on a channel of its own on conn, with
// prefetch messages at most unacked; closing the channel ends it.
func consume(tb testing.TB, conn *amqp.Connection, queue string, prefetch int) (*amqp.Channel, <-chan amqp.Delivery) {
	ch, err := conn.Channel()
	if err != nil {
		tb.Fatal(err)
	}
	if err := ch.Qos(prefetch, 0, false); err != nil {
		tb.Fatal(err)
	}
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return ch, deliveries
}

// closedLoop runs post n times from clients goroutines at once, each calling
// it again as soon as it returns, and waits for them; a client whose post
// returns false stops.
func closedLoop(clients, n int, post func() bool) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for next.Add(1) <= int64(n) && post() {
			}
		})
	}
	wg.Wait()
}

func TestBaselines_RawLoopsRun(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode")
	}
	rcv := newReceiver(t, 0)
	if rate := rawHTTPLoop(t, rcv.url(), 2000); rate <= 0 || rcv.count.Load() != 2000 {
		t.Fatalf("raw HTTP loop: rate %.0f, received %d of 2000", rate, rcv.count.Load())
	}
	if rate := rawRabbitLoop(t, 2000); rate <= 0 {
		t.Fatalf("raw RabbitMQ loop rate %.0f", rate)
	}
	if rate := plainDeliveryPath(t, rcv, 16, 2000); rate <= 0 || rcv.count.Load() < 2000 {
		t.Fatalf("plain delivery path: rate %.0f, received %d of 2000", rate, rcv.count.Load())
	}
}
