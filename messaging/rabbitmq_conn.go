package messaging

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"
)

// Why our own connection handling instead of watermill-amqp's ConnectionWrapper: in
// v3.0.2 its reconnect writes ConnectionWrapper.connected while publishers and
// subscribers read it without synchronisation (a data race on every broker restart,
// ThreeDotsLabs/watermill#693), and its channel pool loses a slot each time reopening a
// channel fails during a reconnect, until Publish blocks forever
// (ThreeDotsLabs/watermill-amqp#37). Topology, marshaling and configuration stay
// watermill-amqp's; only the connection and channel lifecycle is here.

// ErrNotConnected is returned while the broker connection is down. It is transient:
// the connection is being re-established in the background.
var ErrNotConnected = errors.New("not connected to RabbitMQ")

// ErrClosed is returned by a transport, publisher or subscriber after Close.
var ErrClosed = errors.New("messaging transport closed")

// ErrBacklogFull: the in-process broker holds as many unacked messages as it may
// (broker.gochannel.maxBacklog); the publish can be tried again once consumers catch up.
var ErrBacklogFull = errors.New("in-process message backlog full")

// connection keeps one AMQP connection open, redialling with backoff (without giving
// up) after it drops. setup runs on every new connection before anyone may use it.
type connection struct {
	name  string
	url   string
	amqp  amqp.Config
	setup func(*amqp.Connection) error
	cfg   Config
	log   zerolog.Logger

	mu    sync.Mutex
	conn  *amqp.Connection // nil while disconnected
	ready chan struct{}    // closed while conn is set; replaced when it is lost

	closing   chan struct{}
	closeOnce sync.Once
	done      chan struct{} // closed when the watch goroutine has exited
}

// dialConnection makes the first connection, retrying with backoff until ctx ends.
// Errors that only an operator can fix (wrong credentials, a conflicting exchange
// declaration) are returned at once instead.
func dialConnection(ctx context.Context, name string, cfg Config, setup func(*amqp.Connection) error, log zerolog.Logger) (*connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(cfg.ConnectionName + " " + name)
	c := &connection{
		name:    name,
		url:     cfg.URL,
		amqp:    amqp.Config{Properties: props, Heartbeat: 10 * time.Second, Locale: "en_US", Dial: amqp.DefaultDial(5 * time.Second)},
		setup:   setup,
		cfg:     cfg,
		log:     log.With().Str("connection", name).Logger(),
		ready:   make(chan struct{}),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	conn, err := c.dialRetry(ctx, true)
	if err != nil {
		return nil, err
	}
	c.set(conn)
	go c.watch(conn)
	return c, nil
}

func (c *connection) set(conn *amqp.Connection) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = conn
	close(c.ready)
}

// current returns the open connection, or nil while disconnected.
func (c *connection) current() *amqp.Connection {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil || c.conn.IsClosed() {
		return nil
	}
	return c.conn
}

// wait blocks until a connection is open, ctx ends or the connection is closed for good.
func (c *connection) wait(ctx context.Context) (*amqp.Connection, error) {
	for {
		c.mu.Lock()
		conn, ready := c.conn, c.ready
		c.mu.Unlock()
		if conn != nil && !conn.IsClosed() {
			return conn, nil
		}
		// A closed conn that watch has not replaced yet leaves ready closed: poll briefly.
		var poll <-chan time.Time
		if conn != nil {
			poll = time.After(20 * time.Millisecond)
		}
		select {
		case <-ready:
		case <-poll:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.closing:
			return nil, ErrClosed
		}
	}
}

// watch replaces the connection whenever the broker drops it.
func (c *connection) watch(conn *amqp.Connection) {
	defer close(c.done)
	for {
		// Registered on a connection that is already closed, the channel is closed at once.
		lost := conn.NotifyClose(make(chan *amqp.Error, 1))
		select {
		case <-c.closing:
			return
		case reason := <-lost:
			c.mu.Lock()
			c.conn = nil
			c.ready = make(chan struct{})
			c.mu.Unlock()
			c.log.Warn().Str("reason", closeReason(reason)).Msg("RabbitMQ connection lost; reconnecting")

			next, err := c.dialRetry(context.Background(), false)
			if err != nil {
				return // closing
			}
			c.set(next)
			conn = next
			c.log.Info().Msg("RabbitMQ connection re-established")
		}
	}
}

// dialRetry dials until it succeeds, ctx ends or the connection is closed.
func (c *connection) dialRetry(ctx context.Context, first bool) (*amqp.Connection, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = c.cfg.ReconnectInitial
	b.MaxInterval = c.cfg.ReconnectMax
	b.MaxElapsedTime = 0 // never give up; only Close or ctx stop us
	b.Reset()
	for attempt := 1; ; attempt++ {
		conn, err := c.dialOnce()
		if err == nil {
			return conn, nil
		}
		if first && needsOperator(err) {
			return nil, fmt.Errorf("connect to RabbitMQ (%s): %w", c.name, err)
		}
		wait := b.NextBackOff()
		c.log.Warn().Err(err).Int("attempt", attempt).Dur("retryIn", wait).Msg("cannot connect to RabbitMQ; retrying")
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return nil, fmt.Errorf("connect to RabbitMQ (%s), last error %v: %w", c.name, err, ctx.Err())
		case <-c.closing:
			timer.Stop()
			return nil, ErrClosed
		}
	}
}

func (c *connection) dialOnce() (*amqp.Connection, error) {
	conn, err := amqp.DialConfig(c.url, c.amqp)
	if err != nil {
		return nil, err
	}
	if c.setup != nil {
		if err := c.setup(conn); err != nil {
			_ = conn.Close()
			return nil, err
		}
	}
	return conn, nil
}

// Close stops reconnecting and closes the connection.
func (c *connection) Close() error {
	c.closeOnce.Do(func() { close(c.closing) })
	<-c.done
	c.mu.Lock()
	conn := c.conn
	c.conn = nil
	c.mu.Unlock()
	if conn == nil || conn.IsClosed() {
		return nil
	}
	return conn.Close()
}

// needsOperator tells errors that retrying cannot fix from a broker that is away.
func needsOperator(err error) bool {
	var aerr *amqp.Error
	if !errors.As(err, &aerr) {
		return false
	}
	switch aerr.Code {
	case amqp.AccessRefused, amqp.PreconditionFailed, amqp.NotAllowed:
		return true
	}
	return false
}

func closeReason(err *amqp.Error) string {
	if err == nil {
		return "closed"
	}
	return err.Error()
}
