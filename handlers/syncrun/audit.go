package syncrun

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/domain"
)

// AuditAction names what an audit event records.
type AuditAction string

const (
	// AuditCredentialUse: a run used a connection's credentials (once per
	// delivery that works on the run).
	AuditCredentialUse AuditAction = "credential_use"
	// AuditWriteBack: a run wrote a record to the external system.
	AuditWriteBack AuditAction = "write_back"
)

// AuditEvent is one entry of the audit trail. It names records and
// operations, never credentials or record contents.
type AuditEvent struct {
	TenantID      string      `json:"tenantId"`
	IntegrationID string      `json:"integrationId"`
	SyncTaskID    string      `json:"syncTaskId,omitempty"`
	ExecutionID   string      `json:"executionId,omitempty"`
	Action        AuditAction `json:"action"`
	Actor         string      `json:"actor"` // the service: "sync-worker"
	Entity        string      `json:"entity,omitempty"`
	RecordKey     string      `json:"recordKey,omitempty"`
	Operation     string      `json:"operation,omitempty"` // write_back: create, update or delete
	Outcome       string      `json:"outcome"`             // ok or failed
	Error         string      `json:"error,omitempty"`
	At            time.Time   `json:"at"`
}

// Auditor records audit events. A failure is logged by the run and does not
// stop it.
type Auditor interface {
	Record(ctx context.Context, ev AuditEvent) error
}

// NopAuditor drops every event.
type NopAuditor struct{}

func (NopAuditor) Record(context.Context, AuditEvent) error { return nil }

// LogAuditor writes every event as an info log line (standalone).
type LogAuditor struct{ Logger zerolog.Logger }

func (a LogAuditor) Record(_ context.Context, ev AuditEvent) error {
	e := a.Logger.Info().Str("audit", string(ev.Action)).Str("tenantId", ev.TenantID).Str("integrationId", ev.IntegrationID).
		Str("syncTaskId", ev.SyncTaskID).Str("executionId", ev.ExecutionID).Str("outcome", ev.Outcome)
	if ev.RecordKey != "" {
		e = e.Str("entity", ev.Entity).Str("recordKey", ev.RecordKey).Str("operation", ev.Operation)
	}
	if ev.Error != "" {
		e = e.Str("error", ev.Error)
	}
	e.Time("at", ev.At).Msg("audit event")
	return nil
}

func (h *Handler) auditCredentialUse(ctx context.Context, exec *domain.Execution, task domain.SyncTask) {
	ev := AuditEvent{TenantID: task.TenantID, IntegrationID: task.IntegrationID, SyncTaskID: task.ID, ExecutionID: exec.ID,
		Action: AuditCredentialUse, Actor: Role, Entity: task.Entity, Outcome: "ok", At: h.now()}
	if err := h.audit.Record(ctx, ev); err != nil {
		h.log.Warn().Err(err).Str("executionId", exec.ID).Msg("could not record the credential-use audit event")
	}
}

// HTTPAuditorOptions tune an HTTPAuditor; zero values take the defaults named.
type HTTPAuditorOptions struct {
	Client        *http.Client  // default: a client with Timeout
	Timeout       time.Duration // of one POST; default 10 s
	BatchSize     int           // events per POST; default 100
	FlushInterval time.Duration // longest an event waits for its batch; default 1 s
	Buffer        int           // events queued before Record blocks; default 10,000
	Attempts      int           // tries per batch; default 4
	Logger        zerolog.Logger
}

// HTTPAuditor sends events to the Logging Service
// (services.loggingService.url) in batches: POST {url} with
// {"events": [AuditEvent...]} and any 2xx as acceptance; 5xx, 429 and
// connection errors are retried with backoff. Record only queues (it blocks
// when the queue is full, so a slow Logging Service slows writes down rather
// than losing their trail); Close flushes.
type HTTPAuditor struct {
	url    string
	opts   HTTPAuditorOptions
	log    zerolog.Logger
	queue  chan AuditEvent
	flush  chan chan struct{}
	done   chan struct{}
	closed sync.Once
	wg     sync.WaitGroup
}

