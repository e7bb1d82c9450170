package app_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	bolt "go.etcd.io/bbolt"
)

// plainDeliveryPath is the least a delivery with the guarantees can do,
// written with the plain clients and nothing of ours: an HTTP POST accepted by a
// server that publishes the event persistently and answers 202 once RabbitMQ
// confirmed it; a consumer (prefetch 64) that signs the body (HMAC-SHA256), POSTs
// it to the receiver, writes the attempt durably to bbolt (group commit, fsync),
// publishes a result event with a confirm, and only then acks. No validation,
// authentication, tenant lookup, logging, metrics or tracing. clients post from a
// closed loop, like the end-to-end rows. It returns deliveries/s (first post to
// the receiver's nth arrival).
//
// It shows what share of the raw RabbitMQ loop's rate any implementation can
// reach on this machine once a delivery's own I/O (two HTTP exchanges, two
// confirmed publishes, a durable write) shares the cores with the broker.
func plainDeliveryPath(tb testing.TB, rcv *receiver, clients, n int) float64 {
	pubConn, subConn, queue := rabbitPair(tb, "im-bench-plainpath-")
	events, results := confirmChannel(tb, pubConn), confirmChannel(tb, pubConn)
	if _, err := events.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		tb.Fatal(err)
	}
	publish := func(ch *amqp.Channel, key string, body []byte) bool {
		dc, err := ch.PublishWithDeferredConfirm("", key, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body})
		return err == nil && dc.Wait()
	}

	db, err := bolt.Open(filepath.Join(tb.TempDir(), "attempts.db"), 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	db.MaxBatchDelay = time.Millisecond // gather concurrent attempts into one fsync, as our store's writer does
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("attempts")); return err }); err != nil {
		tb.Fatal(err)
	}

	ingressURL := serveLoopback(tb, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil || !publish(events, queue, body) {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})) + "/events"

	sch, deliveries := consume(tb, subConn, queue, 64)
	out := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	secret := []byte("whsec-plain-path-secret-32-bytes")
	var seq atomic.Uint64
	var failed atomic.Int64
	deliver := func(d amqp.Delivery) {
		num := seq.Add(1)
		id := strconv.FormatUint(num, 10)
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(id + "." + strconv.FormatInt(time.Now().Unix(), 10) + "."))
		mac.Write(d.Body)
		req, _ := http.NewRequest(http.MethodPost, rcv.url(), bytes.NewReader(d.Body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Webhook-Id", id)
		req.Header.Set("Webhook-Signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
		begin := time.Now()
		resp, err := out.Do(req)
		if err != nil {
			failed.Add(1)
			_ = d.Nack(false, true)
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		attempt, _ := json.Marshal(map[string]any{
			"id": id, "status": "delivered", "attempt": 1, "responseStatus": resp.StatusCode,
			"durationMs": time.Since(begin).Milliseconds(), "startedAt": begin,
			"requestHeaders": map[string]string{"webhook-id": id, "content-type": "application/json"},
			"event":          json.RawMessage(d.Body),
		})
		key := binary.BigEndian.AppendUint64(nil, num)
		if err := db.Batch(func(tx *bolt.Tx) error { return tx.Bucket([]byte("attempts")).Put(key, attempt) }); err != nil ||
			!publish(results, "im-bench-no-such-queue", []byte(`{"deliveryId":"`+id+`","status":"delivered"}`)) {
			failed.Add(1)
			_ = d.Nack(false, true)
			return
		}
		_ = d.Ack(false)
	}
	var handling sync.WaitGroup
	go func() {
		for d := range deliveries {
			handling.Add(1)
			go func() { defer handling.Done(); deliver(d) }()
		}
	}()
	defer handling.Wait()
	defer sch.Close()

	rcv.reset()
	in := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	begin := time.Now()
	closedLoop(clients, n, func() bool {
		body := `{"type":"contact.updated","data":{"sentAt":` + strconv.FormatInt(time.Now().UnixNano(), 10) + `}}`
		resp, err := in.Post(ingressURL, "application/json", strings.NewReader(body))
		if err != nil {
			tb.Error(err)
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			tb.Errorf("plain path ingress answered %d", resp.StatusCode)
			return false
		}
		return true
	})
	deadline := time.Now().Add(60 * time.Second)
	for rcv.count.Load() < int64(n) && time.Now().Before(deadline) && !tb.Failed() {
		time.Sleep(5 * time.Millisecond)
	}
	if got := rcv.count.Load(); got < int64(n) {
		tb.Fatalf("plain delivery path: receiver got %d of %d (%d attempts failed)", got, n, failed.Load())
	}
	return float64(n) / time.Unix(0, rcv.last.Load()).Sub(begin).Seconds()
}