// NewHTTPAuditor starts the sender; call Close to flush and stop it.
func NewHTTPAuditor(url string, opts HTTPAuditorOptions) (*HTTPAuditor, error) {
	if url == "" {
		return nil, errors.New("syncrun: NewHTTPAuditor needs the Logging Service URL")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: opts.Timeout}
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 100
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = time.Second
	}
	if opts.Buffer <= 0 {
		opts.Buffer = 10_000
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 4
	}
	a := &HTTPAuditor{url: url, opts: opts, log: opts.Logger.With().Str("component", "audit").Logger(),
		queue: make(chan AuditEvent, opts.Buffer), flush: make(chan chan struct{}), done: make(chan struct{})}
	a.wg.Add(1)
	go a.loop()
	return a, nil
}

// Record queues ev.
func (a *HTTPAuditor) Record(ctx context.Context, ev AuditEvent) error {
	if ev.Actor == "" {
		ev.Actor = Role
	}
	select {
	case <-a.done:
		return errors.New("audit: the auditor is closed")
	default:
	}
	select {
	case a.queue <- ev:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("audit: queue full: %w", ctx.Err())
	case <-a.done:
		return errors.New("audit: the auditor is closed")
	}
}

// Flush sends every queued event now.
func (a *HTTPAuditor) Flush(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case a.flush <- ack:
	case <-ctx.Done():
		return ctx.Err()
	case <-a.done:
		return nil
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close sends what is queued and stops.
func (a *HTTPAuditor) Close() error {
	a.closed.Do(func() { close(a.done) })
	a.wg.Wait()
	return nil
}

func (a *HTTPAuditor) loop() {
	defer a.wg.Done()
	t := time.NewTicker(a.opts.FlushInterval)
	defer t.Stop()
	batch := make([]AuditEvent, 0, a.opts.BatchSize)
	send := func() {
		if len(batch) > 0 {
			a.post(batch)
			batch = batch[:0]
		}
	}
	drain := func() {
		for {
			select {
			case ev := <-a.queue:
				batch = append(batch, ev)
				if len(batch) >= a.opts.BatchSize {
					send()
				}
			default:
				send()
				return
			}
		}
	}
	for {
		select {
		case ev := <-a.queue:
			batch = append(batch, ev)
			if len(batch) >= a.opts.BatchSize {
				send()
			}
		case <-t.C:
			send()
		case ack := <-a.flush:
			drain()
			close(ack)
		case <-a.done:
			drain()
			return
		}
	}
}

func (a *HTTPAuditor) post(events []AuditEvent) {
	body, err := json.Marshal(struct {
		Events []AuditEvent `json:"events"`
	}{events})
	if err != nil {
		a.log.Error().Err(err).Int("events", len(events)).Msg("audit batch cannot be encoded; dropped")
		return
	}
	bo := backoff.NewExponentialBackOff(backoff.WithInitialInterval(200*time.Millisecond), backoff.WithMaxInterval(5*time.Second), backoff.WithMaxElapsedTime(0))
	for attempt := 1; ; attempt++ {
		err := a.postOnce(body)
		if err == nil {
			return
		}
		var pe *permanentAuditError
		if errors.As(err, &pe) || attempt >= a.opts.Attempts {
			a.log.Error().Err(err).Int("events", len(events)).Int("attempts", attempt).Msg("audit events could not be delivered to the Logging Service; dropped")
			return
		}
		time.Sleep(bo.NextBackOff())
	}
}

type permanentAuditError struct{ status int }

func (e *permanentAuditError) Error() string {
	return fmt.Sprintf("the Logging Service refused the batch with HTTP %d", e.status)
}

func (a *HTTPAuditor) postOnce(body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), a.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.url, bytes.NewReader(body))
	if err != nil {
		return &permanentAuditError{}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.opts.Client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout:
		return fmt.Errorf("the Logging Service answered HTTP %d", resp.StatusCode)
	default:
		return &permanentAuditError{status: resp.StatusCode}
	}
}
